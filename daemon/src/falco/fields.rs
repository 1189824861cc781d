//! The one Falco view of an attributed event: [`RuleEvent`]'s [`EventFields`] implementation
//! maps an event to Falco's field names and values, and it alone decides them. Rule matching
//! reads it field by field (cheap: values borrow from the event where they can); alert
//! `output_fields` and `--print-events` render the same answers, field by field, from the list
//! [`SUPPLIED_FIELDS`] (see [`crate::falco::output`]), so that what a rule saw is what an alert
//! says.
//!
//! Values are borrowed from the event, the process table and the workload where possible;
//! the process ancestry (`proc.aname[N]`, `proc.pname`, …) comes from the user-space process
//! table, which exec/fork/exit events keep current.
//!
//! Values whose meaning Falco fixes and where habitd once disagreed with itself:
//! - `proc.name`: the process table's name: the kernel's comm, or the busybox applet's name when
//!   the program ran through an alias (see [`crate::process::table::process_name`]);
//! - `proc.exe`: argv\[0\], as the process was invoked; `proc.exepath`: the executable's full path;
//! - `proc.cmdline`: `proc.name` followed by the arguments (argv\[1..\]);
//! - `fd.name` of a connection: `client_ip:port->server_ip:port`; a `connect` does not tell
//!   habitd its local end, so it is `->server_ip:port`; a bound or listening socket is its
//!   `ip:port`; a file is its absolute path;
//! - file changes (rename, unlink, link, symlink, truncate, chown, utimensat): `fd.name` is the
//!   file changed — the new name of a rename or link, the new link of a symlink, else the
//!   file — and the arguments have Falco's names for each syscall: `evt.arg.oldpath` and
//!   `evt.arg.newpath` (rename, link), `evt.arg.target` (as given) and `evt.arg.linkpath`
//!   (symlink), `evt.arg.path` (unlink, rmdir, truncate, chown), `evt.arg.name` (unlinkat),
//!   `evt.arg.pathname` (fchownat), `evt.arg.uid`/`evt.arg.gid` (chown), `evt.arg.flags`.
//!   Paths are absolute where the kernel or /proc could resolve them.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::OnceLock;

use habit_models::rules::{EventFields, Field, FieldArg, FieldRef, Value};
use habit_probes::errno_names::falco_res;
use habit_probes::{EventBody, FileOp, PrivOp};

use crate::falco::output::Attributed;
use crate::process::table::{ProcInfo, ProcTable};

/// Every field habitd supplies, in Falco's spelling and in the order `output_fields` lists
/// them: rules may read these (and the indexed forms of `proc.aname`, `proc.aexepath`,
/// `proc.acmdline`, and `container.label[KEY]`), and alerts and printed events carry each of
/// them that the event has. A field not listed is never answered by [`RuleEvent`].
pub const SUPPLIED_FIELDS: &[&str] = &[
    "evt.type",
    "evt.dir",
    "evt.source",
    "evt.rawtime",
    "evt.res",
    "evt.rawres",
    "evt.failed",
    "syscall.type",
    "evt.arg.flags",
    "evt.arg.mode",
    "evt.arg.name",
    "evt.arg.filename",
    "evt.arg.path",
    "evt.arg.status",
    "evt.arg.child_pid",
    "evt.arg.pid",
    "evt.arg.request",
    "evt.arg.domain",
    "evt.arg.type",
    "evt.arg.proto",
    "evt.arg.dir",
    "evt.arg.uid",
    "evt.arg.ruid",
    "evt.arg.euid",
    "evt.arg.suid",
    "evt.arg.gid",
    "evt.arg.rgid",
    "evt.arg.egid",
    "evt.arg.sgid",
    "evt.arg.nstype",
    "evt.arg.cmd",
    "evt.arg.fd",
    "evt.arg.oldpath",
    "evt.arg.newpath",
    "evt.arg.target",
    "evt.arg.linkpath",
    "evt.arg.pathname",
    "evt.is_open_read",
    "evt.is_open_write",
    "evt.is_open_create",
    "proc.pid",
    "proc.ppid",
    "thread.tid",
    "proc.name",
    "proc.exe",
    "proc.exepath",
    "proc.cmdline",
    "proc.args",
    "proc.pname",
    "proc.pexe",
    "proc.pexepath",
    "proc.pcmdline",
    "proc.aname",
    "proc.aexepath",
    "proc.acmdline",
    "proc.is_exe_upper_layer",
    "proc.is_exe_from_memfd",
    "proc.tty",
    "thread.cap_effective",
    "user.uid",
    "user.name",
    "group.gid",
    "fd.num",
    "fd.name",
    "fd.nameraw",
    "fd.directory",
    "fd.filename",
    "fd.type",
    "fd.typechar",
    "fd.sockfamily",
    "fd.l4proto",
    "fd.ip",
    "fd.net",
    "fd.port",
    "fd.sip",
    "fd.snet",
    "fd.sport",
    "fd.cip",
    "fd.cnet",
    "fd.cport",
    "fd.rip",
    "fd.rnet",
    "fd.rport",
    "fd.lip",
    "fd.lnet",
    "fd.lport",
    "container.id",
    "container.full_id",
    "container.name",
    "container.image",
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.labels",
];

/// [`SUPPLIED_FIELDS`] resolved once: (Falco spelling, field and argument).
pub fn supplied() -> &'static [(&'static str, FieldRef)] {
    static SUPPLIED: OnceLock<Vec<(&'static str, FieldRef)>> = OnceLock::new();
    SUPPLIED.get_or_init(|| {
        SUPPLIED_FIELDS
            .iter()
            .filter_map(|name| FieldRef::parse(name).ok().map(|f| (*name, f)))
            .collect()
    })
}

/// How many ancestors `proc.aname` and friends look at (Falco's rules use up to 7).
const MAX_ANCESTORS: usize = 8;

/// An attributed event seen through Falco's field names.
pub struct RuleEvent<'a> {
    pub attributed: &'a Attributed<'a>,
    pub procs: &'a ProcTable,
    /// The executed file was written by this container after it started (exec events).
    pub exe_written_by_container: bool,
}

fn s(v: &str) -> Option<Value<'_>> {
    Some(Value::Str(Cow::Borrowed(v)))
}

fn owned(v: String) -> Option<Value<'static>> {
    Some(Value::Str(Cow::Owned(v)))
}

fn num(v: impl Into<i64>) -> Option<Value<'static>> {
    Some(Value::Num(v.into()))
}

/// An open's flags as Falco renders `evt.arg.flags`: the names joined by `|`, in Falco's order
/// (`O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC`), so that rules such as "Clear Log Activities"
/// (`evt.arg.flags contains "O_TRUNC"`) match; `evt.rawarg.flags` is the number.
pub(crate) fn open_flags_text(flags: u32) -> String {
    const NAMES: [(u32, &str); 13] = [
        (0o100000, "O_LARGEFILE"),
        (0o200000, "O_DIRECTORY"),
        (0o40000, "O_DIRECT"),
        (0o1000, "O_TRUNC"),
        (0o4010000, "O_SYNC"),
        (0o4000, "O_NONBLOCK"),
        (0o200, "O_EXCL"),
        (0o10000, "O_DSYNC"),
        (0o2000, "O_APPEND"),
        (0o100, "O_CREAT"),
        (0o2, "O_RDWR"),
        (0o1, "O_WRONLY"),
        (0o2000000, "O_CLOEXEC"),
    ];
    let mut parts: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, name)| match *name {
            // O_SYNC includes O_DSYNC's bit: name it only when all of its bits are set.
            "O_SYNC" => flags & bit == *bit,
            "O_DSYNC" => flags & 0o4000000 == 0 && flags & bit != 0,
            _ => flags & bit != 0,
        })
        .map(|(_, name)| *name)
        .collect();
    if flags & 3 == 0 {
        let at = parts
            .iter()
            .position(|p| *p == "O_CLOEXEC")
            .unwrap_or(parts.len());
        parts.insert(at, "O_RDONLY");
    }
    parts.join("|")
}

/// Text that is absent when empty (an executable path the process table does not know).
fn nonempty(v: &str) -> Option<Value<'_>> {
    (!v.is_empty()).then_some(Value::Str(Cow::Borrowed(v)))
}

/// Falco's `proc.exe`: argv[0] as the process was invoked, else the executable's path.
fn invoked_as(p: &ProcInfo) -> Option<Value<'_>> {
    match p.args.first() {
        Some(a0) => s(a0),
        None => nonempty(&p.exe),
    }
}

/// Falco's `proc.cmdline`: the process name followed by its arguments (argv[1..]).
pub fn cmdline(name: &str, args: &[String]) -> String {
    let len = name.len() + args.iter().skip(1).map(|a| a.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push_str(name);
    for a in args.iter().skip(1) {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Falco's name of a ptrace request.
fn ptrace_request(request: u64) -> Cow<'static, str> {
    Cow::Borrowed(match request {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSR",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSR",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        other => return Cow::Owned(other.to_string()),
    })
}

/// Capability names by bit (linux/capability.h), for `thread.cap_effective`.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Falco's rendering of a capability set: names separated by spaces.
pub fn capability_names(set: u64) -> String {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| set & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(" ")
}

impl<'a> RuleEvent<'a> {
    fn process(&self) -> Option<&'a ProcInfo> {
        self.attributed.process
    }

    /// The chain of processes from the event's process (index 0) upwards.
    fn ancestors(&self) -> Vec<&'a ProcInfo> {
        let mut chain = Vec::with_capacity(MAX_ANCESTORS);
        let Some(me) = self.process() else {
            return chain;
        };
        chain.push(me);
        let mut ppid = self.attributed.event.header.ppid;
        while chain.len() < MAX_ANCESTORS && ppid > 1 {
            let Some(p) = self.procs.get(ppid) else { break };
            chain.push(p);
            ppid = p.ppid;
        }
        chain
    }

    fn ancestor_values(
        &self,
        arg: Option<&FieldArg>,
        value: impl Fn(&'a ProcInfo) -> Option<Value<'a>>,
    ) -> Option<Value<'a>> {
        let chain = self.ancestors();
        match arg {
            Some(FieldArg::Index(i)) => chain.get(*i as usize).and_then(|p| value(p)),
            // Without an index: every ancestor, parent first (none: the field is absent).
            _ => {
                let values: Vec<Value<'a>> =
                    chain.iter().skip(1).filter_map(|p| value(p)).collect();
                (!values.is_empty()).then_some(Value::List(values))
            }
        }
    }

    fn body(&self) -> &'a EventBody {
        &self.attributed.event.body
    }

    /// (local, remote) endpoints of a network event; client/server follow from the direction.
    fn endpoints(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        match self.body() {
            EventBody::Connect { remote, .. } => (None, Some(*remote)),
            EventBody::Accept { local, remote } | EventBody::Dup { local, remote, .. } => {
                (Some(*local), Some(*remote))
            }
            EventBody::Bind { local, .. } | EventBody::Listen { local } => (Some(*local), None),
            _ => (None, None),
        }
    }

    /// (client, server) of a connection.
    fn client_server(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let (local, remote) = self.endpoints();
        match self.body() {
            // A duplicated socket: taken as the process's own connection (a reverse shell's).
            EventBody::Connect { .. } | EventBody::Dup { .. } => (local, remote),
            EventBody::Accept { .. } => (remote, local),
            _ => (None, local),
        }
    }

    /// The file an open, chmod or file change is about (for a rename or link, its new name;
    /// for a symlink, the new link).
    fn path(&self) -> Option<&'a str> {
        match self.body() {
            EventBody::Open { path, .. } | EventBody::Chmod { path, .. } => {
                Some(self.attributed.path.unwrap_or(path))
            }
            EventBody::FileChange(c) if c.op.has_two_paths() => {
                Some(self.attributed.path2.unwrap_or(&c.path2))
            }
            EventBody::FileChange(c) => Some(self.attributed.path.unwrap_or(&c.path)),
            _ => None,
        }
    }

    /// Falco's argument names of a file change.
    fn change_arg(&self, name: &str) -> Option<Value<'a>> {
        let EventBody::FileChange(c) = self.body() else {
            return None;
        };
        let first = || self.attributed.path.unwrap_or(&c.path);
        let second = || self.attributed.path2.unwrap_or(&c.path2);
        let syscall = c.syscall_name();
        match (c.op, name) {
            (FileOp::Rename | FileOp::Link, "oldpath") => s(first()),
            (FileOp::Rename | FileOp::Link, "newpath") => s(second()),
            (FileOp::Symlink, "target") => s(&c.path),
            (FileOp::Symlink, "linkpath") => s(second()),
            (FileOp::Unlink | FileOp::Rmdir, "name") if syscall == "unlinkat" => s(first()),
            (FileOp::Chown, "pathname") if syscall == "fchownat" => s(first()),
            (FileOp::Unlink | FileOp::Rmdir | FileOp::Truncate | FileOp::Chown, "path")
                if !matches!(syscall, "unlinkat" | "fchownat" | "fchown" | "ftruncate") =>
            {
                s(first())
            }
            (FileOp::Utimes, "path" | "pathname") if !c.path.is_empty() => s(first()),
            (FileOp::Chown, "uid") => c.uid().and_then(num),
            (FileOp::Chown, "gid") => c.gid().and_then(num),
            (FileOp::Chown, "fd") if syscall == "fchown" => num(c.dirfd),
            (FileOp::Truncate, "fd") if syscall == "ftruncate" => num(c.dirfd),
            (FileOp::Rename | FileOp::Link | FileOp::Unlink | FileOp::Rmdir, "flags")
                if syscall.ends_with("at") || syscall == "renameat2" =>
            {
                num(c.arg as i64)
            }
            _ => None,
        }
    }

    fn arg(&self, name: &str) -> Option<Value<'a>> {
        match (self.body(), name) {
            (EventBody::FileChange(_), name) => self.change_arg(name),
            (EventBody::Open { flags, .. }, "flags") => owned(open_flags_text(*flags)),
            (EventBody::Open { mode, .. }, "mode") | (EventBody::Chmod { mode, .. }, "mode") => {
                owned(format!("{mode:o}"))
            }
            (EventBody::Open { .. } | EventBody::Chmod { .. }, "name" | "filename" | "path") => {
                self.path().and_then(s)
            }
            (EventBody::Exit { status }, "status") => num(*status),
            (EventBody::Fork { child_pid }, "child_pid" | "pid") => num(*child_pid),
            (EventBody::Privileged(op), name) => match (op, name) {
                (PrivOp::Ptrace { request, .. }, "request") => {
                    Some(Value::Str(ptrace_request(*request)))
                }
                (PrivOp::Ptrace { target_pid, .. }, "pid") => num(*target_pid),
                (PrivOp::PacketSocket { .. }, "domain") => s("AF_PACKET"),
                (PrivOp::PacketSocket { sock_type, .. }, "type") => num(*sock_type as i64),
                (PrivOp::PacketSocket { protocol, .. }, "proto") => num(*protocol as i64),
                (PrivOp::Mount { target, .. }, "dir") => s(target),
                (PrivOp::Mount { flags, .. }, "flags") => num(*flags as i64),
                (PrivOp::Umount { target }, "name") => s(target),
                (PrivOp::MemfdCreate { name }, "name") => s(name),
                (PrivOp::SetUid { euid, .. }, "uid" | "euid") => num(*euid),
                (PrivOp::SetUid { ruid, .. }, "ruid") => num(*ruid),
                (PrivOp::SetUid { suid, .. }, "suid") => num(*suid),
                (PrivOp::SetGid { egid, .. }, "gid" | "egid") => num(*egid),
                (PrivOp::SetGid { rgid, .. }, "rgid") => num(*rgid),
                (PrivOp::SetGid { sgid, .. }, "sgid") => num(*sgid),
                (PrivOp::FinitModule { fd }, "fd") => num(*fd),
                (PrivOp::Unshare { flags }, "flags") => num(*flags as i64),
                (PrivOp::Setns { nstype }, "nstype") => num(*nstype as i64),
                (PrivOp::Bpf { cmd }, "cmd") => num(*cmd as i64),
                _ => None,
            },
            _ => None,
        }
    }
}

impl EventFields for RuleEvent<'_> {
    fn get(&self, field: Field, arg: Option<&FieldArg>) -> Option<Value<'_>> {
        let a = self.attributed;
        let h = &a.event.header;
        let w = a.workload;
        let container = w.container.as_ref();
        match field {
            Field::EvtType | Field::SyscallType => s(a.event.body.evt_type()),
            Field::EvtDir => s("<"),
            Field::EvtSource => s("syscall"),
            Field::EvtRawtime => num(a
                .time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)),
            Field::EvtArg => match arg {
                Some(FieldArg::Key(name)) => self.arg(name),
                _ => None,
            },
            Field::EvtRawarg => match (self.body(), arg) {
                (EventBody::Open { flags, .. }, Some(FieldArg::Key(name)))
                    if &**name == "flags" =>
                {
                    num(*flags)
                }
                (_, Some(FieldArg::Key(name))) => self.arg(name),
                _ => None,
            },
            // Results are reported where a rule reads them (opens, connect, bind: seen at
            // syscall exit); other events have none, and the fields are absent.
            Field::EvtRes => a.event.body.result().and_then(|r| owned(falco_res(r))),
            Field::EvtRawres => a.event.body.result().and_then(num),
            Field::EvtFailed => a.event.body.result().map(|r| Value::Bool(r < 0)),
            Field::EvtIsOpenRead => match self.body() {
                EventBody::Open { flags, .. } => Some(Value::Bool(flags & 3 != 1)),
                _ => None,
            },
            Field::EvtIsOpenWrite => match self.body() {
                EventBody::Open { flags, .. } => Some(Value::Bool(flags & 3 != 0)),
                _ => None,
            },
            Field::EvtIsOpenCreate => match self.body() {
                EventBody::Open { flags, .. } => Some(Value::Bool(flags & 0o100 != 0)),
                _ => None,
            },
            Field::ProcPid => num(h.tgid),
            Field::ThreadTid => num(h.pid),
            Field::ProcPpid => num(h.ppid),
            Field::ProcName => self.process().map_or_else(|| s(&h.comm), |p| s(&p.comm)),
            Field::ProcExe => self.process().and_then(invoked_as),
            Field::ProcExepath => match (self.body(), a.path) {
                (EventBody::Exec { .. }, Some(path)) => s(path),
                _ => self.process().and_then(|p| nonempty(&p.exe)),
            },
            Field::ProcCmdline => self
                .process()
                .and_then(|p| owned(cmdline(&p.comm, &p.args))),
            Field::ProcArgs => self
                .process()
                .and_then(|p| owned(p.args.get(1..).unwrap_or_default().join(" "))),
            Field::ProcPname => self.procs.get(h.ppid).and_then(|p| s(&p.comm)),
            Field::ProcPexe => self.procs.get(h.ppid).and_then(|p| invoked_as(p)),
            Field::ProcPexepath => self.procs.get(h.ppid).and_then(|p| nonempty(&p.exe)),
            Field::ProcPcmdline => self
                .procs
                .get(h.ppid)
                .and_then(|p| owned(cmdline(&p.comm, &p.args))),
            Field::ProcAname => self.ancestor_values(arg, |p| s(&p.comm)),
            Field::ProcAexepath => self.ancestor_values(arg, |p| nonempty(&p.exe)),
            Field::ProcAcmdline => self.ancestor_values(arg, |p| owned(cmdline(&p.comm, &p.args))),
            Field::ProcIsExeUpperLayer => match self.body() {
                EventBody::Exec { .. } => Some(Value::Bool(self.exe_written_by_container)),
                _ => None,
            },
            Field::ProcIsExeFromMemfd => match self.body() {
                EventBody::Exec { filename, .. } => Some(Value::Bool(
                    filename.starts_with("/memfd:")
                        || a.path.is_some_and(|p| p.starts_with("/memfd:")),
                )),
                _ => None,
            },
            Field::ProcTty => self.process().and_then(|p| num(p.tty)),
            Field::ThreadCapEffective => self
                .process()
                .and_then(|p| owned(capability_names(p.cap_effective))),
            Field::UserUid => num(h.uid),
            Field::GroupGid => num(h.gid),
            Field::UserName => match h.uid {
                0 => s("root"),
                _ => None,
            },
            Field::FdName => match self.body() {
                EventBody::Open { .. } | EventBody::Chmod { .. } | EventBody::FileChange(_) => {
                    self.path().and_then(s)
                }
                // A connection: client->server, the client of a connect unknown.
                EventBody::Connect { remote, .. } => {
                    owned(format!("->{}:{}", remote.ip(), remote.port()))
                }
                EventBody::Dup { local, remote, .. } => owned(format!(
                    "{}:{}->{}:{}",
                    local.ip(),
                    local.port(),
                    remote.ip(),
                    remote.port()
                )),
                EventBody::Accept { local, remote } => owned(format!(
                    "{}:{}->{}:{}",
                    remote.ip(),
                    remote.port(),
                    local.ip(),
                    local.port()
                )),
                // A socket not connected: its own address.
                EventBody::Bind { local, .. } | EventBody::Listen { local } => {
                    owned(format!("{}:{}", local.ip(), local.port()))
                }
                _ => None,
            },
            // The path as the process passed it (fd.name is absolute and without `..`).
            Field::FdNameraw => match self.body() {
                EventBody::Open { path, .. } | EventBody::Chmod { path, .. } => nonempty(path),
                _ => None,
            },
            // The new descriptor of an open, -1 when it failed (as Falco gives it).
            Field::FdNum => match self.body() {
                EventBody::Open { result, .. } => num((*result).max(-1)),
                _ => None,
            },
            Field::FdDirectory => self.path().map(|p| match p.rfind('/') {
                Some(0) => Value::Str(Cow::Borrowed("/")),
                Some(i) => Value::Str(Cow::Borrowed(&p[..i])),
                None => Value::Str(Cow::Borrowed(".")),
            }),
            Field::FdFilename => self
                .path()
                .map(|p| Value::Str(Cow::Borrowed(p.rsplit('/').next().unwrap_or(p)))),
            Field::FdTypechar | Field::FdType => {
                let (kind, ch) = match self.body() {
                    EventBody::Open { .. } | EventBody::Chmod { .. } => ("file", "f"),
                    EventBody::FileChange(c) if c.op == FileOp::Rmdir => ("directory", "d"),
                    EventBody::FileChange(_) => ("file", "f"),
                    _ => match self.endpoints() {
                        (Some(x), _) | (None, Some(x)) if x.is_ipv4() => ("ipv4", "4"),
                        (Some(_), _) | (None, Some(_)) => ("ipv6", "6"),
                        _ => return None,
                    },
                };
                s(if field == Field::FdType { kind } else { ch })
            }
            // Either end of a connection (Falco: "matches either"): the ends habitd knows, a
            // set when both are (an accepted connection).
            Field::FdIp | Field::FdNet | Field::FdPort => {
                let (client, server) = self.client_server();
                let one = |x: SocketAddr| match field {
                    Field::FdPort => Value::Num(x.port().into()),
                    _ => Value::Ip(x.ip()),
                };
                match (client, server) {
                    (Some(c), Some(s)) => Some(Value::List(vec![one(c), one(s)])),
                    (Some(x), None) | (None, Some(x)) => Some(one(x)),
                    (None, None) => None,
                }
            }
            Field::FdSip | Field::FdSnet => self.client_server().1.map(|x| Value::Ip(x.ip())),
            Field::FdSport => self.client_server().1.and_then(|x| num(x.port())),
            Field::FdCip | Field::FdCnet => self.client_server().0.map(|x| Value::Ip(x.ip())),
            Field::FdCport => self.client_server().0.and_then(|x| num(x.port())),
            Field::FdRip | Field::FdRnet => self.endpoints().1.map(|x| Value::Ip(x.ip())),
            Field::FdRport => self.endpoints().1.and_then(|x| num(x.port())),
            Field::FdLip | Field::FdLnet => self.endpoints().0.map(|x| Value::Ip(x.ip())),
            Field::FdLport => self.endpoints().0.and_then(|x| num(x.port())),
            Field::FdL4proto => match self.body() {
                EventBody::Connect { protocol, .. }
                | EventBody::Bind { protocol, .. }
                | EventBody::Dup { protocol, .. } => s(protocol.as_str()),
                EventBody::Accept { .. } | EventBody::Listen { .. } => s("tcp"),
                _ => None,
            },
            Field::FdSockfamily => match self.endpoints() {
                (None, None) => None,
                _ => s("ip"),
            },
            Field::ContainerId => s(w
                .container_id
                .as_deref()
                .map_or("host", |id| &id[..id.len().min(12)])),
            Field::ContainerFullId => w.container_id.as_deref().and_then(s),
            Field::ContainerName => container.and_then(|c| s(&c.name)),
            Field::ContainerImage => container.and_then(|c| s(&c.image)),
            Field::ContainerImageRepository => container.and_then(|c| s(&c.image_ref.repository)),
            Field::ContainerImageTag => {
                container.and_then(|c| c.image_ref.tag.as_deref().and_then(s))
            }
            Field::ContainerImageDigest => {
                container.and_then(|c| c.image_digest.as_deref().and_then(s))
            }
            Field::ContainerLabel => match (container, arg) {
                (Some(c), Some(FieldArg::Key(k))) => c.labels.get(&**k).and_then(|v| s(v)),
                _ => None,
            },
            Field::K8sNsName => container.and_then(|c| c.k8s_namespace.as_deref().and_then(s)),
            Field::K8sPodName => container.and_then(|c| c.k8s_pod.as_deref().and_then(s)),
            Field::K8sPodUid => container.and_then(|c| c.k8s_pod_uid.as_deref().and_then(s)),
            Field::K8sPodLabel => match (container, arg) {
                (Some(c), Some(FieldArg::Key(k))) => c.k8s_pod_labels.get(&**k).and_then(|v| s(v)),
                _ => None,
            },
            // As Falco prints a set: `(app:web,tier:front)`.
            Field::K8sPodLabels => container.filter(|c| !c.k8s_pod_labels.is_empty()).map(|c| {
                Value::List(
                    c.k8s_pod_labels
                        .iter()
                        .map(|(k, v)| Value::Str(Cow::Owned(format!("{k}:{v}"))))
                        .collect(),
                )
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_open_flags_as_falco_does() {
        use super::open_flags_text;
        assert_eq!(open_flags_text(0), "O_RDONLY");
        assert_eq!(open_flags_text(0o2000000), "O_RDONLY|O_CLOEXEC");
        assert_eq!(
            open_flags_text(0o1 | 0o100 | 0o1000 | 0o2000000),
            "O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC"
        );
        assert_eq!(open_flags_text(0o2 | 0o2000), "O_APPEND|O_RDWR");
        assert_eq!(open_flags_text(0o4010001), "O_SYNC|O_WRONLY");
    }

    #[test]
    fn names_capabilities() {
        assert_eq!(super::capability_names(0), "");
        assert_eq!(
            super::capability_names((1 << 21) | 1),
            "CAP_CHOWN CAP_SYS_ADMIN"
        );
    }
}
