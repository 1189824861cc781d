//! What habitd costs real servers and process spawning on this machine (issue 13).
//!
//! Two servers run in containers on the host network, each pinned to the last CPU, their
//! clients pinned to the first: nginx serving a static page (`wrk -t1 -c16 --latency`) and
//! redis answering GETs (`redis-benchmark -t get --csv`). Their images are built here from the
//! host's Debian packages (`nginx`, `redis-server`; no registry). Beside them, two spawn-heavy
//! workloads on the host: a loop of fork + exec(`/bin/true`) + wait, and a shell script running
//! short commands (`/bin/true`, `cat`, `/bin/echo`).
//!
//! Configurations, measured side by side in alternating rounds (the order rotates every round)
//! so that the machine's drift hits all alike:
//!
//! - `nothing`: no BPF program attached;
//! - `empty`: the empty `tp_btf/sys_enter` program (the floor: any probe on sys_enter costs this);
//! - `learn`: the habitd binary, every workload learning (default windows), sequences on;
//! - `detect-noseq`: habitd with both servers' baselines learned (a store prepared once at the
//!   start), `probes.sequences = false`;
//! - `detect`: the same with the defaults (sequences on).
//!
//! Reported per workload and configuration: the median over rounds of throughput (requests/s;
//! spawns: iterations/s) and of p99 latency, their change against `nothing` and against
//! `empty`, habitd's own CPU seconds per sample, and with `kernel.bpf_stats_enabled` the run
//! count and mean run time of each of habitd's programs during the sample (what to optimise).
//! Written to `target/servers.json` and `target/servers.md`.
//!
//!     sudo -E cargo bench --bench servers                    # 3 rounds, 4 s per server sample
//!     sudo -E cargo bench --bench servers -- --rounds 5 --seconds 8
//!     cargo test --bench servers -- --smoke                  # CI: 1 short round, no timing claims
//!
//! habitd is `target/release/habitd` when present (build it with `cargo build --release`),
//! else `target/debug/habitd` (the report says which: a debug build's user space is slower, its
//! probes are the same object). Needs root, BTF, Docker, wrk, redis-benchmark (redis-tools) and
//! the packages nginx and redis-server; refuses with what to install.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::Habitd;
use habit_probes::{ProbeConfig, Probes};
use serde_json::{Value, json};

const USAGE: &str = "usage: servers [--rounds N] [--seconds S] [--smoke] [--json PATH]
  --rounds N    alternating rounds (default 3)
  --seconds S   wrk duration per nginx sample (default 4); redis runs 15000 GETs per second of it
  --smoke       one round of 1 s samples and few spawns (CI: checks that it runs, claims nothing)
  --json PATH   results (default target/servers.json; the table beside it as .md)
  --habitd BIN  the habitd measured (default: target/release/habitd, else target/debug/habitd)
  --compare BIN another habitd binary (e.g. the previous release's) measured in the same rounds,
                learning and detecting with the defaults (its store is prepared by this one)
run it with: sudo -E cargo bench --bench servers -- [FLAGS]";

const NGINX_PORT: u16 = 18_080;
const REDIS_PORT: u16 = 16_379;
const HABITD_PORT: u16 = 19_477;
const PREFIX: &str = "habitd-bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Nothing,
    Empty,
    Learn,
    DetectNoSeq,
    Detect,
    /// `--compare`'s habitd, learning and detecting with the defaults.
    LearnOther,
    DetectOther,
}

impl Config {
    /// The configurations of a run: `--compare` adds the other habitd's.
    fn all(compare: bool) -> Vec<Config> {
        let mut all = vec![
            Config::Nothing,
            Config::Empty,
            Config::Learn,
            Config::DetectNoSeq,
            Config::Detect,
        ];
        if compare {
            all.extend([Config::LearnOther, Config::DetectOther]);
        }
        all
    }

    fn key(self) -> &'static str {
        match self {
            Config::Nothing => "nothing",
            Config::Empty => "empty",
            Config::Learn => "learn",
            Config::DetectNoSeq => "detect-noseq",
            Config::Detect => "detect",
            Config::LearnOther => "learn-compared",
            Config::DetectOther => "detect-compared",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Nothing => "nothing attached",
            Config::Empty => "empty sys_enter program (floor)",
            Config::Learn => "habitd learning, sequences on",
            Config::DetectNoSeq => "habitd detecting, sequences off",
            Config::Detect => "habitd detecting, defaults",
            Config::LearnOther => "--compare habitd learning, sequences on",
            Config::DetectOther => "--compare habitd detecting, defaults",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Nginx,
    Redis,
    Spawn,
    Shell,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Nginx,
        Workload::Redis,
        Workload::Spawn,
        Workload::Shell,
    ];

    fn key(self) -> &'static str {
        match self {
            Workload::Nginx => "nginx",
            Workload::Redis => "redis",
            Workload::Spawn => "spawn",
            Workload::Shell => "shell",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Nginx | Workload::Redis => "req/s",
            Workload::Spawn => "spawns/s",
            Workload::Shell => "scripts/s",
        }
    }
}

struct Args {
    rounds: usize,
    seconds: u64,
    smoke: bool,
    json: PathBuf,
    /// Another habitd binary measured in the same rounds (e.g. the previous release).
    compare: Option<PathBuf>,
    /// The habitd binary measured (default: the workspace's release build, else debug).
    habitd: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        rounds: 3,
        seconds: 4,
        smoke: false,
        json: PathBuf::from("target/servers.json"),
        compare: None,
        habitd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--rounds" => args.rounds = value("--rounds")?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => {
                args.seconds = value("--seconds")?.parse().map_err(|e| format!("{e}"))?
            }
            "--json" => args.json = value("--json")?.into(),
            "--compare" => args.compare = Some(value("--compare")?.into()),
            "--habitd" => args.habitd = Some(value("--habitd")?.into()),
            "--smoke" => args.smoke = true,
            // `cargo bench` passes --bench.
            "--bench" => {}
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.smoke {
        args.rounds = 1;
        args.seconds = 1;
    }
    if args.rounds == 0 || args.seconds == 0 {
        return Err("--rounds and --seconds must be at least 1".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    common::main_with("servers", USAGE, parse_args, run)
}

/// Checks what the benchmark needs, with what to install.
fn preflight() -> Result<(), String> {
    for (tool, package) in [
        ("wrk", "wrk"),
        ("redis-benchmark", "redis-tools"),
        ("docker", "docker.io"),
        ("/usr/sbin/nginx", "nginx"),
        ("/usr/bin/redis-server", "redis-server"),
        ("taskset", "util-linux"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("{tool} is missing: apt-get install {package}"));
        }
    }
    if !Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Err("Docker is not running: start dockerd".into());
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    preflight()?;
    let habitd = match &args.habitd {
        Some(bin) => bin.clone(),
        None => common::habitd_binary()?,
    };
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nginx = build_image("nginx")?;
    let redis = build_image("redis")?;
    let _servers = [
        Server::start("nginx", &nginx, NGINX_PORT)?,
        Server::start("redis", &redis, REDIS_PORT)?,
    ];
    let keys = [format!("docker.io/{nginx}"), format!("docker.io/{redis}")];
    eprintln!("== preparing the detection store (learning both servers under load)");
    let learned = work.path().join("learned");
    prepare_store(&habitd, &learned, &keys, args)?;
    let _stats = BpfStats::enable();

    let mut samples: BTreeMap<(Workload, Config), Vec<Sample>> = BTreeMap::new();
    let mut programs: BTreeMap<Config, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    // Other habitds' programs seen before a sample (the benchmark's own are detached then).
    let mut foreign = 0;
    for round in 0..args.rounds {
        let mut order = Config::all(args.compare.is_some());
        let n = order.len();
        order.rotate_left(round % n);
        for config in order {
            eprintln!("== round {} / {}: {}", round + 1, args.rounds, config.key());
            foreign = foreign.max(foreign_sys_enter_programs());
            let binary = match config {
                Config::LearnOther | Config::DetectOther => {
                    args.compare.as_deref().unwrap_or(&habitd)
                }
                _ => &habitd,
            };
            let holder = Holder::attach(config, binary, work.path(), &learned)?;
            // Let habitd's start-up (seeding, first descriptions) pass.
            std::thread::sleep(Duration::from_secs(if args.smoke { 1 } else { 3 }));
            let cpu_before = holder.cpu_seconds();
            let runs_before = program_stats(holder.pid());
            for workload in Workload::ALL {
                let sample = measure(workload, args)?;
                samples.entry((workload, config)).or_default().push(sample);
            }
            let cpu = holder.cpu_seconds() - cpu_before;
            for workload in Workload::ALL {
                if let Some(sample) = samples
                    .get_mut(&(workload, config))
                    .and_then(|v| v.last_mut())
                {
                    sample.habitd_cpu = cpu;
                }
            }
            let runs_after = program_stats(holder.pid());
            let entry = programs.entry(config).or_default();
            for (name, (count, ns)) in runs_after {
                let (c0, n0) = runs_before.get(&name).copied().unwrap_or((0, 0));
                let e = entry.entry(name).or_default();
                e.0 += count.saturating_sub(c0);
                e.1 += ns.saturating_sub(n0);
            }
            holder.stop()?;
        }
    }
    report(args, &habitd, &samples, &programs, foreign)
}

// ---------------------------------------------------------------------------------------------
// habitd and the floor
// ---------------------------------------------------------------------------------------------

/// A habitd config for the benchmark (alerts to a file: detection may alert on the clients'
/// first connections).
fn habitd_config(dir: &Path, data: &Path, extra: &str) -> Result<PathBuf, String> {
    let config = dir.join("habitd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:{HABITD_PORT}\"\nalerts = [\"file:{}\"]\n\
             log = \"warn\"\n{extra}",
            data.display(),
            dir.join("alerts.jsonl").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(config)
}

/// Learns both servers to stability under their clients' load, with second-scale windows, and
/// keeps the store for the detection configurations.
fn prepare_store(habitd: &Path, data: &Path, keys: &[String], args: &Args) -> Result<(), String> {
    let dir = data.with_extension("run");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = habitd_config(
        &dir,
        data,
        "[learning]\nmin = \"8s\"\nstable = \"6s\"\nmax = \"120s\"\ninterval = \"1s\"\n",
    )?;
    let habitd = Habitd::start(habitd, &config, &dir.join("habitd.log"), HABITD_PORT)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut stable = false;
    while Instant::now() < deadline && !stable {
        measure(Workload::Nginx, args)?;
        measure(Workload::Redis, args)?;
        let body = common::http_get(HABITD_PORT, "/api/v1/workloads").map(|(_, b)| b);
        let workloads: Value = body
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null);
        stable = keys.iter().all(|key| {
            workloads.as_array().is_some_and(|all| {
                all.iter()
                    .any(|w| w["key"] == *key && w["state"] == "stable")
            })
        });
    }
    habitd.stop()?;
    if stable {
        Ok(())
    } else {
        Err(format!(
            "the servers did not reach detection within 180 s (log: {})",
            dir.join("habitd.log").display()
        ))
    }
}

/// What is attached during one sample.
enum Holder {
    Nothing,
    Empty(Box<Probes>),
    Habitd(Habitd),
}

impl Holder {
    fn attach(
        config: Config,
        habitd: &Path,
        work: &Path,
        learned: &Path,
    ) -> Result<Holder, String> {
        let run = |name: &str, extra: &str, store: Option<&Path>| -> Result<Holder, String> {
            let dir = work.join(name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let data = dir.join("data");
            if let Some(store) = store {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(store)
                    .arg(&data)
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err("copying the prepared store failed".into());
                }
            }
            let config = habitd_config(&dir, &data, extra)?;
            Habitd::start(habitd, &config, &dir.join("habitd.log"), HABITD_PORT).map(Holder::Habitd)
        };
        match config {
            Config::Nothing => Ok(Holder::Nothing),
            Config::Empty => Probes::load(&ProbeConfig {
                self_tgid: 0,
                ring_buffer_bytes: 1 << 16,
                empty_only: true,
                bench_floor: habit_probes::BenchFloor::SysEnter,
                force_btf_sys_exit: false,
                object: None,
            })
            .map(|p| Holder::Empty(Box::new(p)))
            .map_err(|e| format!("loading the empty program: {e}")),
            Config::Learn | Config::LearnOther => run(config.key(), "", None),
            Config::DetectNoSeq => run(
                "detect-noseq",
                "[probes]\nsequences = false\n",
                Some(learned),
            ),
            Config::Detect | Config::DetectOther => run(config.key(), "", Some(learned)),
        }
    }

    /// The process whose BPF programs are this configuration's: habitd, or this benchmark.
    fn pid(&self) -> Option<u32> {
        match self {
            Holder::Habitd(habitd) => Some(habitd.pid()),
            Holder::Empty(_) => Some(std::process::id()),
            Holder::Nothing => None,
        }
    }

    /// habitd's user and system CPU seconds so far (0 for the others).
    fn cpu_seconds(&self) -> f64 {
        let Holder::Habitd(habitd) = self else {
            return 0.0;
        };
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", habitd.pid())).unwrap_or_default();
        // After the command's closing parenthesis: fields 14 and 15 (utime, stime) are the
        // 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    fn stop(self) -> Result<(), String> {
        match self {
            Holder::Habitd(habitd) => habitd.stop(),
            Holder::Empty(probes) => {
                drop(probes);
                Ok(())
            }
            Holder::Nothing => Ok(()),
        }
    }
}

/// `kernel.bpf_stats_enabled` on for the benchmark's life (restored when dropped).
struct BpfStats(Option<String>);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> BpfStats {
        let before = std::fs::read_to_string(Self::PATH).ok();
        let _ = std::fs::write(Self::PATH, "1");
        BpfStats(before)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(Self::PATH, before.trim());
        }
    }
}

/// (run count, run time ns) of each BPF program process `pid` holds, by name (not those of
/// another habitd that may be running: it would be counted in every configuration alike).
fn program_stats(pid: Option<u32>) -> BTreeMap<String, (u64, u64)> {
    let mut stats = BTreeMap::new();
    let Some(pid) = pid else {
        return stats;
    };
    let held: std::collections::HashSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let info = std::fs::read_to_string(fd.path()).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    for info in aya::programs::loaded_programs().flatten() {
        if !held.contains(&info.id()) {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_string();
        let e = stats.entry(name).or_insert((0, 0));
        e.0 += info.run_count();
        e.1 += info.run_time().as_nanos() as u64;
    }
    stats
}

/// Tracing programs on sys_enter that are not this benchmark's (another habitd, a test run):
/// they slow every configuration and the report says so.
fn foreign_sys_enter_programs() -> usize {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some("habit_sys_enter"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

/// Builds `habitd-bench/APP` from the host's packages (reused when the inputs are the same).
fn build_image(app: &str) -> Result<String, String> {
    let script = format!(
        r#"set -euo pipefail
app={app}
versions=$(dpkg-query -W -f '${{Package}}=${{Version}}\n' nginx redis-server 2>/dev/null || true)
tag=$( (echo "$versions"; echo {NGINX_PORT} {REDIS_PORT}; echo v1) | sha256sum | cut -c1-12)
image={PREFIX}/$app:$tag
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT; cd "$root"
mkdir -p etc tmp run var/log lib64 lib/x86_64-linux-gnu; chmod 1777 tmp
printf 'root:x:0:0::/root:/bin/false\nwww-data:x:33:33::/var/www:/bin/false\n' > etc/passwd
printf 'root:x:0:\nwww-data:x:33:\n' > etc/group
copy() {{ for f in "$@"; do mkdir -p ".$(dirname "$f")"; cp -L "$f" ".$f";
  ldd "$f" | grep -o '/[^ ]*' | while read -r lib; do mkdir -p ".$(dirname "$lib")"; cp -L "$lib" ".$lib"; done; done; }}
case $app in
nginx)
  copy /usr/sbin/nginx
  mkdir -p etc/nginx var/log/nginx var/lib/nginx/body var/www/html
  cp /etc/nginx/mime.types etc/nginx/
  cat > etc/nginx/nginx.conf <<'EOF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 15;
    client_body_temp_path /var/lib/nginx/body;
    server {{ listen 127.0.0.1:{NGINX_PORT}; root /var/www/html; location / {{ try_files $uri =404; }} }}
}}
EOF
  echo '<html><body><h1>habitd bench</h1><p>a static page</p></body></html>' > var/www/html/index.html
  chown -R 33:33 var/lib/nginx var/log/nginx
  cmd='["/usr/sbin/nginx", "-g", "daemon off;"]' ;;
redis)
  copy /usr/bin/redis-server
  mkdir -p var/lib/redis
  cmd='["/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", "{REDIS_PORT}", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis"]' ;;
esac
tar -C "$root" -c . | docker import --change "CMD $cmd" - "$image" >/dev/null
echo "$image"
"#
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "building the {app} image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(str::to_string)
        .ok_or_else(|| format!("building the {app} image printed no name"))
}

/// A server container on the host network, pinned to the last CPU; removed when dropped.
struct Server(String);

impl Server {
    fn start(app: &str, image: &str, port: u16) -> Result<Server, String> {
        let name = format!("{PREFIX}-{app}");
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let cpu = last_cpu();
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name, "--network", "host"])
            .arg(format!("--cpuset-cpus={cpu}"))
            .arg(image)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "docker run {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let server = Server(name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{app} does not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn last_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Sample {
    /// Requests (or iterations) per second.
    throughput: f64,
    /// p99 latency in milliseconds (servers only).
    p99_ms: Option<f64>,
    /// habitd's CPU seconds during the sample's configuration (all workloads of the round).
    habitd_cpu: f64,
}

fn measure(workload: Workload, args: &Args) -> Result<Sample, String> {
    match workload {
        Workload::Nginx => wrk(args.seconds),
        Workload::Redis => redis_benchmark(args.seconds * 15_000),
        Workload::Spawn => spawn_loop(if args.smoke { 100 } else { 2_000 }),
        Workload::Shell => shell_loop(if args.smoke { 5 } else { 40 }),
    }
}

/// The client runs on the first CPU (the servers on the last).
fn client(program: &str) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "0", program]);
    c
}

fn output(mut command: Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wrk(seconds: u64) -> Result<Sample, String> {
    let mut c = client("wrk");
    c.args(["-t1", "-c16", "--latency"])
        .arg(format!("-d{seconds}s"))
        .arg(format!("http://127.0.0.1:{NGINX_PORT}/index.html"));
    let text = output(c)?;
    let throughput = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()));
    Ok(Sample {
        throughput,
        p99_ms,
        habitd_cpu: 0.0,
    })
}

/// wrk's "1.23ms", "456.00us", "1.02s" in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn redis_benchmark(requests: u64) -> Result<Sample, String> {
    let mut c = client("redis-benchmark");
    c.args(["-h", "127.0.0.1", "-t", "get", "--csv"])
        .args(["-p", &REDIS_PORT.to_string()])
        .args(["-n", &requests.to_string()]);
    let text = output(c)?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    let row: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .ok_or_else(|| format!("no GET row in redis-benchmark's output:\n{text}"))?
        .split(',')
        .skip(1)
        .filter_map(|v| v.trim_matches('"').parse().ok())
        .collect();
    Ok(Sample {
        throughput: row.first().copied().unwrap_or(0.0),
        p99_ms: row.get(5).copied(),
        habitd_cpu: 0.0,
    })
}

/// fork + exec(/bin/true) + wait, `n` times, on the first CPU: iterations per second.
fn spawn_loop(n: u32) -> Result<Sample, String> {
    on_first_cpu(|| {
        for _ in 0..n {
            let status = Command::new("/bin/true")
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("/bin/true failed".into());
            }
        }
        Ok(n)
    })
}

/// A shell script of 20 short commands (4 programs × 5), `n` times: scripts per second.
fn shell_loop(n: u32) -> Result<Sample, String> {
    let script = "for i in 1 2 3 4 5; do /bin/true; cat /dev/null; /bin/echo $i >/dev/null; \
                  ls / >/dev/null; done";
    on_first_cpu(|| {
        for _ in 0..n {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            output(c)?;
        }
        Ok(n)
    })
}

/// Runs `work` (which returns its iterations) with this thread, and so the processes it
/// spawns, on the first CPU; iterations per second.
fn on_first_cpu(work: impl FnOnce() -> Result<u32, String>) -> Result<Sample, String> {
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers and sizes; pid 0 is this
    // thread.
    let (all, first) = unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut all);
        let mut first: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut first);
        (all, first)
    };
    let set = |set: &libc::cpu_set_t| {
        // SAFETY: as above.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    };
    set(&first);
    let start = Instant::now();
    let result = work();
    let elapsed = start.elapsed().as_secs_f64();
    set(&all);
    Ok(Sample {
        throughput: f64::from(result?) / elapsed,
        p99_ms: None,
        habitd_cpu: 0.0,
    })
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn change(value: f64, against: f64) -> f64 {
    (value / against - 1.0) * 100.0
}

fn report(
    args: &Args,
    habitd: &Path,
    samples: &BTreeMap<(Workload, Config), Vec<Sample>>,
    programs: &BTreeMap<Config, BTreeMap<String, (u64, u64)>>,
    foreign: usize,
) -> Result<(), String> {
    let mut md = format!(
        "# habitd on real servers ({} round(s), {} s per server sample{}; habitd: {}{})\n\n\
         Medians over rounds; changes against nothing attached and against the empty \
         program (the floor).{}\n\n\
         | workload | configuration | throughput | vs nothing | vs floor | p99 ms | p99 vs floor | habitd CPU s |\n\
         |---|---|---|---|---|---|---|---|\n",
        args.rounds,
        args.seconds,
        if args.smoke { ", smoke: no claims" } else { "" },
        habitd.display(),
        args.compare
            .as_ref()
            .map(|p| format!("; compared: {}", p.display()))
            .unwrap_or_default(),
        if foreign > 0 {
            format!(
                " **{foreign} other habitd probe set(s) were attached during the run: every \
                 configuration paid for them, the figures are not clean.**"
            )
        } else {
            String::new()
        }
    );
    let mut rows = Vec::new();
    for workload in Workload::ALL {
        let stat = |config: Config, f: &dyn Fn(&Sample) -> Option<f64>| {
            median(
                samples
                    .get(&(workload, config))
                    .map(|v| v.iter().filter_map(f).collect())
                    .unwrap_or_default(),
            )
        };
        let nothing = stat(Config::Nothing, &|s| Some(s.throughput));
        let floor = stat(Config::Empty, &|s| Some(s.throughput));
        let floor_p99 = stat(Config::Empty, &|s| s.p99_ms);
        for config in Config::all(args.compare.is_some()) {
            let throughput = stat(config, &|s| Some(s.throughput));
            let p99 = stat(config, &|s| s.p99_ms);
            let cpu = stat(config, &|s| Some(s.habitd_cpu));
            md.push_str(&format!(
                "| {} | {} | {:.0} {} | {:+.1} % | {:+.1} % | {} | {} | {:.2} |\n",
                workload.key(),
                config.label(),
                throughput,
                workload.unit(),
                change(throughput, nothing),
                change(throughput, floor),
                if p99.is_nan() {
                    "-".into()
                } else {
                    format!("{p99:.3}")
                },
                if p99.is_nan() {
                    "-".into()
                } else {
                    format!("{:+.1} %", change(p99, floor_p99))
                },
                cpu
            ));
            rows.push(json!({
                "workload": workload.key(),
                "config": config.key(),
                "throughput": throughput,
                "unit": workload.unit(),
                "vs_nothing_pct": change(throughput, nothing),
                "vs_floor_pct": change(throughput, floor),
                "p99_ms": if p99.is_nan() { Value::Null } else { json!(p99) },
                "habitd_cpu_s": cpu,
                "samples": samples.get(&(workload, config)).map(|v| {
                    v.iter().map(|s| json!({"throughput": s.throughput, "p99_ms": s.p99_ms})).collect::<Vec<_>>()
                }),
            }));
        }
    }
    md.push_str(
        "\nhabitd's programs during each configuration's samples (kernel.bpf_stats_enabled; \
         all rounds):\n\n| configuration | program | runs | mean ns/run | total ms |\n|---|---|---|---|---|\n",
    );
    let mut program_rows = Vec::new();
    for (config, stats) in programs {
        let mut by_time: Vec<_> = stats.iter().filter(|(_, (runs, _))| *runs > 0).collect();
        by_time.sort_by_key(|(_, (_, ns))| std::cmp::Reverse(*ns));
        for (name, (runs, ns)) in by_time {
            md.push_str(&format!(
                "| {} | {name} | {runs} | {:.0} | {:.1} |\n",
                config.key(),
                *ns as f64 / *runs as f64,
                *ns as f64 / 1e6
            ));
            program_rows
                .push(json!({"config": config.key(), "program": name, "runs": runs, "ns": ns}));
        }
    }
    println!("{md}");
    let doc = json!({
        "rounds": args.rounds,
        "seconds": args.seconds,
        "smoke": args.smoke,
        "habitd": habitd.display().to_string(),
        "compared": args.compare.as_ref().map(|p| p.display().to_string()),
        "foreign_habitd_probes": foreign,
        "results": rows,
        "programs": program_rows,
    });
    common::write_report(&args.json, &doc, &md)
}
