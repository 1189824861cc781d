//! Observations: one item of behaviour, in one dimension, as the daemon saw it.
//!
//! The daemon turns kernel events into [`Observation`]s with the per-dimension constructors
//! ([`Observation::file`], [`Observation::outbound`], …) so that the text of an item is formatted
//! in exactly one place. The text is the *raw* item (a real path, a real address); profiles and
//! scorers generalise it (see [`crate::generalise`]) before learning or looking it up.
//!
//! Raw item formats (stable; generalisation parses them back):
//!
//! | dimension | raw item | example |
//! |---|---|---|
//! | `exec` | executable path | `/usr/bin/curl` |
//! | `process_edge` | parent exe ` -> ` child exe | `/bin/sh -> /usr/bin/curl` |
//! | `args` | exe, then argv\[1..\], joined by single spaces | `/usr/bin/sleep 30` |
//! | `file` | mode (`r`, `w`, `rw`), a space, the path | `rw /var/lib/app/db` |
//! | `listen` | `port/proto` | `8080/tcp` |
//! | `inbound` | peer address, peer port ` -> ` local `port/proto` | `10.0.0.5 43122 -> 8080/tcp` |
//! | `outbound` | destination address (or the workload key of the container there), a space, `port/proto` | `10.0.0.5 443/tcp`, `docker.io/shop/backend:2 8000/tcp` |
//! | `syscall` | syscall name | `openat` |
//! | `privileged` | operation, optionally a space and its target | `mount /mnt/x`, `setuid` |
//! | `file_change` | operation, a space, the path; for `rename`/`link`/`symlink` then ` -> ` and the new name | `unlink /var/log/app.log`, `rename /etc/.passwd.tmp -> /etc/passwd` |
//!
//! Every item is one line: control characters (newlines, tabs, escapes) are replaced by `?`, so
//! that an alert or a reviewed baseline file cannot be forged by a crafted file name, and raw
//! items are capped at [`MAX_RAW_BYTES`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::generalise;

/// Raw items longer than this are cut (at a character boundary). PATH_MAX is 4096 on Linux, so
/// real paths fit; this bounds what one hostile argv or path can cost.
pub const MAX_RAW_BYTES: usize = 4096;

/// At most this many arguments (after argv\[0\]) go into an `args` item; the rest is replaced
/// by one `<more>` marker, so `xargs`-style command lines stay bounded.
pub const MAX_ARGS: usize = 32;

/// The marker that stands for arguments beyond [`MAX_ARGS`].
pub const MORE_ARGS: &str = "<more>";

/// One kind of behaviour a profile learns. The serde and [`Dimension::name`] names are the
/// stable lowercase names used in baseline files and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// An executable path that was executed.
    Exec,
    /// Which executable started which: parent exe → child exe.
    ProcessEdge,
    /// An executable with the generalised shape of its arguments.
    Args,
    /// A path that was opened, with its access mode.
    File,
    /// A port the workload listens on.
    Listen,
    /// A peer that connected to the workload, and the local port it reached.
    Inbound,
    /// A destination the workload connected to.
    Outbound,
    /// A syscall the workload made.
    Syscall,
    /// A privileged operation (`setuid`, `ptrace`, `mount /x`, `memfd_create`, `bpf`,
    /// `packet_socket`, …).
    Privileged,
    /// A change to a file other than a write through an open: `rename`, `unlink`, `rmdir`,
    /// `link`, `symlink`, `truncate`, `chown`, `utimes` (an explicit timestamp set). Declared
    /// last: baselines written before it have no such key, which reads as empty.
    FileChange,
}

impl Dimension {
    /// Every dimension, in declaration order (which is also [`Dimension::index`] order).
    pub const ALL: [Dimension; 10] = [
        Dimension::Exec,
        Dimension::ProcessEdge,
        Dimension::Args,
        Dimension::File,
        Dimension::Listen,
        Dimension::Inbound,
        Dimension::Outbound,
        Dimension::Syscall,
        Dimension::Privileged,
        Dimension::FileChange,
    ];

    /// The number of dimensions; lets scorers keep per-dimension state in arrays.
    pub const COUNT: usize = Self::ALL.len();

    /// A dense index in `0..COUNT`, for per-dimension arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable lowercase name (the same as the serde name).
    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Exec => "exec",
            Dimension::ProcessEdge => "process_edge",
            Dimension::Args => "args",
            Dimension::File => "file",
            Dimension::Listen => "listen",
            Dimension::Inbound => "inbound",
            Dimension::Outbound => "outbound",
            Dimension::Syscall => "syscall",
            Dimension::Privileged => "privileged",
            Dimension::FileChange => "file_change",
        }
    }

    /// The coarse dimension alerts report in `habitd.novel[].dimension`; the fine-grained
    /// [`Dimension::name`] goes beside it so that nothing is lost.
    pub const fn alert_dimension(self) -> AlertDimension {
        match self {
            Dimension::Exec | Dimension::ProcessEdge | Dimension::Args => AlertDimension::Exec,
            Dimension::File | Dimension::FileChange => AlertDimension::File,
            Dimension::Listen | Dimension::Inbound | Dimension::Outbound => AlertDimension::Network,
            Dimension::Syscall | Dimension::Privileged => AlertDimension::Syscall,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dimension {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownName {
                kind: "dimension",
                name: s.to_owned(),
            })
    }
}

/// A name that does not parse as the enum it was meant for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} name {name:?}")]
pub struct UnknownName {
    /// What was being parsed (`dimension`, `file mode`, …).
    pub kind: &'static str,
    /// The name that was given.
    pub name: String,
}

/// The dimension names of the alert format (`habitd.novel[].dimension`). `Sequence` and `Rate`
/// are produced by the sequence and rate models, not by profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertDimension {
    /// Executions, process edges and argument shapes.
    Exec,
    /// File opens and file changes.
    File,
    /// Listening ports, inbound peers and outbound destinations.
    Network,
    /// Syscalls and privileged operations.
    Syscall,
    /// Syscall sequences (the sequence model).
    Sequence,
    /// Syscall rates (the rate model).
    Rate,
}

impl AlertDimension {
    /// The stable lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            AlertDimension::Exec => "exec",
            AlertDimension::File => "file",
            AlertDimension::Network => "network",
            AlertDimension::Syscall => "syscall",
            AlertDimension::Sequence => "sequence",
            AlertDimension::Rate => "rate",
        }
    }
}

impl fmt::Display for AlertDimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a file was opened. Part of the learned item: a workload that only ever reads
/// `/etc/passwd` and suddenly writes it is doing something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileMode {
    /// `O_RDONLY`.
    #[serde(rename = "r")]
    Read,
    /// `O_WRONLY`.
    #[serde(rename = "w")]
    Write,
    /// `O_RDWR`.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl FileMode {
    /// The mode of `open(2)` flags, from their access-mode bits (`O_ACCMODE`, Linux values).
    /// The invalid access mode 3 is treated as read-write, which is what it permits in
    /// practice (ioctl-only opens).
    pub const fn from_open_flags(flags: u32) -> Self {
        match flags & 0b11 {
            0 => FileMode::Read,
            1 => FileMode::Write,
            _ => FileMode::ReadWrite,
        }
    }

    /// `r`, `w` or `rw`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileMode::Read => "r",
            FileMode::Write => "w",
            FileMode::ReadWrite => "rw",
        }
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileMode {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "r" => Ok(FileMode::Read),
            "w" => Ok(FileMode::Write),
            "rw" => Ok(FileMode::ReadWrite),
            _ => Err(UnknownName {
                kind: "file mode",
                name: s.to_owned(),
            }),
        }
    }
}

/// A transport protocol, as in `8080/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
    /// Any other IP protocol, by number; shown as `ip<N>`.
    Other(u8),
}

impl Proto {
    /// The protocol of an IP protocol number (`IPPROTO_*`).
    pub const fn from_ip_proto(number: u8) -> Self {
        match number {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            n => Proto::Other(n),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Sctp => f.write_str("sctp"),
            Proto::Other(n) => write!(f, "ip{n}"),
        }
    }
}

impl FromStr for Proto {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => other
                .strip_prefix("ip")
                .and_then(|n| n.parse::<u8>().ok())
                .map(Proto::from_ip_proto)
                .ok_or_else(|| UnknownName {
                    kind: "protocol",
                    name: s.to_owned(),
                }),
        }
    }
}

/// One observed item of behaviour, before generalisation.
///
/// Build it with the per-dimension constructors; [`Observation::new`] exists for replaying
/// recorded items. Serialises as `{"dimension": "file", "item": "r /etc/passwd"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Which kind of behaviour this is.
    pub dimension: Dimension,
    /// The raw item, in the format of its dimension (see the module documentation).
    pub item: String,
}

impl Observation {
    /// An observation from an already formatted raw item (a replayed trace, a test).
    /// Control characters are replaced and the item is capped, as for every constructor.
    pub fn new(dimension: Dimension, item: &str) -> Self {
        let mut text = String::with_capacity(item.len().min(MAX_RAW_BYTES));
        push_clean(&mut text, item);
        Self::finish(dimension, text)
    }

    /// An executed program.
    pub fn exec(exe: &str) -> Self {
        Self::new(Dimension::Exec, exe)
    }

    /// An executed program named by its executable and argument vector: the executable, and
    /// for a multi-call binary the program `argv` selects ([`program_into`]).
    pub fn exec_of<S: AsRef<str>>(exe: &str, argv: &[S]) -> Self {
        let mut text = String::with_capacity(exe.len() + 16);
        program_into(&mut text, exe, argv);
        Self::finish(Dimension::Exec, text)
    }

    /// A process edge: `parent` executed `child`.
    pub fn process_edge(parent_exe: &str, child_exe: &str) -> Self {
        Self::process_edge_of::<&str>(parent_exe, child_exe, &[])
    }

    /// A process edge: `parent` executed `child` with `argv` (the child named as by
    /// [`Observation::exec_of`]).
    pub fn process_edge_of<S: AsRef<str>>(parent_exe: &str, child_exe: &str, argv: &[S]) -> Self {
        let mut text = String::with_capacity(parent_exe.len() + child_exe.len() + 4);
        push_clean(&mut text, parent_exe);
        text.push_str(generalise::EDGE_SEPARATOR);
        program_into(&mut text, child_exe, argv);
        Self::finish(Dimension::ProcessEdge, text)
    }

    /// An executable with its argument vector as the kernel gave it (`argv[0]` included).
    ///
    /// `argv[0]` is dropped when it names the same program as `exe` (the usual case) and kept
    /// otherwise, so that multi-call binaries (`busybox` run as `ls`) stay distinguishable.
    /// Arguments are joined by single spaces, like Falco's `proc.cmdline`: an argument that
    /// itself contains spaces is not quoted, which is lossy but deterministic.
    pub fn args<S: AsRef<str>>(exe: &str, argv: &[S]) -> Self {
        let mut text = String::with_capacity(exe.len() + 16 * argv.len().min(MAX_ARGS));
        push_clean(&mut text, exe);
        let mut rest = argv.iter().map(AsRef::as_ref);
        if let Some(arg0) = rest.next()
            && basename(arg0) != basename(exe)
            && !arg0.is_empty()
        {
            text.push(' ');
            push_clean(&mut text, arg0);
        }
        for (i, arg) in rest.enumerate() {
            text.push(' ');
            if i == MAX_ARGS {
                text.push_str(MORE_ARGS);
                break;
            }
            push_clean(&mut text, arg);
        }
        Self::finish(Dimension::Args, text)
    }

    /// A file opened with `mode`.
    pub fn file(path: &str, mode: FileMode) -> Self {
        let mut text = String::with_capacity(path.len() + 3);
        text.push_str(mode.as_str());
        text.push(' ');
        push_clean(&mut text, path);
        Self::finish(Dimension::File, text)
    }

    /// A listening socket on `port`.
    pub fn listen(port: u16, proto: Proto) -> Self {
        Self::finish(Dimension::Listen, format!("{port}/{proto}"))
    }

    /// An accepted connection (or received datagram) from `peer`:`peer_port` to the local
    /// `local_port`. IPv4-mapped IPv6 peers are shown as IPv4.
    pub fn inbound(peer: IpAddr, peer_port: u16, local_port: u16, proto: Proto) -> Self {
        let peer = peer.to_canonical();
        Self::finish(
            Dimension::Inbound,
            format!("{peer} {peer_port} -> {local_port}/{proto}"),
        )
    }

    /// A connection (or sent datagram) to `destination`:`port`. IPv4-mapped IPv6 addresses
    /// are shown as IPv4.
    pub fn outbound(destination: IpAddr, port: u16, proto: Proto) -> Self {
        let destination = destination.to_canonical();
        Self::finish(Dimension::Outbound, format!("{destination} {port}/{proto}"))
    }

    /// A connection to a container of workload `workload` (its key, e.g.
    /// `docker.io/shop/backend:2`) on `port`: every replica of that workload is the same peer,
    /// whatever its address. The daemon uses it when the destination address is a container's
    /// it has described, [`Self::outbound`] otherwise.
    pub fn outbound_workload(workload: &str, port: u16, proto: Proto) -> Self {
        Self::finish(Dimension::Outbound, format!("{workload} {port}/{proto}"))
    }

    /// A syscall by name. Syscalls the daemon cannot name are passed as `sys_<nr>`.
    pub fn syscall(name: &str) -> Self {
        Self::new(Dimension::Syscall, name)
    }

    /// A privileged operation (`setuid`, `ptrace`, `mount`, `memfd_create`, `bpf`,
    /// `packet_socket`, …) with an optional target (`mount` → the mount point).
    pub fn privileged(op: &str, target: Option<&str>) -> Self {
        let mut text = String::with_capacity(op.len() + target.map_or(0, |t| t.len() + 1));
        push_clean(&mut text, op);
        if let Some(target) = target.filter(|t| !t.is_empty()) {
            text.push(' ');
            push_clean(&mut text, target);
        }
        Self::finish(Dimension::Privileged, text)
    }

    /// A file change: `op` (`rename`, `unlink`, …) of `path`, and for two-path operations
    /// (`rename`, `link`, `symlink`) the new name `path2`.
    pub fn file_change(op: &str, path: &str, path2: Option<&str>) -> Self {
        let mut text =
            String::with_capacity(op.len() + path.len() + path2.map_or(0, |p| p.len() + 4) + 1);
        push_clean(&mut text, op);
        text.push(' ');
        push_clean(&mut text, path);
        if let Some(path2) = path2 {
            text.push_str(generalise::EDGE_SEPARATOR);
            push_clean(&mut text, path2);
        }
        Self::finish(Dimension::FileChange, text)
    }

    /// The generalised item: the key profiles learn and scorers look up.
    pub fn generalised(&self) -> String {
        let mut out = String::with_capacity(self.item.len());
        self.generalise_into(&mut out);
        out
    }

    /// Appends the generalised item to `out`. Allocates only if `out` must grow, so a caller
    /// that reuses one buffer generalises without allocating.
    pub fn generalise_into(&self, out: &mut String) {
        generalise::generalise_into(self.dimension, &self.item, out);
    }

    /// The coarse dimension for alerts (see [`Dimension::alert_dimension`]).
    pub fn alert_dimension(&self) -> AlertDimension {
        self.dimension.alert_dimension()
    }

    fn finish(dimension: Dimension, mut item: String) -> Self {
        truncate_at_boundary(&mut item, MAX_RAW_BYTES);
        Self { dimension, item }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dimension, self.item)
    }
}

/// Multi-call binaries: one executable that is many programs, chosen by the name it is run
/// as (`argv[0]`), or by its first argument when run under its own name (`busybox ps`).
const MULTI_CALL: [&str; 2] = ["busybox", "toybox"];

/// Appends the program `exe` runs as: `exe` itself, or for a [`MULTI_CALL`] binary `exe
/// (applet)`. Without the applet, every program of a busybox-based image is one executable:
/// once the log rotation's `gzip` had run, `ps`, `nc` or `wget` through a shell were a
/// known program, and the exec dimension (decisive: a new program alerts on its own) was blind.
fn program_into<S: AsRef<str>>(out: &mut String, exe: &str, argv: &[S]) {
    push_clean(out, exe);
    let name = basename(exe);
    if !MULTI_CALL.contains(&name) {
        return;
    }
    let mut args = argv.iter().map(|a| basename(a.as_ref()));
    let applet = match args.next() {
        Some(arg0) if arg0 == name => args.next().filter(|a| !a.starts_with('-')),
        other => other,
    };
    if let Some(applet) = applet.filter(|a| !a.is_empty()) {
        out.push_str(" (");
        push_clean(out, applet.trim_start_matches('-'));
        out.push(')');
    }
}

/// An `exec` item, or a process edge's child, without the applet of a [`MULTI_CALL`] binary:
/// `/bin/busybox (ps)` → `/bin/busybox`; `None` for any other item. Baselines learned before
/// applets were told apart name the binary alone (`habit_models::novelty` reads them so).
pub fn without_applet(item: &str) -> Option<&str> {
    let (exe, applet) = item.strip_suffix(')')?.rsplit_once(" (")?;
    (MULTI_CALL.contains(&basename(exe)) && !applet.is_empty()).then_some(exe)
}

/// Whether a path (or a process edge's child) is a [`MULTI_CALL`] binary named alone.
pub fn is_multi_call(path: &str) -> bool {
    MULTI_CALL.contains(&basename(path))
}

/// The last `/`-separated component of a path (the whole string if it has none).
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Appends `text` with control characters replaced by `?`, stopping at [`MAX_RAW_BYTES`].
fn push_clean(out: &mut String, text: &str) {
    for c in text.chars() {
        if out.len() >= MAX_RAW_BYTES {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub(crate) fn truncate_at_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn dimension_names_round_trip_through_serde_and_from_str() {
        for d in Dimension::ALL {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(serde_json::from_str::<Dimension>(&json).unwrap(), d);
            assert_eq!(d.name().parse::<Dimension>().unwrap(), d);
            assert_eq!(Dimension::ALL[d.index()], d);
        }
        assert!("network".parse::<Dimension>().is_err());
    }

    #[test]
    fn network_dimensions_map_to_network_alerts() {
        assert_eq!(Dimension::Listen.alert_dimension(), AlertDimension::Network);
        assert_eq!(
            Dimension::Inbound.alert_dimension(),
            AlertDimension::Network
        );
        assert_eq!(
            Dimension::Outbound.alert_dimension(),
            AlertDimension::Network
        );
        assert_eq!(Dimension::File.alert_dimension(), AlertDimension::File);
        assert_eq!(
            Dimension::ProcessEdge.alert_dimension(),
            AlertDimension::Exec
        );
        assert_eq!(
            Dimension::Privileged.alert_dimension(),
            AlertDimension::Syscall
        );
        assert_eq!(
            serde_json::to_string(&AlertDimension::Network).unwrap(),
            "\"network\""
        );
    }

    #[test]
    fn constructors_format_items() {
        assert_eq!(Observation::exec("/usr/bin/curl").item, "/usr/bin/curl");
        assert_eq!(
            Observation::process_edge("/bin/sh", "/usr/bin/curl").item,
            "/bin/sh -> /usr/bin/curl"
        );
        assert_eq!(
            Observation::file("/etc/passwd", FileMode::Read).item,
            "r /etc/passwd"
        );
        assert_eq!(Observation::listen(8080, Proto::Tcp).item, "8080/tcp");
        assert_eq!(
            Observation::inbound(Ipv4Addr::new(10, 0, 0, 5).into(), 43122, 8080, Proto::Tcp).item,
            "10.0.0.5 43122 -> 8080/tcp"
        );
        assert_eq!(
            Observation::outbound(Ipv6Addr::LOCALHOST.into(), 53, Proto::Udp).item,
            "::1 53/udp"
        );
        let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into();
        assert_eq!(
            Observation::outbound(mapped, 443, Proto::Tcp).item,
            "192.0.2.1 443/tcp"
        );
        assert_eq!(Observation::privileged("setuid", None).item, "setuid");
        assert_eq!(
            Observation::privileged("mount", Some("/mnt/x")).item,
            "mount /mnt/x"
        );
        assert_eq!(Observation::syscall("openat").dimension, Dimension::Syscall);
        assert_eq!(
            Observation::file_change("unlink", "/var/log/app.log", None).item,
            "unlink /var/log/app.log"
        );
        let rename = Observation::file_change("rename", "/etc/.pw", Some("/etc/passwd"));
        assert_eq!(rename.item, "rename /etc/.pw -> /etc/passwd");
        assert_eq!(rename.alert_dimension(), AlertDimension::File);
    }

    #[test]
    fn args_drop_argv0_when_it_names_the_exe() {
        let o = Observation::args("/usr/bin/sleep", &["sleep", "30"]);
        assert_eq!(o.item, "/usr/bin/sleep 30");
        let o = Observation::args("/bin/busybox", &["ls".to_owned(), "-l".to_owned()]);
        assert_eq!(o.item, "/bin/busybox ls -l");
        let o = Observation::args("/usr/bin/true", &[] as &[&str]);
        assert_eq!(o.item, "/usr/bin/true");
    }

    #[test]
    fn a_multi_call_binary_is_the_program_it_runs_as() {
        let exec = |exe: &str, argv: &[&str]| Observation::exec_of(exe, argv).item;
        assert_eq!(exec("/bin/busybox", &["ps"]), "/bin/busybox (ps)");
        assert_eq!(
            exec("/bin/busybox", &["/bin/nc", "-l"]),
            "/bin/busybox (nc)"
        );
        assert_eq!(
            exec("/bin/busybox", &["busybox", "wget"]),
            "/bin/busybox (wget)"
        );
        assert_eq!(exec("/bin/busybox", &["-sh"]), "/bin/busybox (sh)");
        assert_eq!(exec("/bin/busybox", &["busybox", "--help"]), "/bin/busybox");
        assert_eq!(exec("/bin/busybox", &[]), "/bin/busybox");
        // Other executables are themselves, whatever argv[0] says.
        assert_eq!(
            exec("/usr/bin/python3.11", &["python3"]),
            "/usr/bin/python3.11"
        );
        let edge = Observation::process_edge_of("/bin/sh", "/bin/busybox", &["gzip"]);
        assert_eq!(edge.item, "/bin/sh -> /bin/busybox (gzip)");
        let o = Observation::exec_of("/bin/busybox", &["ps"]);
        assert_eq!(o.generalised(), "/bin/busybox (ps)");
        assert_eq!(without_applet(&o.item), Some("/bin/busybox"));
        assert_eq!(without_applet(&edge.item), Some("/bin/sh -> /bin/busybox"));
        assert_eq!(without_applet("/usr/bin/app (x)"), None);
        assert_eq!(without_applet("/bin/busybox"), None);
    }

    #[test]
    fn args_are_bounded() {
        let mut argv: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
        argv[0] = "xargs".to_owned();
        let o = Observation::args("/usr/bin/xargs", &argv);
        assert!(o.item.ends_with(" <more>"), "{}", o.item);
        assert_eq!(o.item.split(' ').count(), 1 + MAX_ARGS + 1);
    }

    #[test]
    fn control_characters_are_replaced_and_items_capped() {
        let o = Observation::file("/tmp/evil\nr /etc/shadow", FileMode::Write);
        assert_eq!(o.item, "w /tmp/evil?r /etc/shadow");
        let long = "é".repeat(MAX_RAW_BYTES);
        let o = Observation::exec(&long);
        assert!(o.item.len() <= MAX_RAW_BYTES);
        assert!(o.item.chars().all(|c| c == 'é'));
    }

    #[test]
    fn file_modes_and_protocols_parse() {
        assert_eq!(FileMode::from_open_flags(0), FileMode::Read);
        assert_eq!(FileMode::from_open_flags(0o1101), FileMode::Write);
        assert_eq!(FileMode::from_open_flags(2 | 0o100), FileMode::ReadWrite);
        assert_eq!("rw".parse::<FileMode>().unwrap(), FileMode::ReadWrite);
        assert_eq!(Proto::from_ip_proto(6), Proto::Tcp);
        assert_eq!(Proto::from_ip_proto(47).to_string(), "ip47");
        assert_eq!("ip47".parse::<Proto>().unwrap(), Proto::Other(47));
        assert_eq!("udp".parse::<Proto>().unwrap(), Proto::Udp);
        assert!("icmp".parse::<Proto>().is_err());
    }

    #[test]
    fn observation_serialises_compactly() {
        let o = Observation::file("/etc/hosts", FileMode::Read);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"{"dimension":"file","item":"r /etc/hosts"}"#);
        assert_eq!(serde_json::from_str::<Observation>(&json).unwrap(), o);
    }
}
