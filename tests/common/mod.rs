//! Shared harness of the end-to-end tests: prerequisites, a real `habitd` process, test images
//! and containers. Everything cleans up in `Drop`, also when a test panics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// Says on standard error that `test` did not run and why (`SKIPPED: test: why`). Only
/// missing outside *data* (a file from outside the repository) may skip a test; missing root,
/// BTF or Docker fail it. The line is written to the process's standard error directly, not
/// through `eprintln!`, so that `cargo test` shows it without `--nocapture`.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {why}");
}

/// Fails (never skips) with what to install when a prerequisite is missing.
pub fn require_root_and_bpf() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests load eBPF programs: run them as root (sudo -E cargo test)"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "the kernel has no BTF (/sys/kernel/btf/vmlinux): habitd needs CONFIG_DEBUG_INFO_BTF=y"
    );
}

pub fn require_docker() {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "Docker is not reachable: install it (apt-get install docker.io) and start dockerd \
         (`dockerd &`); .ci/run does both"
    );
}

/// The `habitd` binary next to the test executable (built by `cargo build --workspace`).
pub fn habitd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("habitd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test \
         command does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The optimized `habitd` (`target/release/habitd`), for tests whose claims are about its
/// throughput: a debug build handles events about ten times slower. Fails when it is missing,
/// or older than the sources it is built from (a stale binary would measure old code).
pub fn release_habitd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/TEST -> target/release/habitd
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let bin = target.join("release").join("habitd");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --release -p habitd` before this test \
                 (scripts/test.sh does)",
                bin.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut dirs: Vec<PathBuf> = ["daemon", "probes", "models", "profiles"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let (path, meta) = (entry.path(), entry.metadata());
            let Ok(meta) = meta else { continue };
            if meta.is_dir() {
                dirs.push(path);
            } else if let Ok(t) = meta.modified()
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, path));
            }
        }
    }
    if let Some((t, path)) = newest {
        assert!(
            t <= built,
            "{} is older than {}: run `cargo build --release -p habitd` before this test",
            bin.display(),
            path.display()
        );
    }
    bin
}

/// A running `habitd run --print-events`, its events collected as JSON values, handed line by
/// line to a callback ([`Daemon::start_streaming`]) or streamed to `dir/events.jsonl` for long
/// runs ([`Daemon::start_in_streaming`]).
pub struct Daemon {
    child: Child,
    pub port: u16,
    /// Holds the config, the store (`data/`), the log, the token and the alerts file.
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    events: Arc<Mutex<Vec<Value>>>,
    /// Where the events go instead of memory (None: kept in `events`).
    events_file: Option<PathBuf>,
    /// The thread reading the daemon's standard output.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A handler of printed lines (each without its newline).
pub type LineHandler = Box<dyn FnMut(&[u8]) + Send>;

/// Where the printed events go.
enum Printed {
    /// Parsed and kept (`Daemon::events`).
    Collect(Arc<Mutex<Vec<Value>>>),
    /// Each line (without its newline) handed to a callback, nothing kept.
    Stream(LineHandler),
    /// Each line written to a file as it comes, nothing kept ([`Daemon::start_in_streaming`]).
    File(PathBuf),
    /// Not printed (`print_events = false`).
    Off,
}

/// The bearer token the test daemons accept.
pub const TOKEN: &str = "e2e-secret-token";

impl Daemon {
    /// Starts habitd in a new temporary directory (see [`Daemon::start_in`]).
    pub fn start(extra_config: &str) -> Daemon {
        let owned = tempfile::tempdir().unwrap();
        let mut d = Daemon::start_in(owned.path(), extra_config);
        d._owned = Some(owned);
        d
    }

    /// Starts habitd on the store and files of `dir` with `extra_config` (TOML) appended to
    /// a test config (alerts to `dir/alerts.jsonl`, token in `dir/token`), and waits for
    /// /healthz to answer 200 (probes attached).
    pub fn start_in(dir: &Path, extra_config: &str) -> Daemon {
        let events = Arc::new(Mutex::new(Vec::new()));
        Daemon::spawn(
            &habitd_bin(),
            dir,
            extra_config,
            Printed::Collect(events.clone()),
            events,
        )
    }

    /// Like [`Daemon::start_in`], without `--print-events` (as in production).
    pub fn start_in_quiet(dir: &Path, extra_config: &str) -> Daemon {
        Daemon::spawn(
            &habitd_bin(),
            dir,
            extra_config,
            Printed::Off,
            Arc::new(Mutex::new(Vec::new())),
        )
    }

    /// Like [`Daemon::start_in`], running `bin` (e.g. [`release_habitd_bin`], for a test whose
    /// claim is a latency: a debug build handles events about ten times slower).
    pub fn start_bin_in(bin: &Path, dir: &Path, extra_config: &str) -> Daemon {
        let events = Arc::new(Mutex::new(Vec::new()));
        Daemon::spawn(
            bin,
            dir,
            extra_config,
            Printed::Collect(events.clone()),
            events,
        )
    }

    /// Like [`Daemon::start_in`], but every `--print-events` line is written to
    /// `dir/events.jsonl` as it comes and nothing is kept in memory: a long run under load
    /// prints millions of events (one eval run once grew to 22 GB holding them as values).
    /// Read them back with [`Daemon::for_each_event`].
    pub fn start_in_streaming(dir: &Path, extra_config: &str) -> Daemon {
        Daemon::spawn(
            &habitd_bin(),
            dir,
            extra_config,
            Printed::File(dir.join("events.jsonl")),
            Arc::new(Mutex::new(Vec::new())),
        )
    }

    /// Starts `bin` (e.g. [`release_habitd_bin`]) in a new temporary directory like
    /// [`Daemon::start`], handing every printed line to `on_line` as it is read (a 1 MiB
    /// buffer): nothing is kept, so a test of millions of events stays within bounded memory.
    /// Without `on_line`, habitd runs without `--print-events`, as in production.
    pub fn start_streaming(bin: &Path, extra_config: &str, on_line: Option<LineHandler>) -> Daemon {
        let owned = tempfile::tempdir().unwrap();
        let printed = match on_line {
            Some(f) => Printed::Stream(f),
            None => Printed::Off,
        };
        let mut d = Daemon::spawn(
            bin,
            owned.path(),
            extra_config,
            printed,
            Arc::new(Mutex::new(Vec::new())),
        );
        d._owned = Some(owned);
        d
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        extra_config: &str,
        printed: Printed,
        events: Arc<Mutex<Vec<Value>>>,
    ) -> Daemon {
        require_root_and_bpf();
        let port = free_port();
        let config = dir.join("habitd.toml");
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{data}\"\nlisten = \"127.0.0.1:{port}\"\nprint_events = {print}\n\
                 alerts = [\"file:{alerts}\"]\napi_token_file = \"{token}\"\n{extra_config}",
                print = !matches!(printed, Printed::Off),
                data = dir.join("data").display(),
                alerts = dir.join("alerts.jsonl").display(),
                token = dir.join("token").display(),
            ),
        )
        .unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("habitd.log"))
            .unwrap();
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let events_file = match &printed {
            Printed::File(path) => Some(path.clone()),
            _ => None,
        };
        let reader = std::thread::spawn(move || match printed {
            Printed::Collect(sink) => {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        sink.lock().unwrap().push(v);
                    }
                }
            }
            Printed::Stream(mut on_line) => {
                let mut reader = BufReader::with_capacity(1 << 20, stdout);
                let mut line = Vec::with_capacity(16 << 10);
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => on_line(line.strip_suffix(b"\n").unwrap_or(&line)),
                    }
                }
            }
            Printed::File(path) => {
                use std::io::Write as _;
                let mut file = std::io::BufWriter::with_capacity(
                    1 << 16,
                    std::fs::File::create(path).unwrap(),
                );
                let mut last_flush = Instant::now();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(file, "{line}");
                    if last_flush.elapsed() > Duration::from_millis(200) {
                        let _ = file.flush();
                        last_flush = Instant::now();
                    }
                }
                let _ = file.flush();
            }
            Printed::Off => {
                let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
            }
        });
        let daemon = Daemon {
            child,
            port,
            dir: dir.to_path_buf(),
            _owned: None,
            events,
            events_file,
            reader: Some(reader),
        };
        daemon.wait_healthy(Duration::from_secs(30));
        daemon
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the daemon has used so far (user + system, from /proc).
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are the 12th
        // and 13th of them.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: u64 = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 10 s) and waits until everything it
    /// printed was read.
    pub fn stop(&mut self) {
        self.terminate();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Kills the daemon with SIGKILL (no chance to save anything) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Alerts written to the file sink so far: complete lines only, as a log shipper reads them
    /// (a batch being written can be seen in part, so the text after the last newline is left
    /// for the next call).
    pub fn alerts(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("alerts.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("alert line {l:?} is not JSON: {e}"))
            })
            .collect()
    }

    /// Waits for an alert about `workload` matching `pred`.
    pub fn wait_alert(
        &self,
        what: &str,
        workload: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self
                .alerts()
                .into_iter()
                .find(|a| a["habitd"]["workload"] == workload && pred(a))
            {
                return a;
            }
            if Instant::now() > deadline {
                let mine = alerts_of(self, workload);
                panic!(
                    "no alert for {what} on {workload} within {timeout:?}; its alerts: {mine:#?}\nhabitd log tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /api/v1/workloads`, the entry of `key` (None if absent).
    pub fn workload(&self, key: &str) -> Option<Value> {
        let (status, body) = self.get("/api/v1/workloads")?;
        assert_eq!(status, 200, "{body}");
        let all: Value = serde_json::from_str(&body).unwrap();
        all.as_array()?.iter().find(|w| w["key"] == key).cloned()
    }

    /// Waits until workload `key` is in `state`; returns its API entry.
    pub fn wait_state(&self, key: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.workload(key);
            if let Some(w) = &w
                && w["state"] == state
            {
                return w.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "workload {key} not {state} within {timeout:?}: {w:?}\nhabitd log tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("habitd did not become healthy:\n{}", self.log());
    }

    /// A plain HTTP/1.0 GET against the daemon: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_request(self.port, "GET", path, &[], "")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("habitd.log")).unwrap_or_default()
    }

    /// Output fields of every event seen so far (empty for a streaming daemon: use
    /// [`Daemon::for_each_event`]).
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Calls `f` with every event seen so far, one at a time (read back from
    /// `dir/events.jsonl` for a streaming daemon), so that memory stays bounded.
    pub fn for_each_event(&self, mut f: impl FnMut(&str, &Value)) {
        match &self.events_file {
            Some(p) => for_each_event_in(p, f),
            None => {
                for v in self.events.lock().unwrap().iter() {
                    f(&v.to_string(), v);
                }
            }
        }
    }

    /// Waits until `pred` holds for some event's output fields; returns it.
    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .map(|e| &e["output_fields"])
                .find(|f| pred(f))
            {
                return v.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no event matching {what} within {timeout:?}; events the kernel dropped \
                     (non-zero habitd_events_dropped_total samples, as of habitd's last \
                     counters read, every probes.counters_interval): {:?}; habitd log:\n{}",
                    self.nonzero_drops(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The non-zero `habitd_events_dropped_total` samples, as exposed: a missing event is
    /// explained by a drop (the host was busier than the daemon), or it is a bug.
    pub fn nonzero_drops(&self) -> Vec<String> {
        let (_, body) = self.get("/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with("habitd_events_dropped_total{"))
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the daemon has handled every event up to `until` (its
    /// `habitd_events_handled_until_timestamp_seconds`); returns how long that took, or `None`
    /// if it had not after `timeout` (the daemon is behind the kernel).
    pub fn wait_handled_until(&self, until: SystemTime, timeout: Duration) -> Option<Duration> {
        let want = until
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.metric("habitd_events_handled_until_timestamp_seconds") >= want {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Current value of a Prometheus sample (`name{labels}` exactly as exposed), 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics").unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Daemon {
    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's kernel-side event drops (`habitd_events_dropped_total` samples), to tell a
/// lost event from a misattributed one when a test misses an event.
pub fn drops(daemon: &Daemon) -> String {
    let (_, body) = daemon.get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("habitd_events_dropped_total") && !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Calls `f` with every event (line and value) of a file of `--print-events` lines, one at a
/// time (the events of a streaming daemon, also after it stopped: `dir/events.jsonl`).
pub fn for_each_event_in(path: &Path, mut f: impl FnMut(&str, &Value)) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            f(&line, &v);
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Minimal HTTP/1.0 client (tests must not depend on the code under test).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// `tests/fixtures/NAME.c` compiled statically (for the test images), once per test binary.
pub fn static_helper(name: &str) -> PathBuf {
    static_helper_with(name, &[])
}

/// [`static_helper`] with extra compiler flags (`-pthread`, `-nostdlib`).
pub fn static_helper_with(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let status = Command::new("cc")
        .args(["-static", "-O2"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc is needed to build the test helpers: apt-get install gcc libc6-dev");
    assert!(status.success(), "compiling {} failed", src.display());
    built.push((name.to_owned(), out.clone()));
    out
}

/// The static `actions` helper (tests/fixtures/actions.c).
pub fn actions_binary() -> PathBuf {
    static_helper("actions")
}

/// `habitctl` next to the test executable (built by `cargo build --workspace`).
pub fn habitctl_bin() -> PathBuf {
    let bin = habitd_bin().with_file_name("habitctl");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// One HTTP/1.0 GET of `path` from a test container's web server (port 8080): the response.
pub fn web_get(ip: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect((ip, 8080)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The host's static busybox, which the test images are built from.
pub fn static_busybox() -> &'static Path {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static (the test images are built from it)"
    );
    busybox
}

/// Imports the directory `root` as image `name` with `docker import` (no registry is
/// reachable here), passing `options` (e.g. `--change`, `LABEL k=v`).
pub fn import_rootfs(root: &Path, name: &str, options: &[&str]) {
    require_docker();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new("docker")
        .arg("import")
        .args(options)
        .args(["-", name])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "tar of {} failed",
        root.display()
    );
    assert!(
        out.status.success(),
        "building test image {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A local image made from the host's static busybox, with the `actions` helper at
/// /bin/actions and a small web root in /www.
pub fn busybox_image(tag: &str) -> String {
    let name = format!("habitd-e2e/busybox:{tag}");
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {root}; mkdir -p bin etc tmp www; cp {busybox} bin/; \
         for a in sh cat ls sleep wget httpd nc echo id true grep head; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo e2e > etc/hostname; \
         echo hello > www/index.html; echo secret > www/secret.html; cp {actions} bin/actions",
        root = root.path().display(),
        busybox = static_busybox().display(),
        actions = actions_binary().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "preparing the root of {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    import_rootfs(root.path(), &name, &[]);
    name
}

/// A container removed on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    pub fn run(image: &str, args: &[&str]) -> Container {
        Container::run_with(&[], image, args)
    }

    /// `docker run -d --rm OPTS IMAGE ARGS`.
    pub fn run_with(opts: &[&str], image: &str, args: &[&str]) -> Container {
        let out = Command::new("docker")
            .args(["run", "-d", "--rm"])
            .args(opts)
            .arg(image)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }

    /// The container's IP address on Docker's bridge.
    pub fn ip(&self) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &self.id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        self.exec_with(&[], args)
    }

    /// `docker exec OPTS ID ARGS` (e.g. `-d` to start it in the background).
    pub fn exec_with(&self, opts: &[&str], args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("exec")
            .args(opts)
            .arg(&self.id)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Additions of the application evaluation (tests/eval_apps.rs, issue 11)
// ---------------------------------------------------------------------------------------------

/// The alerts written so far about workload `key`.
pub fn alerts_of(daemon: &Daemon, key: &str) -> Vec<Value> {
    daemon
        .alerts()
        .into_iter()
        .filter(|a| a["habitd"]["workload"] == key)
        .collect()
}

/// Whether alert `a` names a novel item of `dimension` containing `item_part`.
pub fn has_novel(a: &Value, dimension: &str, item_part: &str) -> bool {
    a["habitd"]["novel"].as_array().is_some_and(|n| {
        n.iter().any(|x| {
            x["dimension"] == dimension && x["item"].as_str().is_some_and(|i| i.contains(item_part))
        })
    })
}

/// Parses the RFC 3339 UTC times habitd writes (`2025-01-02T03:04:05.123456789Z`).
pub fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    use std::time::UNIX_EPOCH;
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

impl Daemon {
    /// Waits until workload `key` exists and is no longer in `state`; returns its API entry.
    pub fn wait_state_not(&self, key: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.workload(key);
            if let Some(w) = &w
                && w["state"] != state
            {
                return w.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "workload {key} still {state} (or absent) after {timeout:?}: {w:?}\nhabitd log tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `t` as RFC 3339 UTC with nanoseconds (the inverse of [`parse_rfc3339`]).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// A workload's normal life: `request` made every 200 ms on a thread, until dropped.
pub struct ClientLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(mut request: impl FnMut() + Send + 'static) -> ClientLoop {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                request();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        ClientLoop {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
