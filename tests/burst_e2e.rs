//! Bursts without a lost event (issue 13). A generator (tests/fixtures/burst.c) makes plain
//! syscalls, execs (fork + exec of a tiny static program) and TCP connects to its own listener
//! at set rates, in a cgroup of its own (a host service, `host:habitd-burst-….service`, to
//! habitd), and reports exactly how many of each it made. A real habitd watches: the release
//! build, since the claims are about its throughput (`cargo build --release -p habitd` first;
//! scripts/test.sh does).
//!
//! For every kind of event the generator causes (exec, fork, exit, connect, accept), what habitd
//! printed for the generator's cgroup plus what it counted as lost for the generator's workload
//! (`habitd_workload_events_dropped_total{workload,type}`) must be exactly what was caused:
//! nothing lost silently, nothing counted twice. Only this daemon's output and metrics are
//! read, so other habitds on the host (other tests, other people) change nothing; the events
//! of other processes are filtered out by cgroup.
//!
//! ```text
//! cargo build --release -p habitd
//! cargo test --test burst_e2e -- --nocapture                  # CI smoke: 3 s bursts
//! cargo test --test burst_e2e -- --ignored --nocapture        # the issue's 10 s burst
//! HABITD_BURST_SECONDS=5 cargo test --test burst_e2e          # smoke bursts of another length
//! ```

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, LineHandler, release_habitd_bin, static_helper_with};
use serde_json::Value;

/// The issue's target rates.
const SYSCALLS_PER_S: u64 = 1_000_000;
const EXECS_PER_S: u64 = 5_000;
const CONNECTS_PER_S: u64 = 20_000;

/// The kinds of event the generator causes, each checked exactly.
const KINDS: [&str; 5] = ["exec", "fork", "exit", "connect", "accept"];

/// One burst at a time: two at once would each be the other's noise.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Length of the smoke bursts (`HABITD_BURST_SECONDS`, default 3).
fn smoke_seconds() -> f64 {
    std::env::var("HABITD_BURST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

/// A cgroup v2 directory of its own for the generator, named like a systemd service so that
/// habitd calls its workload `host:<name>`. Its processes are killed and it is removed on drop.
struct Cgroup {
    path: PathBuf,
    name: String,
    /// The cgroup id the probes report: the directory's inode.
    id: u64,
}

impl Cgroup {
    fn new(tag: &str) -> Cgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (before, after) = l.split_once(" - ")?;
                let fields: Vec<&str> = before.split_whitespace().collect();
                (after.starts_with("cgroup2 ") && fields.get(3) == Some(&"/"))
                    .then(|| PathBuf::from(fields[4]))
            })
            .expect("no cgroup2 hierarchy mounted (habitd attributes events by cgroup v2 id)");
        let name = format!("habitd-burst-{}-{tag}.service", std::process::id());
        let path = root.join(&name);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        let id = std::fs::metadata(&path).unwrap().ino();
        Cgroup { path, name, id }
    }

    fn workload(&self) -> String {
        format!("host:{}", self.name)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// CPU time of the whole machine from /proc/stat: (busy, total) in ticks, all CPUs.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Share of the machine's CPUs busy between two [`machine_cpu`] readings, in percent.
fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    100.0 * after.0.saturating_sub(before.0) as f64 / total as f64
}

/// What one run of the generator made, as it reported it.
#[derive(Debug)]
struct Caused {
    seconds: f64,
    syscalls: u64,
    /// Programs executed (each one exec, one fork and one exit).
    execs: u64,
    /// Children reaped (their exits).
    reaped: u64,
    /// connect() calls with an AF_INET address, whatever their result.
    connects: u64,
    /// Connections its listener accepted.
    accepts: u64,
}

impl Caused {
    /// Records of `kind` the generator's cgroup caused. Besides its work, the generator's own
    /// exec (it is started in the cgroup) and its own exit.
    fn of(&self, kind: &str) -> u64 {
        match kind {
            "exec" => self.execs + 1,
            "fork" => self.execs,
            "exit" => self.reaped + 1,
            "connect" => self.connects,
            "accept" => self.accepts,
            _ => 0,
        }
    }
}

/// Runs the generator for `seconds` at the given rates in `cgroup`; returns what it made.
fn burst(cgroup: &Cgroup, seconds: f64, syscalls: u64, execs: u64, connects: u64) -> Caused {
    let generator = static_helper_with("burst", &["-pthread"]);
    let target = static_helper_with("burst_true", &["-nostdlib"]);
    let procs =
        std::ffi::CString::new(cgroup.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    let mut command = Command::new(&generator);
    command.args([
        seconds.to_string(),
        syscalls.to_string(),
        execs.to_string(),
        connects.to_string(),
    ]);
    command.arg(&target).args(["4", "2"]);
    // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
    // memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "the burst generator failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("generator report {:?}: {e}", out.stdout));
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert_eq!(n("exec_failures"), 0, "{report}");
    assert_eq!(n("exit_failures"), 0, "{report}");
    assert_eq!(n("execs"), n("reaped"), "{report}");
    Caused {
        seconds: report["seconds"].as_f64().unwrap_or(0.0),
        syscalls: n("syscalls"),
        execs: n("execs"),
        reaped: n("reaped"),
        connects: n("connects"),
        accepts: n("accepts"),
    }
}

/// Printed events of one cgroup, counted by kind as they stream by (nothing is kept).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<BTreeMap<String, u64>>>);

impl Received {
    /// The line handler: a printed line starts with its kind (`{"kind":"exec",…`) and names
    /// its cgroup as the first of its fields (`"output_fields":{"cgroup.id":N,…`).
    fn counter(&self, cgroup_id: u64) -> LineHandler {
        let counts = self.0.clone();
        let needle = format!("\"cgroup.id\":{cgroup_id},").into_bytes();
        let finder = memchr::memmem::Finder::new(&needle).into_owned();
        Box::new(move |line: &[u8]| {
            let Some(rest) = line.strip_prefix(b"{\"kind\":\"") else {
                return;
            };
            if finder.find(line).is_none() {
                return;
            }
            let end = rest.iter().position(|b| *b == b'"').unwrap_or(0);
            let kind = String::from_utf8_lossy(&rest[..end]).into_owned();
            *counts.lock().unwrap().entry(kind).or_default() += 1;
        })
    }

    fn of(&self, kind: &str) -> u64 {
        self.0.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

/// Samples of a metric as (labels, value).
fn samples(daemon: &Daemon, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let (_, body) = daemon.get("/metrics").unwrap_or_default();
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// Sum of a metric's samples whose labels include every pair of `filter`.
fn sum(daemon: &Daemon, name: &str, filter: &[(&str, &str)]) -> u64 {
    samples(daemon, name)
        .iter()
        .filter(|(labels, _)| {
            filter
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v as u64)
        .sum()
}

/// Records of `workload` lost on a full ring buffer, by type.
fn dropped(daemon: &Daemon, workload: &str) -> BTreeMap<String, u64> {
    samples(daemon, "habitd_workload_events_dropped_total")
        .into_iter()
        .filter(|(labels, _)| labels.get("workload").map(String::as_str) == Some(workload))
        .map(|(labels, v)| (labels.get("type").cloned().unwrap_or_default(), v as u64))
        .collect()
}

/// One kind's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    caused: u64,
    received: u64,
    dropped: u64,
}

fn table(rows: &BTreeMap<&str, Row>) -> String {
    let mut t = String::from("kind       caused  received  dropped\n");
    for (kind, r) in rows {
        t.push_str(&format!(
            "{kind:<8} {:>8} {:>9} {:>8}{}\n",
            r.caused,
            r.received,
            r.dropped,
            if r.received + r.dropped == r.caused {
                ""
            } else {
                "   <- not equal"
            }
        ));
    }
    t
}

/// Each kind's accounting now.
fn accounting(
    daemon: &Daemon,
    received: &Received,
    workload: &str,
    caused: &Caused,
) -> BTreeMap<&'static str, Row> {
    let lost = dropped(daemon, workload);
    KINDS
        .iter()
        .map(|k| {
            let row = Row {
                caused: caused.of(k),
                received: received.of(k),
                dropped: lost.get(*k).copied().unwrap_or(0),
            };
            (*k, row)
        })
        .collect()
}

/// Waits (up to a minute) until, for every kind, printed + dropped reaches what was caused:
/// habitd prints what it has read and counts drops every `counters_interval` (1 s here).
/// Then waits two more intervals, so that a late drop or a duplicate would show, and returns
/// the accounting; returns at once when a kind goes past what was caused.
fn settle(
    daemon: &Daemon,
    received: &Received,
    workload: &str,
    caused: &Caused,
) -> BTreeMap<&'static str, Row> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = accounting(daemon, received, workload, caused);
        if rows.values().any(|r| r.received + r.dropped > r.caused) || Instant::now() > deadline {
            return rows;
        }
        if rows.values().all(|r| r.received + r.dropped == r.caused) {
            std::thread::sleep(Duration::from_millis(2500));
            return accounting(daemon, received, workload, caused);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What a run measured, for the report line.
struct Run {
    caused: Caused,
    rows: BTreeMap<&'static str, Row>,
    habitd_cpu: Duration,
    /// The machine's CPUs busy during the burst, percent.
    machine_busy: f64,
}

impl Run {
    fn report(&self, what: &str) -> String {
        let c = &self.caused;
        let s = c.seconds.max(1e-9);
        let lost: u64 = self.rows.values().map(|r| r.dropped).sum();
        format!(
            "{what}: {:.1} s, {:.0} syscalls/s, {:.0} execs/s, {:.0} connects/s; habitd CPU {:.0} % \
             of one core, machine {:.0} % busy during the burst; {lost} events dropped\n{}",
            c.seconds,
            c.syscalls as f64 / s,
            c.execs as f64 / s,
            c.connects as f64 / s,
            100.0 * self.habitd_cpu.as_secs_f64() / s,
            self.machine_busy,
            table(&self.rows)
        )
    }
}

/// Starts a daemon printing events (ring buffer of `ring_bytes`, 0 = the default), runs one
/// burst and returns its accounting, asserting that it is exact for every kind.
fn printed_burst(tag: &str, ring_bytes: u32, seconds: f64, rates: (u64, u64, u64)) -> Run {
    let cgroup = Cgroup::new(tag);
    let received = Received::default();
    let ring = if ring_bytes == 0 {
        String::new()
    } else {
        format!("ring_buffer_bytes = {ring_bytes}\n")
    };
    let mut daemon = Daemon::start_streaming(
        &release_habitd_bin(),
        &format!("[probes]\n{ring}counters_interval = \"1s\"\n"),
        Some(received.counter(cgroup.id)),
    );
    let (cpu, machine) = (daemon.cpu_time(), machine_cpu());
    let caused = burst(&cgroup, seconds, rates.0, rates.1, rates.2);
    let habitd_cpu = daemon.cpu_time().saturating_sub(cpu);
    let machine_busy = busy_percent(machine, machine_cpu());
    let rows = settle(&daemon, &received, &cgroup.workload(), &caused);
    let run = Run {
        caused,
        rows,
        habitd_cpu,
        machine_busy,
    };
    let report = run.report(tag);
    eprintln!("{report}");
    for (kind, r) in &run.rows {
        assert_eq!(
            r.received + r.dropped,
            r.caused,
            "{kind}: printed + dropped is not what the burst caused\n{report}\nhabitd log tail:\n{}",
            common::tail(&daemon.log(), 20)
        );
    }
    // Nothing else was lost on the way: every printed line was written.
    assert_eq!(
        sum(&daemon, "habitd_printed_events_dropped_total", &[]),
        0,
        "{report}"
    );
    daemon.stop();
    run
}

/// At the target rates, with the default ring buffer and without `--print-events` (as
/// habitd runs in production): the generator's workload loses no event of any kind, and
/// habitd handled at least every event the generator caused (its per-type event counts grew
/// by at least that much; other processes' events come on top).
fn quiet_burst(tag: &str, seconds: f64) -> (Caused, Duration) {
    let cgroup = Cgroup::new(tag);
    let daemon = Daemon::start_streaming(
        &release_habitd_bin(),
        "[probes]\ncounters_interval = \"1s\"\n",
        None,
    );
    let handled = |kind: &str| sum(&daemon, "habitd_events_total", &[("type", kind)]);
    let before: BTreeMap<&str, u64> = KINDS.iter().map(|k| (*k, handled(k))).collect();
    let (cpu, machine) = (daemon.cpu_time(), machine_cpu());
    let caused = burst(
        &cgroup,
        seconds,
        SYSCALLS_PER_S,
        EXECS_PER_S,
        CONNECTS_PER_S,
    );
    let habitd_cpu = daemon.cpu_time().saturating_sub(cpu);
    let machine_busy = busy_percent(machine, machine_cpu());
    let deadline = Instant::now() + Duration::from_secs(60);
    let lacking = loop {
        let lacking: Vec<String> = KINDS
            .iter()
            .filter(|k| handled(k) - before[*k] < caused.of(k))
            .map(|k| {
                format!(
                    "{k}: {} handled < {} caused",
                    handled(k) - before[k],
                    caused.of(k)
                )
            })
            .collect();
        if lacking.is_empty() || Instant::now() > deadline {
            break lacking;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Two counters intervals: the last drops are counted.
    std::thread::sleep(Duration::from_millis(2500));
    let lost = dropped(&daemon, &cgroup.workload());
    let s = caused.seconds.max(1e-9);
    eprintln!(
        "{tag}: {:.1} s, {:.0} syscalls/s, {:.0} execs/s, {:.0} connects/s; habitd CPU {:.0} % of \
         one core, machine {machine_busy:.0} % busy during the burst; dropped: {lost:?}; ring \
         buffer drops (all processes): {}",
        caused.seconds,
        caused.syscalls as f64 / s,
        caused.execs as f64 / s,
        caused.connects as f64 / s,
        100.0 * habitd_cpu.as_secs_f64() / s,
        sum(
            &daemon,
            "habitd_events_dropped_total",
            &[("reason", "ringbuf_full")]
        ),
    );
    assert!(
        lost.values().all(|v| *v == 0),
        "the burst's workload lost events: {lost:?} (caused {caused:?})"
    );
    assert!(lacking.is_empty(), "{lacking:?}");
    // The kernel counted the plain syscalls too (and the generator's others on top).
    let syscalls = sum(
        &daemon,
        "habitd_syscalls_total",
        &[("workload", &cgroup.workload())],
    );
    assert!(
        syscalls >= caused.syscalls,
        "{syscalls} syscalls counted for {} < {} made",
        cgroup.workload(),
        caused.syscalls
    );
    (caused, habitd_cpu)
}

#[test]
fn a_burst_at_the_target_rates_loses_no_event() {
    let _serial = serial();
    quiet_burst("quiet", smoke_seconds());
}

#[test]
fn every_event_of_a_burst_at_the_target_rates_is_printed_or_counted_as_dropped() {
    let _serial = serial();
    printed_burst(
        "printed",
        0,
        smoke_seconds(),
        (SYSCALLS_PER_S, EXECS_PER_S, CONNECTS_PER_S),
    );
}

#[test]
fn a_tiny_ring_buffer_drops_events_and_counts_exactly_what_it_lost() {
    let _serial = serial();
    // 4 KiB, the least habitd accepts, hold two exec records: at the target exec and connect
    // rates (habitd printing) the burst overflows it whatever the machine.
    let run = printed_burst(
        "tiny-ring",
        4096,
        2.0,
        (100_000, EXECS_PER_S, CONNECTS_PER_S),
    );
    for kind in ["exec", "connect"] {
        assert!(
            run.rows[kind].dropped > 0,
            "{kind}: no drop with a 4 KiB ring buffer\n{}",
            run.report("tiny-ring")
        );
        assert!(run.rows[kind].received > 0, "{}", run.report("tiny-ring"));
    }
}

/// The issue's burst: 10 s at the target rates. Without `--print-events`: zero drops; with it:
/// every event printed or counted as dropped. Then: the generator reached 90 % of every target
/// rate in the first run, or the claim was not tested at the target (a busy machine).
#[test]
#[ignore = "10 s bursts at the target rates: run with --ignored (README, Performance)"]
fn the_issue_burst_of_ten_seconds() {
    let _serial = serial();
    let (caused, _) = quiet_burst("quiet-10s", 10.0);
    printed_burst(
        "printed-10s",
        0,
        10.0,
        (SYSCALLS_PER_S, EXECS_PER_S, CONNECTS_PER_S),
    );
    let s = caused.seconds;
    for (what, made, target) in [
        ("syscalls", caused.syscalls, SYSCALLS_PER_S),
        ("execs", caused.execs, EXECS_PER_S),
        ("connects", caused.connects, CONNECTS_PER_S),
    ] {
        assert!(
            made as f64 / s >= 0.9 * target as f64,
            "{what}: {:.0}/s reached without drops, but the target is {target}/s: this machine \
             was too busy to test the claim at the target rates",
            made as f64 / s
        );
    }
}
