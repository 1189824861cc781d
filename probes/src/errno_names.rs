//! Linux errno names by number (x86_64, asm-generic/errno*.h), for syscall results as Falco
//! renders them (`evt.res`: `SUCCESS`, or the errno's name such as `ENOENT`). No dependency of
//! ours has the names (libc has the numbers only), and the table is part of the kernel's ABI.

/// The name of errno `n` (`ENOENT` for 2), or `None` for a number the kernel does not define.
/// The kernel's internal restart codes (512..=516), which a probe at syscall exit sees before
/// the kernel restarts the call, are named too.
pub fn name(n: u32) -> Option<&'static str> {
    match n {
        1..=133 => NAMES[n as usize - 1],
        512 => Some("ERESTARTSYS"),
        513 => Some("ERESTARTNOINTR"),
        514 => Some("ERESTARTNOHAND"),
        515 => Some("ENOIOCTLCMD"),
        516 => Some("ERESTART_RESTARTBLOCK"),
        _ => None,
    }
}

/// How Falco renders a syscall result as `evt.res`: `SUCCESS` for a non-negative result, the
/// errno's name for `-errno` (`E<n>` for a number without a name).
pub fn falco_res(res: i64) -> String {
    if res >= 0 {
        return "SUCCESS".to_string();
    }
    let errno = res.unsigned_abs();
    match u32::try_from(errno).ok().and_then(name) {
        Some(n) => n.to_string(),
        None => format!("E{errno}"),
    }
}

/// Numbers 1..=133; `None` for the two the kernel leaves unassigned (41, 58).
static NAMES: [Option<&str>; 133] = [
    Some("EPERM"),
    Some("ENOENT"),
    Some("ESRCH"),
    Some("EINTR"),
    Some("EIO"),
    Some("ENXIO"),
    Some("E2BIG"),
    Some("ENOEXEC"),
    Some("EBADF"),
    Some("ECHILD"),
    Some("EAGAIN"),
    Some("ENOMEM"),
    Some("EACCES"),
    Some("EFAULT"),
    Some("ENOTBLK"),
    Some("EBUSY"),
    Some("EEXIST"),
    Some("EXDEV"),
    Some("ENODEV"),
    Some("ENOTDIR"),
    Some("EISDIR"),
    Some("EINVAL"),
    Some("ENFILE"),
    Some("EMFILE"),
    Some("ENOTTY"),
    Some("ETXTBSY"),
    Some("EFBIG"),
    Some("ENOSPC"),
    Some("ESPIPE"),
    Some("EROFS"),
    Some("EMLINK"),
    Some("EPIPE"),
    Some("EDOM"),
    Some("ERANGE"),
    Some("EDEADLK"),
    Some("ENAMETOOLONG"),
    Some("ENOLCK"),
    Some("ENOSYS"),
    Some("ENOTEMPTY"),
    Some("ELOOP"),
    None,
    Some("ENOMSG"),
    Some("EIDRM"),
    Some("ECHRNG"),
    Some("EL2NSYNC"),
    Some("EL3HLT"),
    Some("EL3RST"),
    Some("ELNRNG"),
    Some("EUNATCH"),
    Some("ENOCSI"),
    Some("EL2HLT"),
    Some("EBADE"),
    Some("EBADR"),
    Some("EXFULL"),
    Some("ENOANO"),
    Some("EBADRQC"),
    Some("EBADSLT"),
    None,
    Some("EBFONT"),
    Some("ENOSTR"),
    Some("ENODATA"),
    Some("ETIME"),
    Some("ENOSR"),
    Some("ENONET"),
    Some("ENOPKG"),
    Some("EREMOTE"),
    Some("ENOLINK"),
    Some("EADV"),
    Some("ESRMNT"),
    Some("ECOMM"),
    Some("EPROTO"),
    Some("EMULTIHOP"),
    Some("EDOTDOT"),
    Some("EBADMSG"),
    Some("EOVERFLOW"),
    Some("ENOTUNIQ"),
    Some("EBADFD"),
    Some("EREMCHG"),
    Some("ELIBACC"),
    Some("ELIBBAD"),
    Some("ELIBSCN"),
    Some("ELIBMAX"),
    Some("ELIBEXEC"),
    Some("EILSEQ"),
    Some("ERESTART"),
    Some("ESTRPIPE"),
    Some("EUSERS"),
    Some("ENOTSOCK"),
    Some("EDESTADDRREQ"),
    Some("EMSGSIZE"),
    Some("EPROTOTYPE"),
    Some("ENOPROTOOPT"),
    Some("EPROTONOSUPPORT"),
    Some("ESOCKTNOSUPPORT"),
    Some("EOPNOTSUPP"),
    Some("EPFNOSUPPORT"),
    Some("EAFNOSUPPORT"),
    Some("EADDRINUSE"),
    Some("EADDRNOTAVAIL"),
    Some("ENETDOWN"),
    Some("ENETUNREACH"),
    Some("ENETRESET"),
    Some("ECONNABORTED"),
    Some("ECONNRESET"),
    Some("ENOBUFS"),
    Some("EISCONN"),
    Some("ENOTCONN"),
    Some("ESHUTDOWN"),
    Some("ETOOMANYREFS"),
    Some("ETIMEDOUT"),
    Some("ECONNREFUSED"),
    Some("EHOSTDOWN"),
    Some("EHOSTUNREACH"),
    Some("EALREADY"),
    Some("EINPROGRESS"),
    Some("ESTALE"),
    Some("EUCLEAN"),
    Some("ENOTNAM"),
    Some("ENAVAIL"),
    Some("EISNAM"),
    Some("EREMOTEIO"),
    Some("EDQUOT"),
    Some("ENOMEDIUM"),
    Some("EMEDIUMTYPE"),
    Some("ECANCELED"),
    Some("ENOKEY"),
    Some("EKEYEXPIRED"),
    Some("EKEYREVOKED"),
    Some("EKEYREJECTED"),
    Some("EOWNERDEAD"),
    Some("ENOTRECOVERABLE"),
    Some("ERFKILL"),
    Some("EHWPOISON"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_libc_numbers() {
        for (n, expected) in [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EACCES, "EACCES"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ENOMSG, "ENOMSG"),
            (libc::EBFONT, "EBFONT"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
            (libc::EINPROGRESS, "EINPROGRESS"),
            (libc::ENETUNREACH, "ENETUNREACH"),
            (libc::EHWPOISON, "EHWPOISON"),
        ] {
            assert_eq!(name(n as u32), Some(expected), "errno {n}");
        }
        assert_eq!(name(41), None);
        assert_eq!(name(0), None);
        assert_eq!(name(134), None);
    }

    #[test]
    fn falco_res_renders_success_names_and_unknown_numbers() {
        assert_eq!(falco_res(0), "SUCCESS");
        assert_eq!(falco_res(7), "SUCCESS");
        assert_eq!(falco_res(-2), "ENOENT");
        assert_eq!(falco_res(-115), "EINPROGRESS");
        assert_eq!(falco_res(-512), "ERESTARTSYS");
        assert_eq!(falco_res(-999), "E999");
    }
}
