//! habitd's memory with many workloads (issue 13: 200 workloads in 100 MiB).
//!
//! Starts habitd (second-scale learning windows), then N busybox containers, each of its own
//! image repository (`habitd-scale/wK`, so N workloads; distinct repositories, because tags of
//! one repository would inherit each other's baseline), each doing a little of everything a
//! service does every second (a program run, files read, a syscall mix). Waits until every
//! workload is stable, lets detection run, then reports:
//!
//! - habitd's resident memory (VmRSS, and VmHWM, its peak) idle before the containers, while
//!   learning, and after learning in detection; the increase per workload;
//! - the kernel maps' memory (`memlock` of each map habitd holds, from /proc/PID/fdinfo) and
//!   the 6-grams valued in the kernel map (`habitd_sequence_kernel_grams`).
//!
//! Written to `target/scale.json` and `target/scale.md`.
//!
//!     sudo -E cargo bench --bench scale                     # 200 workloads
//!     sudo -E cargo bench --bench scale -- --workloads 60
//!     sudo -E cargo bench --bench scale -- --compare /path/to/previous/habitd
//!     cargo test --bench scale -- --smoke                   # CI: 8 workloads, claims nothing
//!
//! habitd is `--habitd PATH`, else `target/release/habitd` when present, else
//! `target/debug/habitd` (the report says which: the debug build's memory is not the release
//! build's). `--compare PATH` measures another build (a previous release) in the same run, right
//! after this one, with the same images and containers' script: memory figures taken minutes
//! apart on a shared machine compare better than figures from different days. Needs root, BTF,
//! Docker and busybox-static.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use common::Habitd;
use serde_json::{Value, json};

const USAGE: &str =
    "usage: scale [--workloads N] [--habitd PATH] [--compare PATH] [--smoke] [--json PATH]
  --workloads N    containers, each its own image repository (default 200)
  --habitd PATH    the habitd binary to measure (default: this workspace's release build)
  --compare PATH   also measure this habitd binary (a previous release), right after
  --smoke          8 workloads (CI: checks that it runs, claims nothing)
  --json PATH      results (default target/scale.json; the table beside it as .md)
run it with: sudo -E cargo bench --bench scale -- [FLAGS]";

const PORT: u16 = 19_478;
const PREFIX: &str = "habitd-scale";

struct Args {
    workloads: usize,
    habitd: Option<PathBuf>,
    compare: Option<PathBuf>,
    smoke: bool,
    json: PathBuf,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        workloads: 200,
        habitd: None,
        compare: None,
        smoke: false,
        json: PathBuf::from("target/scale.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--workloads" => {
                args.workloads = value("--workloads")?
                    .parse()
                    .map_err(|e| format!("--workloads: {e}"))?
            }
            "--json" => args.json = value("--json")?.into(),
            "--habitd" => args.habitd = Some(value("--habitd")?.into()),
            "--compare" => args.compare = Some(value("--compare")?.into()),
            "--smoke" => args.smoke = true,
            "--bench" => {}
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.smoke {
        args.workloads = 8;
    }
    if args.workloads == 0 {
        return Err("--workloads must be at least 1".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    common::main_with("scale", USAGE, parse_args, run)
}

/// Removes the benchmark's containers when dropped (also on an error).
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for chunk in self.0.chunks(50) {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(chunk)
                .output();
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let this = match &args.habitd {
        Some(path) => path.clone(),
        None => common::habitd_binary()?,
    };
    let mut binaries = vec![this];
    binaries.extend(args.compare.clone());
    for bin in &binaries {
        if !bin.exists() {
            return Err(format!("no habitd binary at {}", bin.display()));
        }
    }
    let image = base_image()?;
    let mut runs = Vec::new();
    for bin in &binaries {
        eprintln!("== measuring {}", bin.display());
        runs.push(measure(bin, &image, args)?);
    }
    let mut md = format!(
        "# habitd with {} workloads ({})\n\n",
        args.workloads,
        if args.smoke {
            "smoke: claims nothing"
        } else {
            "full run"
        },
    );
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            md.push_str("\n## compared with\n\n");
        }
        md.push_str(&run.table(args.workloads));
    }
    println!("{md}");
    let mut doc = runs[0].json(args);
    if let Some(other) = runs.get(1) {
        doc["compare"] = other.json(args);
    }
    common::write_report(&args.json, &doc, &md)
}

/// What one habitd binary used.
struct Run {
    habitd: PathBuf,
    idle: Memory,
    learning: Memory,
    detecting: Memory,
    learned_in: Duration,
    maps: BTreeMap<String, MapUse>,
    grams: f64,
}

impl Run {
    /// (detecting − idle) / workloads, in KiB.
    fn per_workload_kib(&self, workloads: usize) -> f64 {
        (self.detecting.rss_kib as f64 - self.idle.rss_kib as f64) / workloads as f64
    }

    fn maps_by_size(&self) -> Vec<(&String, &MapUse)> {
        let mut by_size: Vec<_> = self.maps.iter().collect();
        by_size.sort_by_key(|(_, m)| std::cmp::Reverse(m.memlock));
        by_size
    }

    fn table(&self, workloads: usize) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let maps_kib: u64 = self.maps.values().map(|m| m.memlock / 1024).sum();
        let mut md = format!(
            "habitd: {}\n\n\
             | phase | RSS MiB | peak (VmHWM) MiB |\n|---|---|---|\n\
             | idle, before the containers | {:.1} | {:.1} |\n\
             | learning (10 s after the last container started) | {:.1} | {:.1} |\n\
             | detecting, every workload stable ({:.0} s after) | {:.1} | {:.1} |\n\n\
             Per workload (detecting − idle) / {}: {:.0} KiB. Kernel maps held by habitd: {:.1} MiB \
             (memlock; the largest below). 6-grams valued in the kernel map: {:.0}.\n\n\
             | map | type | max entries | memlock KiB |\n|---|---|---|---|\n",
            self.habitd.display(),
            mib(self.idle.rss_kib),
            mib(self.idle.hwm_kib),
            mib(self.learning.rss_kib),
            mib(self.learning.hwm_kib),
            self.learned_in.as_secs_f64(),
            mib(self.detecting.rss_kib),
            mib(self.detecting.hwm_kib),
            workloads,
            self.per_workload_kib(workloads),
            maps_kib as f64 / 1024.0,
            self.grams,
        );
        for (name, m) in self.maps_by_size() {
            md.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                m.map_type,
                m.max_entries,
                m.memlock / 1024
            ));
        }
        md
    }

    fn json(&self, args: &Args) -> Value {
        json!({
            "workloads": args.workloads,
            "smoke": args.smoke,
            "habitd": self.habitd.display().to_string(),
            "rss_kib": {"idle": self.idle.rss_kib, "learning": self.learning.rss_kib, "detecting": self.detecting.rss_kib},
            "hwm_kib": {"idle": self.idle.hwm_kib, "learning": self.learning.hwm_kib, "detecting": self.detecting.hwm_kib},
            "per_workload_kib": self.per_workload_kib(args.workloads),
            "learned_in_s": self.learned_in.as_secs_f64(),
            "kernel_maps": self.maps_by_size().iter().map(|(name, m)| json!({
                "name": name, "type": m.map_type, "max_entries": m.max_entries, "memlock": m.memlock
            })).collect::<Vec<Value>>(),
            "kernel_maps_memlock_bytes": self.maps.values().map(|m| m.memlock).sum::<u64>(),
            "kernel_grams": self.grams,
        })
    }
}

/// Runs `habitd_bin` idle, then with the workloads learning, then detecting; the containers
/// are removed and habitd stopped before it returns.
fn measure(habitd_bin: &Path, image: &str, args: &Args) -> Result<Run, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = work.path().join("habitd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:{PORT}\"\nalerts = [\"file:{}\"]\n\
             log = \"warn\"\n[learning]\nmin = \"20s\"\nstable = \"20s\"\nmax = \"5m\"\n\
             interval = \"2s\"\n",
            work.path().join("data").display(),
            work.path().join("alerts.jsonl").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let habitd = Habitd::start(habitd_bin, &config, &work.path().join("habitd.log"), PORT)?;
    let pid = habitd.pid();
    std::thread::sleep(Duration::from_secs(5));
    let idle = memory(pid);
    eprintln!("== habitd idle: {} KiB RSS", idle.rss_kib);

    let mut containers = Containers(Vec::new());
    let mut keys = Vec::new();
    for k in 0..args.workloads {
        let repository = format!("{PREFIX}/w{k}");
        docker(&["tag", image, &format!("{repository}:latest")])?;
        let name = format!("{PREFIX}-{k}");
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            &format!("{repository}:latest"),
            "sh",
            "-c",
            "while true; do cat /etc/hostname /etc/passwd >/dev/null; ls /bin >/dev/null; \
             echo $$ > /tmp/pid; sleep 1; done",
        ])?;
        containers.0.push(name);
        keys.push(format!("docker.io/{repository}:latest"));
        if (k + 1) % 50 == 0 {
            eprintln!("== {} containers started", k + 1);
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let learning = memory(pid);
    eprintln!(
        "== learning: {} KiB RSS; waiting for every workload to be stable",
        learning.rss_kib
    );
    let started = Instant::now();
    wait_for(
        Duration::from_secs(600),
        "every workload to be stable",
        || {
            let stable = stable_count(&keys);
            eprint!("\r   {stable} / {} stable", keys.len());
            stable == keys.len()
        },
    )?;
    eprintln!();
    let learned_in = started.elapsed();
    // Detection for a while: what stays after learning.
    std::thread::sleep(Duration::from_secs(if args.smoke { 5 } else { 30 }));
    let detecting = memory(pid);
    let maps = kernel_maps(pid);
    let grams = metric_sum("habitd_sequence_kernel_grams");
    drop(containers);
    habitd.stop()?;
    Ok(Run {
        habitd: habitd_bin.to_path_buf(),
        idle,
        learning,
        detecting,
        learned_in,
        maps,
        grams,
    })
}

/// `habitd-scale/base`: the host's static busybox and a few files.
fn base_image() -> Result<String, String> {
    let name = format!("{PREFIX}/base:latest");
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox is missing: apt-get install busybox-static".into());
    }
    let script = format!(
        "set -e; root=$(mktemp -d); trap 'rm -rf $root' EXIT; cd $root; mkdir -p bin etc tmp; \
         cp /bin/busybox bin/; for a in sh cat ls sleep echo; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo scale > etc/hostname; \
         tar -c . | docker import - {name} >/dev/null"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "building {name}: {} (is Docker running?)",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(name)
}

fn docker(args: &[&str]) -> Result<(), String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

fn stable_count(keys: &[String]) -> usize {
    let Some((_, body)) = common::http_get(PORT, "/api/v1/workloads") else {
        return 0;
    };
    let all: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let stable: std::collections::HashSet<&str> = all
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|w| w["state"] == "stable")
                .filter_map(|w| w["key"].as_str())
                .collect()
        })
        .unwrap_or_default();
    keys.iter().filter(|k| stable.contains(k.as_str())).count()
}

fn metric_sum(name: &str) -> f64 {
    common::http_get(PORT, "/metrics").map_or(0.0, |(_, body)| {
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    })
}

struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

struct MapUse {
    map_type: u64,
    max_entries: u64,
    memlock: u64,
}

/// The BPF maps habitd holds open, by name (from /proc/PID/fdinfo and the maps' info).
fn kernel_maps(pid: u32) -> BTreeMap<String, MapUse> {
    let names: BTreeMap<u32, String> = aya::maps::loaded_maps()
        .flatten()
        .filter_map(|m| Some((m.id(), m.name_as_str()?.to_string())))
        .collect();
    let mut maps = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return maps;
    };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(map_type), Some(max_entries), Some(memlock)) = (
            field("map_id:"),
            field("map_type:"),
            field("max_entries:"),
            field("memlock:"),
        ) else {
            continue;
        };
        let name = names
            .get(&(id as u32))
            .cloned()
            .unwrap_or_else(|| format!("map {id}"));
        maps.insert(
            name,
            MapUse {
                map_type,
                max_entries,
                memlock,
            },
        );
    }
    maps
}
