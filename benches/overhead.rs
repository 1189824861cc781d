//! What habitd's probes cost every syscall on this machine.
//!
//! A tight loop of `syscall(SYS_getppid)` (the cheapest real syscall: it only enters and leaves
//! the kernel) runs on one pinned CPU under four configurations, measured side by side in one
//! run, interleaved round-robin over several rounds so that drift of the machine (frequency,
//! noisy neighbours) hits all of them alike:
//!
//! - `baseline`: nothing attached;
//! - `empty`:    the empty `tp_btf/sys_enter` program `habit_bench_empty` (the floor: the cost of
//!   having any BPF program on sys_enter);
//! - `habitd`:   habitd's full probe set, with `self_tgid = 0` so that the benchmark's own
//!   syscalls take the full path, sequences off (the per-thread history still advances); its
//!   events are drained on another CPU;
//! - `seq-learn`: the full set with every cgroup's syscall sequences in learning (each 6-gram
//!   counted in the (workload, gram) hash map);
//! - `seq-detect`: the full set with every cgroup in detection (each 6-gram looked up and its
//!   value summed in the thread's task storage; the loop's gram is known, so nothing is sent);
//! - `naive`:    a per-(cgroup, syscall) hash-map counter (`probes/bpf/bench/naive_counter.bpf.c`,
//!   compiled here with clang and the flags of `probes/bpf/clang-args`), the design habitd avoids.
//!
//! Each sample loads and attaches its configuration, warms up (10 % of the calls), times the
//! calls, then detaches; the order rotates every round. Reported: the median ns/syscall per
//! configuration over the rounds and its deltas against `baseline` and `empty`. Results are
//! printed as a table and written as JSON to `target/overhead.json`. It needs root (it loads
//! eBPF programs) and refuses to run without it.
//!
//!     sudo -E cargo bench --bench overhead                          # 7 rounds x 2,000,000 calls
//!     sudo -E cargo bench --bench overhead -- --rounds 9 --calls 5000000
//!     sudo -E cargo bench --bench overhead -- --quick               # 3 rounds x 200,000 calls
//!
//! Other flags: `--cpu N` (measuring CPU; default: the last allowed one), `--json PATH`,
//! `--max-wait SECS`.
//!
//! Any other tracing program on the machine (another habitd, an end-to-end test run) also sits on
//! sys_enter and slows every configuration: the benchmark waits for such programs to go away
//! before each round (120 s in all at most), leaves rounds that saw one out of the medians and
//! runs extra rounds (up to 3x `--rounds`) to make up for them.
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a one-round smoke test that
//! writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::HashMap as BpfHashMap;
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use habit_probes::{ProbeConfig, Probes, abi};
use serde_json::{Value, json};

const DEFAULT_ROUNDS: usize = 7;
const DEFAULT_CALLS: u64 = 2_000_000;
const QUICK_ROUNDS: usize = 3;
const QUICK_CALLS: u64 = 200_000;
const SMOKE_CALLS: u64 = 20_000;

const USAGE: &str =
    "usage: overhead [--rounds N] [--calls N] [--quick] [--cpu N] [--json PATH] [--max-wait S]
  --rounds N   interleaved rounds; one sample per configuration per round (default 7)
  --calls N    getppid calls per sample (default 2000000)
  --quick      3 rounds of 200000 calls (unless --rounds/--calls say otherwise)
  --cpu N      CPU the loop is pinned to (default: the last CPU this process may use)
  --json PATH  where to write the results (default: target/overhead.json)
  --max-wait S total seconds to wait, before rounds, for other tracing programs (another
               habitd, a test run) to go away (default 120); rounds that saw one are rerun
               (up to 3x --rounds in all) and left out of the medians
run it with: sudo -E cargo bench --bench overhead -- [FLAGS]";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Baseline,
    Empty,
    Habitd,
    SeqLearn,
    SeqDetect,
    Naive,
}

impl Config {
    const ALL: [Config; 6] = [
        Config::Baseline,
        Config::Empty,
        Config::Habitd,
        Config::SeqLearn,
        Config::SeqDetect,
        Config::Naive,
    ];

    fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Empty => "empty",
            Config::Habitd => "habitd",
            Config::SeqLearn => "seq-learn",
            Config::SeqDetect => "seq-detect",
            Config::Naive => "naive",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "(a) nothing attached",
            Config::Empty => "(b) empty tp_btf/sys_enter",
            Config::Habitd => "(c) habitd full probe set",
            Config::SeqLearn => "(c1) habitd, sequences learning",
            Config::SeqDetect => "(c2) habitd, sequences detecting",
            Config::Naive => "(d) naive (cgroup,syscall) hash",
        }
    }
}

struct Args {
    rounds: usize,
    calls: u64,
    quick: bool,
    /// Run by `cargo test` (no `--bench` flag): one small round, nothing written.
    smoke: bool,
    cpu: Option<usize>,
    json: PathBuf,
    /// Total time to wait for foreign tracing programs to go away.
    max_wait: Duration,
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: not a number: {value}"))
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut rounds = None;
    let mut calls = None;
    let mut quick = false;
    let mut bench = false;
    let mut explicit = false;
    let mut cpu = None;
    let mut json = None;
    let mut max_wait = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next());
        match flag.as_str() {
            // cargo bench passes --bench to every harness=false benchmark.
            "--bench" => bench = true,
            "--quick" => quick = true,
            "--rounds" => rounds = Some(parse_number::<usize>("--rounds", value())?),
            "--calls" => calls = Some(parse_number::<u64>("--calls", value())?),
            "--cpu" => cpu = Some(parse_number::<usize>("--cpu", value())?),
            "--max-wait" => max_wait = Some(parse_number::<u64>("--max-wait", value())?),
            "--json" => json = Some(PathBuf::from(value().ok_or("--json needs a path")?)),
            "-h" | "--help" => return Ok(None),
            other if other.starts_with('-') => return Err(format!("unknown flag {other}")),
            // A benchmark name filter given to `cargo bench NAME`: there is nothing to filter.
            _ => {}
        }
        explicit |= flag != "--bench";
    }
    let smoke = !bench && !explicit;
    let (default_rounds, default_calls) = if smoke {
        (1, SMOKE_CALLS)
    } else if quick {
        (QUICK_ROUNDS, QUICK_CALLS)
    } else {
        (DEFAULT_ROUNDS, DEFAULT_CALLS)
    };
    let rounds = rounds.unwrap_or(default_rounds);
    let calls = calls.unwrap_or(default_calls);
    if rounds == 0 || calls == 0 {
        return Err("--rounds and --calls must be at least 1".into());
    }
    Ok(Some(Args {
        rounds,
        calls,
        quick,
        smoke,
        cpu,
        json: json.unwrap_or_else(|| target_dir().join("overhead.json")),
        max_wait: Duration::from_secs(max_wait.unwrap_or(if smoke { 0 } else { 120 })),
    }))
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// CPU pinning

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>().
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: as above; sched_setaffinity(0, ..) applies to the calling thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The measured loop

/// Times `calls` getppid syscalls (after `warmup` untimed ones); returns ns per syscall.
#[inline(never)]
fn time_getppid(calls: u64, warmup: u64) -> f64 {
    for _ in 0..warmup {
        // SAFETY: getppid takes no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: as above.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

// ---------------------------------------------------------------------------------------------
// Attaching a configuration: a holder thread (on another CPU) loads the programs, drains events
// if any, and detaches when told to stop.

/// What a holder saw while its configuration was attached (sanity checks of the measurement).
#[derive(Default, Debug)]
struct HolderReport {
    /// getppid calls the programs counted (all cgroups): must cover the timed loop.
    getppid_counted: Option<u64>,
    events_drained: u64,
    decode_errors: u64,
    /// Records the kernel lost between loading and the end of the sample, by reason.
    kernel_drops: BTreeMap<&'static str, u64>,
    /// The part of `kernel_drops` lost before the measurement started (during `Probes::load`).
    kernel_drops_at_load: BTreeMap<&'static str, u64>,
}

/// habitd's drop counters summed over CPUs, by reason (non-zero only).
fn sum_drops(probes: &Probes) -> BTreeMap<&'static str, u64> {
    let mut by_reason = BTreeMap::new();
    for (reason, _cpu, n) in probes.counters.read_drops().unwrap_or_default() {
        if n > 0 {
            *by_reason.entry(reason).or_default() += n;
        }
    }
    by_reason
}

struct Holder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<HolderReport>>,
}

impl Holder {
    fn finish(mut self) -> HolderReport {
        self.stop_and_join().unwrap_or_default()
    }

    fn stop_and_join(&mut self) -> Option<HolderReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Loads and attaches `config` on a holder thread pinned to `cpu`; returns once attached.
fn attach(config: Config, cpu: usize, naive_object: Option<&Path>) -> Result<Holder, String> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let naive_object = naive_object.map(Path::to_path_buf);
    let thread = std::thread::Builder::new()
        .name(format!("holder-{}", config.key()))
        .spawn(move || {
            let _ = pin_to(cpu);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return HolderReport::default();
                }
            };
            rt.block_on(async move {
                let held = match config {
                    Config::Baseline => Ok(HolderReport::default()),
                    Config::Empty => hold_empty(&ready_tx, stop_rx).await,
                    Config::Habitd => hold_habitd(&ready_tx, stop_rx, abi::SEQ_OFF).await,
                    Config::SeqLearn => hold_habitd(&ready_tx, stop_rx, abi::SEQ_LEARN).await,
                    Config::SeqDetect => hold_habitd(&ready_tx, stop_rx, abi::SEQ_DETECT).await,
                    Config::Naive => match naive_object {
                        Some(path) => hold_naive(&path, &ready_tx, stop_rx).await,
                        None => Err("no naive object".to_string()),
                    },
                };
                held.unwrap_or_else(|e| {
                    let _ = ready_tx.send(Err(e));
                    HolderReport::default()
                })
            })
        })
        .map_err(|e| format!("spawning the holder thread: {e}"))?;
    let mut holder = Holder {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    if config == Config::Baseline {
        return Ok(holder);
    }
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(holder),
        Ok(Err(e)) => {
            holder.stop_and_join();
            Err(e)
        }
        Err(_) => {
            holder.stop_and_join();
            Err("the holder thread ended before attaching".into())
        }
    }
}

type Ready = mpsc::Sender<Result<(), String>>;
type Stop = tokio::sync::oneshot::Receiver<()>;

async fn hold_empty(ready: &Ready, stop: Stop) -> Result<HolderReport, String> {
    let probes = Probes::load(&ProbeConfig {
        self_tgid: 0,
        ring_buffer_bytes: 1 << 16,
        empty_only: true,
    })
    .map_err(|e| format!("loading the empty program: {e}"))?;
    let _ = ready.send(Ok(()));
    let _ = stop.await;
    drop(probes);
    Ok(HolderReport::default())
}

/// The workload id the sequence configurations give every cgroup slot.
const BENCH_WID: u32 = 1;

async fn hold_habitd(ready: &Ready, mut stop: Stop, seq_mode: u32) -> Result<HolderReport, String> {
    let mut probes = Probes::load(&ProbeConfig {
        // Ignore nobody: the benchmark's own syscalls must take the full path.
        self_tgid: 0,
        ring_buffer_bytes: 8 << 20,
        empty_only: false,
    })
    .map_err(|e| format!("loading habitd's probes: {e}"))?;
    let mut events = probes
        .take_events()
        .map_err(|e| format!("habitd's event stream: {e}"))?;
    if seq_mode != abi::SEQ_OFF {
        let slot = abi::SeqSlot {
            mode: seq_mode,
            wid: BENCH_WID,
            samples: 0,
            _pad: 0,
        };
        for i in 0..abi::MAX_CGROUP_SLOTS {
            probes
                .sequences
                .set_slot(i, slot)
                .map_err(|e| format!("setting sequence slot {i}: {e}"))?;
        }
        if seq_mode == abi::SEQ_DETECT {
            // The loop's 6-gram (getppid six times) is known, as in a learned workload.
            let getppid = libc::SYS_getppid as u32;
            let key = habit_models::sequence::encode(&[getppid; 6]);
            probes
                .sequences
                .set_values(BENCH_WID, [(key, 1000, true)])
                .map_err(|e| format!("valuing the loop's gram: {e}"))?;
        }
    }
    // The slot allocation of the first syscalls is not what we measure: start from a clean read.
    let _ = probes.counters.read_syscalls();
    let mut report = HolderReport {
        kernel_drops_at_load: sum_drops(&probes),
        ..HolderReport::default()
    };
    let _ = ready.send(Ok(()));

    let mut batch = Vec::new();
    loop {
        let mut errors = 0u64;
        tokio::select! {
            _ = &mut stop => break,
            r = events.next_batch(&mut batch, |_| errors += 1) => {
                report.decode_errors += errors;
                match r {
                    Ok(()) => report.events_drained += batch.len() as u64,
                    Err(e) => {
                        eprintln!("  warning: draining habitd's events failed: {e}");
                        let _ = (&mut stop).await;
                        break;
                    }
                }
            }
        }
    }
    if let Ok(deltas) = probes.counters.read_syscalls() {
        let getppid = libc::SYS_getppid as u32;
        report.getppid_counted = Some(
            deltas
                .iter()
                .flat_map(|d| d.counts.iter())
                .filter(|(nr, _)| *nr == getppid)
                .map(|(_, n)| n)
                .sum(),
        );
    }
    report.kernel_drops = sum_drops(&probes);
    drop(events);
    drop(probes);
    Ok(report)
}

/// Key of the naive counter's map (`struct naive_key` in naive_counter.bpf.c).
#[repr(C)]
#[derive(Clone, Copy)]
struct NaiveKey {
    cgroup_id: u64,
    nr: u32,
    _pad: u32,
}

// SAFETY: plain data without padding, as in the C struct.
unsafe impl aya::Pod for NaiveKey {}

async fn hold_naive(object: &Path, ready: &Ready, stop: Stop) -> Result<HolderReport, String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load_file(object)
        .map_err(|e| format!("loading {}: {e}", object.display()))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut("naive_sys_enter")
        .ok_or("naive_sys_enter is missing from the naive object")?
        .try_into()
        .map_err(|e| format!("naive_sys_enter: {e}"))?;
    program
        .load("sys_enter", &btf)
        .map_err(|e| format!("loading naive_sys_enter: {e}"))?;
    program
        .attach()
        .map_err(|e| format!("attaching naive_sys_enter: {e}"))?;
    let _ = ready.send(Ok(()));
    let _ = stop.await;

    let mut report = HolderReport::default();
    if let Some(map) = ebpf.map("naive_counts")
        && let Ok(counts) = BpfHashMap::<_, NaiveKey, u64>::try_from(map)
    {
        let getppid = libc::SYS_getppid as u32;
        report.getppid_counted = Some(
            counts
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.nr == getppid)
                .map(|(_, n)| n)
                .sum(),
        );
    }
    drop(ebpf);
    Ok(report)
}

/// Compiles the naive counter with the probes' clang flags; `Ok(None)` when clang is missing.
fn build_naive_object() -> Result<Option<PathBuf>, String> {
    let bpf_dir = workspace_dir().join("probes/bpf");
    let flags_file = bpf_dir.join("clang-args");
    let flags = std::fs::read_to_string(&flags_file)
        .map_err(|e| format!("reading {}: {e}", flags_file.display()))?;
    let out_dir = target_dir().join("overhead");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let out = out_dir.join("naive_counter.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let output = Command::new(&clang)
        .current_dir(&bpf_dir)
        .args(
            flags
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        )
        .args(["-c", "bench/naive_counter.bpf.c", "-o"])
        .arg(&out)
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("running {clang}: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "{clang} failed to compile probes/bpf/bench/naive_counter.bpf.c ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Ok(_) => Ok(Some(out)),
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and reporting

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[derive(Default)]
struct Series {
    /// ns/syscall by round (None: no sample that round).
    samples: Vec<Option<f64>>,
    counted: Vec<Option<u64>>,
    events_drained: u64,
    decode_errors: u64,
    kernel_drops: BTreeMap<&'static str, u64>,
    kernel_drops_at_load: BTreeMap<&'static str, u64>,
    skipped: Option<String>,
}

impl Series {
    /// The samples of the rounds marked in `used`.
    fn values(&self, used: &[bool]) -> Vec<f64> {
        self.samples
            .iter()
            .zip(used)
            .filter_map(|(v, &u)| if u { *v } else { None })
            .collect()
    }
}

/// Median over the `used` rounds of (sample - reference sample of the same round).
fn paired_delta(a: &Series, reference: &Series, used: &[bool]) -> Option<f64> {
    let d: Vec<f64> = a
        .samples
        .iter()
        .zip(&reference.samples)
        .zip(used)
        .filter_map(|((x, r), &u)| if u { Some((*x)? - (*r)?) } else { None })
        .collect();
    median(&d)
}

/// One round: the other (foreign) tracing programs seen around its samples, as `name#id`.
struct RoundInfo {
    foreign: BTreeSet<String>,
}

/// Program types that can sit on syscall entry: kprobe, tracepoint, raw_tracepoint(_writable),
/// tracing (tp_btf/fentry). Another one attached (another habitd, a test run) slows every
/// configuration, so rounds that saw one are not counted.
const TRACING_PROGRAM_TYPES: [u32; 5] = [2, 5, 17, 24, 26];

/// Loaded tracing programs: id -> name.
fn tracing_programs() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| TRACING_PROGRAM_TYPES.contains(&(p.program_type() as u32)))
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect()
}

/// Waits (from a total budget) until no tracing program other than ours is loaded.
fn wait_for_quiet(ours: &BTreeSet<u32>, budget: &mut Duration) {
    let start = Instant::now();
    let mut told = false;
    loop {
        let foreign: Vec<String> = tracing_programs()
            .into_iter()
            .filter(|(id, _)| !ours.contains(id))
            .map(|(id, name)| format!("{name}#{id}"))
            .collect();
        let waited = start.elapsed();
        if foreign.is_empty() || waited >= *budget {
            *budget = budget.saturating_sub(waited);
            return;
        }
        if !told {
            eprintln!(
                "  waiting up to {:.0} s for other tracing programs to go away: {}",
                budget.as_secs_f64(),
                foreign.join(", ")
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn fmt_opt(v: Option<f64>, signed: bool) -> String {
    match v {
        Some(v) if signed => format!("{v:+.1}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("overhead: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "overhead: refusing to run without root: this benchmark loads and attaches eBPF \
             programs.\n  run it as root: sudo -E cargo bench --bench overhead"
        );
        return ExitCode::FAILURE;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!(
            "overhead: the kernel has no BTF (/sys/kernel/btf/vmlinux): tp_btf programs need \
             CONFIG_DEBUG_INFO_BTF=y"
        );
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("overhead: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the rounds, prints and writes the results; Ok(false) if a configuration failed to load.
fn run(args: &Args) -> Result<bool, String> {
    let cpus = allowed_cpus();
    let cpu = args
        .cpu
        .or_else(|| cpus.last().copied())
        .ok_or("no CPU is allowed")?;
    if !cpus.contains(&cpu) {
        return Err(format!("--cpu {cpu}: not one of the allowed CPUs {cpus:?}"));
    }
    // Holders (loading, draining) run on another CPU when there is one.
    let holder_cpu = cpus.iter().copied().find(|&c| c != cpu).unwrap_or(cpu);
    pin_to(cpu)?;

    let mut series: BTreeMap<Config, Series> = Config::ALL
        .iter()
        .map(|&c| (c, Series::default()))
        .collect();
    let naive_object = match build_naive_object()? {
        Some(path) => Some(path),
        None => {
            let why = "clang not found: install clang and libbpf-dev (apt-get install clang \
                       libbpf-dev) or set CLANG to measure the naive hash-map counter";
            eprintln!("overhead: skipping (d): {why}");
            if let Some(s) = series.get_mut(&Config::Naive) {
                s.skipped = Some(why.into());
            }
            None
        }
    };

    let warmup = (args.calls / 10).max(1000);
    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let mode = if args.smoke {
        " (smoke test: run with `cargo bench --bench overhead` to measure; nothing is written)"
    } else if args.quick {
        " (--quick)"
    } else {
        ""
    };
    println!(
        "habitd syscall overhead: getppid loop, {} calls/sample (+{} warm-up), {} round(s), \
         CPU {cpu} (holder on CPU {holder_cpu}), kernel {kernel}{mode}",
        args.calls, warmup, args.rounds
    );
    let load_start = read_trimmed("/proc/loadavg");

    let mut failed = false;
    let started = Instant::now();
    // Program ids this benchmark loaded; any other tracing program is foreign.
    let mut ours: BTreeSet<u32> = BTreeSet::new();
    let mut rounds: Vec<RoundInfo> = Vec::new();
    let mut wait_budget = args.max_wait;
    let max_attempts = if args.smoke { 1 } else { args.rounds * 3 };
    while rounds.iter().filter(|r| r.foreign.is_empty()).count() < args.rounds
        && rounds.len() < max_attempts
    {
        let round = rounds.len();
        wait_for_quiet(&ours, &mut wait_budget);
        // Rotate the order each round so that no configuration always follows another.
        let order: Vec<Config> = (0..Config::ALL.len())
            .map(|i| Config::ALL[(i + round) % Config::ALL.len()])
            .collect();
        let mut line = format!("  round {}:", round + 1);
        let mut foreign = BTreeSet::new();
        for config in order {
            let Some(s) = series.get_mut(&config) else {
                continue;
            };
            s.samples.push(None);
            s.counted.push(None);
            if s.skipped.is_some() {
                continue;
            }
            let before = tracing_programs();
            let holder = match attach(config, holder_cpu, naive_object.as_deref()) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("overhead: {} could not be attached: {e}", config.label());
                    s.skipped = Some(format!("failed to attach: {e}"));
                    failed = true;
                    continue;
                }
            };
            ours.extend(
                tracing_programs()
                    .into_keys()
                    .filter(|id| !before.contains_key(id)),
            );
            let ns = time_getppid(args.calls, warmup);
            let after = tracing_programs();
            let report = holder.finish();
            foreign.extend(
                before
                    .into_iter()
                    .chain(after)
                    .filter(|(id, _)| !ours.contains(id))
                    .map(|(id, name)| format!("{name}#{id}")),
            );
            if let Some(counted) = report.getppid_counted
                && counted < args.calls
            {
                eprintln!(
                    "  warning: {} counted only {counted} of {} getppid calls: its program did \
                     not see the loop",
                    config.key(),
                    args.calls
                );
            }
            s.samples[round] = Some(ns);
            s.counted[round] = report.getppid_counted;
            s.events_drained += report.events_drained;
            s.decode_errors += report.decode_errors;
            for (reason, n) in report.kernel_drops {
                *s.kernel_drops.entry(reason).or_default() += n;
            }
            for (reason, n) in report.kernel_drops_at_load {
                *s.kernel_drops_at_load.entry(reason).or_default() += n;
            }
            line.push_str(&format!(" {}={ns:.1}", config.key()));
        }
        if !foreign.is_empty() {
            line.push_str(&format!(
                "  [not counted: other tracing programs were attached: {}]",
                foreign.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        eprintln!("{line}");
        rounds.push(RoundInfo { foreign });
    }
    let elapsed = started.elapsed();

    // Medians over the clean rounds; over all of them (with a warning) if none was clean.
    let clean: Vec<bool> = rounds.iter().map(|r| r.foreign.is_empty()).collect();
    let clean_count = clean.iter().filter(|&&c| c).count();
    let used: Vec<bool> = if clean_count > 0 {
        clean.clone()
    } else {
        vec![true; rounds.len()]
    };
    let used_count = used.iter().filter(|&&u| u).count();
    let medians: BTreeMap<Config, Option<f64>> = series
        .iter()
        .map(|(c, s)| (*c, median(&s.values(&used))))
        .collect();
    let base = medians.get(&Config::Baseline).copied().flatten();
    let empty = medians.get(&Config::Empty).copied().flatten();
    let delta = |m: Option<f64>, r: Option<f64>| Some(m? - r?);

    println!();
    println!(
        "{:<34} {:>10} {:>8} {:>8} {:>12} {:>10}",
        "configuration", "median ns", "min", "max", "vs baseline", "vs empty"
    );
    let mut json_configs = Vec::new();
    for (config, s) in &series {
        let values = s.values(&used);
        let m = medians.get(config).copied().flatten();
        let min = values.iter().copied().reduce(f64::min);
        let max = values.iter().copied().reduce(f64::max);
        if let Some(why) = &s.skipped
            && values.is_empty()
        {
            println!("{:<34} skipped: {why}", config.label());
        } else {
            println!(
                "{:<34} {:>10} {:>8} {:>8} {:>12} {:>10}",
                config.label(),
                fmt_opt(m, false),
                fmt_opt(min, false),
                fmt_opt(max, false),
                fmt_opt(delta(m, base), true),
                fmt_opt(delta(m, empty), true),
            );
        }
        let baseline_series = &series[&Config::Baseline];
        let empty_series = &series[&Config::Empty];
        json_configs.push(json!({
            "name": config.key(),
            "label": config.label(),
            "samples_ns_per_syscall": s.samples,
            "median_ns_per_syscall": m,
            "min_ns_per_syscall": min,
            "max_ns_per_syscall": max,
            "delta_vs_baseline_ns": delta(m, base),
            "delta_vs_empty_ns": delta(m, empty),
            "paired_delta_vs_baseline_ns": paired_delta(s, baseline_series, &used),
            "paired_delta_vs_empty_ns": paired_delta(s, empty_series, &used),
            "getppid_counted_by_program": s.counted,
            "events_drained": s.events_drained,
            "decode_errors": s.decode_errors,
            "kernel_drops_total": s.kernel_drops,
            "kernel_drops_before_measuring": s.kernel_drops_at_load,
            "skipped": s.skipped,
        }));
    }
    if clean_count < args.rounds {
        eprintln!(
            "\noverhead: WARNING: only {clean_count} of {} round(s) ran without other tracing \
             programs attached (another habitd or test run?); {}",
            rounds.len(),
            if clean_count == 0 {
                "the figures include their cost"
            } else {
                "the figures use the clean rounds only"
            }
        );
    }
    println!(
        "\nmedians over {used_count} of {} round(s); deltas are differences of medians \
         (per-round paired deltas are in the JSON). {:.1} s in all; load average {} -> {}",
        rounds.len(),
        elapsed.as_secs_f64(),
        load_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        read_trimmed("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    if !args.smoke {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let doc: Value = json!({
            "benchmark": "getppid loop, ns per syscall",
            "unix_time": unix_time,
            "rounds_requested": args.rounds,
            "rounds_run": rounds.len(),
            "rounds_used": used,
            "foreign_programs_by_round": rounds.iter().map(|r| &r.foreign).collect::<Vec<_>>(),
            "calls_per_sample": args.calls,
            "warmup_calls": warmup,
            "quick": args.quick,
            "cpu": cpu,
            "holder_cpu": holder_cpu,
            "cpu_model": cpu_model(),
            "kernel": kernel,
            "elapsed_s": elapsed.as_secs_f64(),
            "configurations": json_configs,
        });
        if let Some(dir) = args.json.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&args.json, text + "\n")
            .map_err(|e| format!("writing {}: {e}", args.json.display()))?;
        println!("results written to {}", args.json.display());
    }
    Ok(!failed)
}
