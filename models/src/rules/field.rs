//! The fields a rule condition or output can name, and how an event hands their values over.
//!
//! Falco names what it knows about an event with dotted fields (`proc.name`, `fd.sip`,
//! `evt.arg.flags`, `proc.aname[2]`). habitd keeps those names so that existing rules and alert
//! routers work unchanged, but resolves each name **once, when a rule is compiled**, to a
//! [`Field`] (a plain enum) plus an optional [`FieldArg`]. Evaluating a rule therefore never
//! looks at a field name again: the daemon's [`EventFields`] implementation receives the enum
//! and answers with a [`Value`] that borrows from its event and process table where it can.
//!
//! Conventions an implementation of [`EventFields`] must follow (they are Falco's):
//! - `container.id` is `host` for processes outside any container (the `container` macro of
//!   Falco's rules is `container.id != host`).
//! - `proc.aname[0]` is the process itself, `proc.aname[1]` its parent, and so on; the same
//!   holds for `proc.aexe`, `proc.aexepath`, `proc.apid` and `proc.acmdline`. Without an index,
//!   these fields answer the whole ancestor chain (parent first) as a [`Value::List`], and a
//!   condition on them holds when it holds for **any** ancestor.
//! - `proc.tty` is the controlling terminal's device number, 0 when there is none.
//! - `thread.cap_effective` / `thread.cap_permitted` are capability names separated by spaces
//!   (`CAP_CHOWN CAP_SYS_ADMIN`), as Falco renders them; rules test them with `contains`.
//! - `evt.arg.NAME` / `evt.arg[N]` are the syscall arguments rendered as Falco renders them
//!   (`flags` as `O_WRONLY|O_CREAT|O_TRUNC`, `request` as `PTRACE_ATTACH`, `domain` as
//!   `AF_PACKET`); `evt.rawarg.NAME` is the raw number.
//! - `evt.res` is `SUCCESS` or the errno name (`ENOENT`); `evt.rawres` is the raw return value.
//! - A field the event cannot supply is `None`: every comparison on it is false (so
//!   `not proc.name in (...)` is true), exactly as in Falco.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// The type of a field's values, which decides how the literals it is compared with are
/// compiled (a number field compares numbers, not text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// Text.
    Str,
    /// A signed integer (counts, ids, ports, durations in nanoseconds, raw return values).
    Num,
    /// `true` or `false`.
    Bool,
    /// An IP address; compared with addresses or networks (`10.0.0.0/8`).
    Ip,
}

impl FieldType {
    /// A lower-case name for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Num => "number",
            FieldType::Bool => "boolean",
            FieldType::Ip => "IP address",
        }
    }
}

/// Which argument a field takes in brackets (`proc.aname[2]`) or after a dot (`evt.arg.flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// No argument.
    None,
    /// An optional ancestor or position index (`proc.aname`, `proc.aname[3]`).
    OptionalIndex,
    /// A required index or name (`evt.arg[0]`, `evt.arg.flags`, `evt.arg[flags]`).
    IndexOrKey,
    /// A required name (`k8s.pod.label[app]`, `k8s.pod.label.app`, `proc.env[HOME]`).
    Key,
}

/// How a condition treats a field that answers several values ([`Value::List`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Multiplicity {
    /// One value. If an implementation answers a list anyway, it is treated as a set.
    Single,
    /// The ancestor chain of a process: a condition holds when it holds for any ancestor,
    /// whatever the operator (Falco's `proc.aname` semantics).
    Ancestors,
    /// A set of values (`fd.types`, `k8s.pod.labels`): `in` holds when every value is in the
    /// list, `intersects` when one is, and the other operators when any value satisfies them.
    Set,
}

/// The argument of a field: an index (`proc.aname[2]`, `evt.arg[0]`) or a name
/// (`evt.arg.flags`, `k8s.pod.label[app]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldArg {
    /// A numeric index.
    Index(u32),
    /// A name.
    Key(Box<str>),
}

impl FieldArg {
    /// The index, if this is one.
    pub fn index(&self) -> Option<u32> {
        match self {
            FieldArg::Index(i) => Some(*i),
            FieldArg::Key(_) => None,
        }
    }

    /// The name, if this is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            FieldArg::Index(_) => None,
            FieldArg::Key(k) => Some(k),
        }
    }
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $ty:ident, $arg:ident, $multi:ident; )*) => {
        /// A field of an event, as Falco names it. See the module documentation for the
        /// conventions an [`EventFields`] implementation follows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Field {
            $( $(#[$doc])* $variant, )*
        }

        impl Field {
            /// Every supported field, in registry order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// Falco's name of the field (`proc.name`).
            pub const fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            /// The type of its values.
            pub const fn value_type(self) -> FieldType {
                match self { $(Field::$variant => FieldType::$ty,)* }
            }

            /// The argument it takes.
            pub const fn arg_kind(self) -> ArgKind {
                match self { $(Field::$variant => ArgKind::$arg,)* }
            }

            /// How a condition treats several values.
            pub const fn multiplicity(self) -> Multiplicity {
                match self { $(Field::$variant => Multiplicity::$multi,)* }
            }
        }
    };
}

fields! {
    // ---- evt: the event itself ----
    /// The event's sequence number.
    EvtNum = "evt.num", Num, None, Single;
    /// The event time, rendered by the daemon (Falco: `hh:mm:ss.nnnnnnnnn`).
    EvtTime = "evt.time", Str, None, Single;
    /// The event time in nanoseconds since the epoch.
    EvtRawtime = "evt.rawtime", Num, None, Single;
    /// The event type: the syscall name (`execve`, `openat`, `connect`).
    EvtType = "evt.type", Str, None, Single;
    /// The direction, `>` (enter) or `<` (exit). Deprecated in Falco; kept for old rules.
    EvtDir = "evt.dir", Str, None, Single;
    /// A syscall argument rendered as text, by name (`evt.arg.flags`) or position (`evt.arg[0]`).
    EvtArg = "evt.arg", Str, IndexOrKey, Single;
    /// A syscall argument as a raw number, by name or position.
    EvtRawarg = "evt.rawarg", Num, IndexOrKey, Single;
    /// All arguments rendered as `name=value` pairs separated by spaces.
    EvtArgs = "evt.args", Str, None, Single;
    /// The result: `SUCCESS` or an errno name (`ENOENT`).
    EvtRes = "evt.res", Str, None, Single;
    /// The raw return value (a file descriptor, a count, or a negative errno).
    EvtRawres = "evt.rawres", Num, None, Single;
    /// Whether the syscall failed.
    EvtFailed = "evt.failed", Bool, None, Single;
    /// Whether an open-family event opened the file for reading.
    EvtIsOpenRead = "evt.is_open_read", Bool, None, Single;
    /// Whether an open-family event opened the file for writing.
    EvtIsOpenWrite = "evt.is_open_write", Bool, None, Single;
    /// Whether an open-family event opened the file for execution.
    EvtIsOpenExec = "evt.is_open_exec", Bool, None, Single;
    /// Whether an open-family event created the file.
    EvtIsOpenCreate = "evt.is_open_create", Bool, None, Single;
    /// The host name of the node.
    EvtHostname = "evt.hostname", Str, None, Single;
    /// The event source (`syscall`).
    EvtSource = "evt.source", Str, None, Single;
    /// The syscall name of a syscall event (the same as `evt.type` for syscalls).
    SyscallType = "syscall.type", Str, None, Single;

    // ---- proc: the process ----
    /// The process id (thread group id).
    ProcPid = "proc.pid", Num, None, Single;
    /// The parent's process id.
    ProcPpid = "proc.ppid", Num, None, Single;
    /// The process id inside its pid namespace.
    ProcVpid = "proc.vpid", Num, None, Single;
    /// The command name (`comm`, at most 15 characters).
    ProcName = "proc.name", Str, None, Single;
    /// The first command-line argument (`argv[0]`), as Falco defines `proc.exe`.
    ProcExe = "proc.exe", Str, None, Single;
    /// The full path of the executable.
    ProcExepath = "proc.exepath", Str, None, Single;
    /// The command line: the name and the arguments separated by spaces.
    ProcCmdline = "proc.cmdline", Str, None, Single;
    /// The arguments (without the name) separated by spaces.
    ProcArgs = "proc.args", Str, None, Single;
    /// The current working directory, ending with `/`.
    ProcCwd = "proc.cwd", Str, None, Single;
    /// The environment, or one variable of it (`proc.env[HOME]`).
    ProcEnv = "proc.env", Str, Key, Single;
    /// The parent's command name.
    ProcPname = "proc.pname", Str, None, Single;
    /// The parent's command line.
    ProcPcmdline = "proc.pcmdline", Str, None, Single;
    /// The parent's `argv[0]`.
    ProcPexe = "proc.pexe", Str, None, Single;
    /// The parent's executable path.
    ProcPexepath = "proc.pexepath", Str, None, Single;
    /// An ancestor's command name (`[0]` is the process, `[1]` the parent); without an index,
    /// any ancestor.
    ProcAname = "proc.aname", Str, OptionalIndex, Ancestors;
    /// An ancestor's `argv[0]`.
    ProcAexe = "proc.aexe", Str, OptionalIndex, Ancestors;
    /// An ancestor's executable path.
    ProcAexepath = "proc.aexepath", Str, OptionalIndex, Ancestors;
    /// An ancestor's process id.
    ProcApid = "proc.apid", Num, OptionalIndex, Ancestors;
    /// An ancestor's command line.
    ProcAcmdline = "proc.acmdline", Str, OptionalIndex, Ancestors;
    /// The controlling terminal's device number; 0 when there is none.
    ProcTty = "proc.tty", Num, None, Single;
    /// The session id.
    ProcSid = "proc.sid", Num, None, Single;
    /// The session leader's command name.
    ProcSname = "proc.sname", Str, None, Single;
    /// Whether the process leads its session.
    ProcIsSidLeader = "proc.is_sid_leader", Bool, None, Single;
    /// The process group id in the pid namespace.
    ProcVpgid = "proc.vpgid", Num, None, Single;
    /// The process group leader's command name.
    ProcVpgidName = "proc.vpgid.name", Str, None, Single;
    /// The process group leader's `argv[0]`.
    ProcVpgidExe = "proc.vpgid.exe", Str, None, Single;
    /// The process group leader's executable path.
    ProcVpgidExepath = "proc.vpgid.exepath", Str, None, Single;
    /// Whether the process leads its process group.
    ProcIsVpgidLeader = "proc.is_vpgid_leader", Bool, None, Single;
    /// Nanoseconds since the process started.
    ProcDuration = "proc.duration", Num, None, Single;
    /// Nanoseconds since the parent started.
    ProcPpidDuration = "proc.ppid.duration", Num, None, Single;
    /// The process id of the login shell the process descends from.
    ProcLoginshellid = "proc.loginshellid", Num, None, Single;
    /// Whether the executable lives in a container's writable (upper) overlay layer, i.e. it
    /// was not part of the image.
    ProcIsExeUpperLayer = "proc.is_exe_upper_layer", Bool, None, Single;
    /// Whether the executable is a `memfd_create` file (fileless execution).
    ProcIsExeFromMemfd = "proc.is_exe_from_memfd", Bool, None, Single;
    /// Whether the executable is writable by the user running it.
    ProcIsExeWritable = "proc.is_exe_writable", Bool, None, Single;
    /// The executable's inode number.
    ProcExeIno = "proc.exe_ino", Num, None, Single;
    /// The executable's inode change time (nanoseconds since the epoch).
    ProcExeInoCtime = "proc.exe_ino.ctime", Num, None, Single;
    /// The executable's modification time (nanoseconds since the epoch).
    ProcExeInoMtime = "proc.exe_ino.mtime", Num, None, Single;
    /// Nanoseconds between the executable's inode change and the process start.
    ProcExeInoCtimeDurationProcStart = "proc.exe_ino.ctime_duration_proc_start", Num, None, Single;

    // ---- thread ----
    /// The thread id.
    ThreadTid = "thread.tid", Num, None, Single;
    /// The thread id inside its pid namespace.
    ThreadVtid = "thread.vtid", Num, None, Single;
    /// The effective capabilities, names separated by spaces.
    ThreadCapEffective = "thread.cap_effective", Str, None, Single;
    /// The permitted capabilities, names separated by spaces.
    ThreadCapPermitted = "thread.cap_permitted", Str, None, Single;
    /// The inheritable capabilities, names separated by spaces.
    ThreadCapInheritable = "thread.cap_inheritable", Str, None, Single;

    // ---- fd: the file descriptor the event is about ----
    /// The descriptor number (-1 when an open failed).
    FdNum = "fd.num", Num, None, Single;
    /// The descriptor type: `file`, `directory`, `ipv4`, `ipv6`, `unix`, `pipe`, `event`,
    /// `signalfd`, `eventpoll`, `inotify`, `timerfd`, `netlink`, `memfd`.
    FdType = "fd.type", Str, None, Single;
    /// One character for the type: `f`, `d`, `4`, `6`, `u`, `p`, ...
    FdTypechar = "fd.typechar", Str, None, Single;
    /// The full name: a path, or `cip:cport->sip:sport` for a connection.
    FdName = "fd.name", Str, None, Single;
    /// The name as the process passed it, before normalisation (may contain `../`).
    FdNameraw = "fd.nameraw", Str, None, Single;
    /// The directory of a file descriptor's path.
    FdDirectory = "fd.directory", Str, None, Single;
    /// The file name (last component) of a file descriptor's path.
    FdFilename = "fd.filename", Str, None, Single;
    /// The device number of a file.
    FdDev = "fd.dev", Num, None, Single;
    /// The inode number of a file.
    FdIno = "fd.ino", Num, None, Single;
    /// Client or server IP address of a connection (matches either).
    FdIp = "fd.ip", Ip, None, Single;
    /// The client IP address.
    FdCip = "fd.cip", Ip, None, Single;
    /// The server IP address.
    FdSip = "fd.sip", Ip, None, Single;
    /// The local IP address.
    FdLip = "fd.lip", Ip, None, Single;
    /// The remote IP address.
    FdRip = "fd.rip", Ip, None, Single;
    /// Client or server port (matches either).
    FdPort = "fd.port", Num, None, Single;
    /// The client port.
    FdCport = "fd.cport", Num, None, Single;
    /// The server port.
    FdSport = "fd.sport", Num, None, Single;
    /// The local port.
    FdLport = "fd.lport", Num, None, Single;
    /// The remote port.
    FdRport = "fd.rport", Num, None, Single;
    /// The layer-4 protocol: `tcp`, `udp`, `icmp`, `raw`.
    FdL4proto = "fd.l4proto", Str, None, Single;
    /// The socket family: `ip`, `unix`.
    FdSockfamily = "fd.sockfamily", Str, None, Single;
    /// Whether the process is the server side of the connection.
    FdIsServer = "fd.is_server", Bool, None, Single;
    /// The network of either address; compared with networks (`fd.net != 127.0.0.0/8`).
    FdNet = "fd.net", Ip, None, Single;
    /// The client's network.
    FdCnet = "fd.cnet", Ip, None, Single;
    /// The server's network.
    FdSnet = "fd.snet", Ip, None, Single;
    /// The local network.
    FdLnet = "fd.lnet", Ip, None, Single;
    /// The remote network.
    FdRnet = "fd.rnet", Ip, None, Single;
    /// Whether a socket is connected.
    FdConnected = "fd.connected", Bool, None, Single;
    /// Whether the event changed the descriptor's name (a first `sendto` on a UDP socket).
    FdNameChanged = "fd.name_changed", Bool, None, Single;
    /// The domain name the client address was resolved from.
    FdCipName = "fd.cip.name", Str, None, Single;
    /// The domain name the server address was resolved from.
    FdSipName = "fd.sip.name", Str, None, Single;
    /// The domain name the local address was resolved from.
    FdLipName = "fd.lip.name", Str, None, Single;
    /// The domain name the remote address was resolved from.
    FdRipName = "fd.rip.name", Str, None, Single;
    /// The types of the process's descriptors, or of one of them (`fd.types[0]`).
    FdTypes = "fd.types", Str, OptionalIndex, Set;

    // ---- user and group ----
    /// The user id.
    UserUid = "user.uid", Num, None, Single;
    /// The user name.
    UserName = "user.name", Str, None, Single;
    /// The user's home directory.
    UserHomedir = "user.homedir", Str, None, Single;
    /// The user's shell.
    UserShell = "user.shell", Str, None, Single;
    /// The audit login uid (-1 when unset).
    UserLoginuid = "user.loginuid", Num, None, Single;
    /// The audit login user's name.
    UserLoginname = "user.loginname", Str, None, Single;
    /// The group id.
    GroupGid = "group.gid", Num, None, Single;
    /// The group name.
    GroupName = "group.name", Str, None, Single;

    // ---- container ----
    /// The container id (12 hex characters), `host` outside containers.
    ContainerId = "container.id", Str, None, Single;
    /// The full container id (64 hex characters).
    ContainerFullId = "container.full_id", Str, None, Single;
    /// The container name.
    ContainerName = "container.name", Str, None, Single;
    /// The image reference as the runtime reports it.
    ContainerImage = "container.image", Str, None, Single;
    /// The image id.
    ContainerImageId = "container.image.id", Str, None, Single;
    /// The image repository (`docker.io/library/nginx`).
    ContainerImageRepository = "container.image.repository", Str, None, Single;
    /// The image tag.
    ContainerImageTag = "container.image.tag", Str, None, Single;
    /// The image digest.
    ContainerImageDigest = "container.image.digest", Str, None, Single;
    /// The container runtime type (`docker`, `containerd`, `cri-o`).
    ContainerType = "container.type", Str, None, Single;
    /// Whether the container runs privileged.
    ContainerPrivileged = "container.privileged", Bool, None, Single;
    /// The container start time (nanoseconds since the epoch).
    ContainerStartTs = "container.start_ts", Num, None, Single;
    /// Falco's legacy `%container.info` output placeholder.
    ContainerInfo = "container.info", Str, None, Single;
    /// A container label (`container.label[KEY]`).
    ContainerLabel = "container.label", Str, Key, Single;

    // ---- Kubernetes ----
    /// The namespace of the pod.
    K8sNsName = "k8s.ns.name", Str, None, Single;
    /// The pod name.
    K8sPodName = "k8s.pod.name", Str, None, Single;
    /// The pod uid.
    K8sPodUid = "k8s.pod.uid", Str, None, Single;
    /// A pod label (`k8s.pod.label[app]`).
    K8sPodLabel = "k8s.pod.label", Str, Key, Single;
    /// All pod labels as `key:value`.
    K8sPodLabels = "k8s.pod.labels", Str, None, Set;
}

impl Field {
    /// The field of a name, without argument (`proc.name`). Names are case-sensitive, as in
    /// Falco.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field with its argument, as a condition or an output names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldRef {
    /// The field.
    pub field: Field,
    /// Its argument, if any.
    pub arg: Option<FieldArg>,
}

/// A field name that is not supported, or whose argument is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// No such field.
    #[error("unknown field '{0}'")]
    Unknown(String),
    /// The field takes no argument.
    #[error("field '{field}' takes no argument, got '{arg}'")]
    UnexpectedArg {
        /// The field.
        field: &'static str,
        /// The argument given.
        arg: String,
    },
    /// The field needs an argument.
    #[error("field '{field}' needs an argument ({expected})")]
    MissingArg {
        /// The field.
        field: &'static str,
        /// What kind of argument.
        expected: &'static str,
    },
    /// The argument is not of the expected kind.
    #[error("field '{field}' needs {expected} as argument, got '{arg}'")]
    BadArg {
        /// The field.
        field: &'static str,
        /// What kind of argument.
        expected: &'static str,
        /// The argument given.
        arg: String,
    },
}

impl FieldRef {
    /// A field without argument.
    pub const fn plain(field: Field) -> FieldRef {
        FieldRef { field, arg: None }
    }

    /// Resolves a dotted name and an optional bracket argument, as a condition writes them:
    /// `("proc.aname", Some("2"))`, `("evt.arg.flags", None)`, `("evt.arg", Some("flags"))`.
    pub fn resolve(name: &str, bracket: Option<&str>) -> Result<FieldRef, FieldError> {
        if let Some(field) = Field::from_name(name) {
            return Self::with_arg(field, bracket);
        }
        // `evt.arg.flags`, `k8s.pod.label.app`: a field taking a name, then the name after a
        // dot. The longest known prefix wins, so `fd.sip.name` (a field of its own) never gets
        // here.
        let mut split = name.len();
        while let Some(dot) = name[..split].rfind('.') {
            if let Some(field) = Field::from_name(&name[..dot])
                && matches!(field.arg_kind(), ArgKind::IndexOrKey | ArgKind::Key)
            {
                let key = &name[dot + 1..];
                if let Some(arg) = bracket {
                    return Err(FieldError::UnexpectedArg {
                        field: field.name(),
                        arg: format!("{key}[{arg}]"),
                    });
                }
                return Ok(FieldRef {
                    field,
                    arg: Some(FieldArg::Key(key.into())),
                });
            }
            split = dot;
        }
        Err(FieldError::Unknown(match bracket {
            Some(arg) => format!("{name}[{arg}]"),
            None => name.to_owned(),
        }))
    }

    /// Parses a complete field spelling such as `proc.aname[2]` or `evt.arg.flags`.
    pub fn parse(spelling: &str) -> Result<FieldRef, FieldError> {
        match spelling.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((name, arg)) => Self::resolve(name, Some(arg)),
            None => Self::resolve(spelling, None),
        }
    }

    fn with_arg(field: Field, bracket: Option<&str>) -> Result<FieldRef, FieldError> {
        let arg = match (field.arg_kind(), bracket) {
            (ArgKind::None, None) | (ArgKind::OptionalIndex, None) => None,
            (ArgKind::None, Some(arg)) => {
                return Err(FieldError::UnexpectedArg {
                    field: field.name(),
                    arg: arg.to_owned(),
                });
            }
            (ArgKind::IndexOrKey, None) => {
                return Err(FieldError::MissingArg {
                    field: field.name(),
                    expected: "an index such as [0] or a name such as .flags",
                });
            }
            (ArgKind::Key, None) => {
                return Err(FieldError::MissingArg {
                    field: field.name(),
                    expected: "a name such as [app]",
                });
            }
            (ArgKind::OptionalIndex, Some(arg)) => match arg.parse::<u32>() {
                Ok(i) => Some(FieldArg::Index(i)),
                Err(_) => {
                    return Err(FieldError::BadArg {
                        field: field.name(),
                        expected: "an index",
                        arg: arg.to_owned(),
                    });
                }
            },
            (ArgKind::IndexOrKey, Some(arg)) => Some(match arg.parse::<u32>() {
                Ok(i) => FieldArg::Index(i),
                Err(_) => FieldArg::Key(arg.into()),
            }),
            (ArgKind::Key, Some(arg)) => Some(FieldArg::Key(arg.into())),
        };
        Ok(FieldRef { field, arg })
    }
}

impl fmt::Display for FieldRef {
    /// Falco's spelling: `proc.aname[2]`, `evt.arg.flags`, `k8s.pod.label[app.kubernetes.io/name]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arg {
            None => f.write_str(self.field.name()),
            Some(FieldArg::Index(i)) => write!(f, "{}[{i}]", self.field.name()),
            Some(FieldArg::Key(k)) => {
                let dotted = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if dotted {
                    write!(f, "{}.{k}", self.field.name())
                } else {
                    write!(f, "{}[{k}]", self.field.name())
                }
            }
        }
    }
}

/// The value of a field for one event. Text borrows from the event where it can
/// ([`Cow::Borrowed`]), so that answering a field costs no allocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Text.
    Str(Cow<'a, str>),
    /// A number.
    Num(i64),
    /// A boolean.
    Bool(bool),
    /// An IP address.
    Ip(IpAddr),
    /// Several values: an ancestor chain (parent first) or a set; see [`Multiplicity`].
    List(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    /// Borrowed text.
    pub fn str(s: &'a str) -> Value<'a> {
        Value::Str(Cow::Borrowed(s))
    }

    /// The same value, owning its text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Num(n) => Value::Num(n),
            Value::Bool(b) => Value::Bool(b),
            Value::Ip(ip) => Value::Ip(ip),
            Value::List(items) => Value::List(items.into_iter().map(Value::into_owned).collect()),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// As Falco renders values in outputs: text as is, numbers in decimal, booleans as
    /// `true`/`false`, several values as `(a,b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Num(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ip(ip) => write!(f, "{ip}"),
            Value::List(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value<'_> {
    fn from(n: i64) -> Self {
        Value::Num(n)
    }
}

impl From<i32> for Value<'_> {
    fn from(n: i32) -> Self {
        Value::Num(i64::from(n))
    }
}

impl From<u32> for Value<'_> {
    fn from(n: u32) -> Self {
        Value::Num(i64::from(n))
    }
}

impl From<u16> for Value<'_> {
    fn from(n: u16) -> Self {
        Value::Num(i64::from(n))
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<IpAddr> for Value<'_> {
    fn from(ip: IpAddr) -> Self {
        Value::Ip(ip)
    }
}

impl<'a> From<Vec<&'a str>> for Value<'a> {
    fn from(items: Vec<&'a str>) -> Self {
        Value::List(items.into_iter().map(Value::from).collect())
    }
}

/// Read access to the fields of one event. The daemon implements it over its decoded event and
/// process table; [`super::MapEvent`] implements it over a map for tests and offline tools.
///
/// `get` is called once per check a rule evaluates, so it should be cheap: borrow text from the
/// event instead of formatting it where possible, and answer `None` for what the event lacks.
pub trait EventFields {
    /// The value of `field` (with its argument, if the field takes one) for this event, or
    /// `None` when the event does not have it.
    fn get(&self, field: Field, arg: Option<&FieldArg>) -> Option<Value<'_>>;
}

impl<T: EventFields + ?Sized> EventFields for &T {
    fn get(&self, field: Field, arg: Option<&FieldArg>) -> Option<Value<'_>> {
        (**self).get(field, arg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve_to_themselves() {
        let mut seen = std::collections::HashSet::new();
        for f in Field::ALL {
            assert!(seen.insert(f.name()), "duplicate field name {}", f.name());
            assert_eq!(Field::from_name(f.name()), Some(*f));
        }
    }

    #[test]
    fn arguments_resolve() {
        let r = FieldRef::parse("proc.aname[2]").unwrap();
        assert_eq!(r.field, Field::ProcAname);
        assert_eq!(r.arg, Some(FieldArg::Index(2)));
        assert_eq!(r.to_string(), "proc.aname[2]");
        let r = FieldRef::parse("evt.arg.flags").unwrap();
        assert_eq!(r, FieldRef::parse("evt.arg[flags]").unwrap());
        assert_eq!(r.to_string(), "evt.arg.flags");
        assert_eq!(
            FieldRef::parse("evt.arg[0]").unwrap().arg,
            Some(FieldArg::Index(0))
        );
        assert_eq!(
            FieldRef::parse("fd.sip.name").unwrap().field,
            Field::FdSipName
        );
        assert_eq!(
            FieldRef::parse("k8s.pod.label[app.kubernetes.io/name]")
                .unwrap()
                .to_string(),
            "k8s.pod.label[app.kubernetes.io/name]"
        );
        assert!(matches!(
            FieldRef::parse("proc.nope"),
            Err(FieldError::Unknown(_))
        ));
        assert!(matches!(
            FieldRef::parse("proc.name[1]"),
            Err(FieldError::UnexpectedArg { .. })
        ));
        assert!(matches!(
            FieldRef::parse("proc.aname[x]"),
            Err(FieldError::BadArg { .. })
        ));
        assert!(matches!(
            FieldRef::parse("evt.arg"),
            Err(FieldError::MissingArg { .. })
        ));
    }
}
