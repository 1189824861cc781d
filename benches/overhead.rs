//! What habitd's probes cost every syscall on this machine.
//!
//! Two workloads run on one pinned CPU, each a loop of raw `syscall(2)`s (no libc wrapper, so the
//! loop makes exactly the syscalls listed):
//!
//! - `getppid`: `syscall(SYS_getppid)` over and over, the best case: the cheapest real syscall
//!   (it only enters and leaves the kernel), none of habitd's decoded syscalls, and one hot
//!   6-gram;
//! - `mix`: a realistic server-like iteration of 10 syscalls: `openat`/`read`/`close` of a 4 KiB
//!   file; a request/response over a loopback TCP connection (`write` on the client,
//!   `epoll_wait` on the server socket, `read` + `write` on the server, `read` on the client);
//!   and the two syscalls of a contended lock that need no second thread, `FUTEX_WAKE` with no
//!   waiter and `FUTEX_WAIT` on a value that already changed (`EAGAIN`). Opens take habitd's
//!   open path (the path read and hashed, the de-duplication lookup; one record per path and
//!   interval), and the cycle has ten 6-grams (one per position) instead of one.
//!
//! Both run under nine configurations, measured side by side in one run, interleaved round-robin
//! over several rounds so that drift of the machine (frequency, noisy neighbours) hits all of
//! them alike:
//!
//! - `baseline`: nothing attached;
//! - `empty`:    the empty `tp_btf/sys_enter` program `habit_bench_empty` (the floor: the cost of
//!   having any BPF program on sys_enter);
//! - `empty+exit`: it and an empty `tp_btf/sys_exit` program (the floor of reading results
//!   there: it runs on every syscall's exit);
//! - `empty+exit-tp`: it and an empty program on the per-syscall exit tracepoints of the
//!   syscalls habitd reports at exit (`syscalls/sys_exit_openat`, ...; tracefs is mounted at
//!   /sys/kernel/tracing if it is not), the hook habitd uses;
//! - `habitd`:   habitd's full probe set, with `self_tgid = 0` so that the benchmark's own
//!   syscalls take the full path, sequences off (the per-thread history still advances); its
//!   events are drained on another CPU;
//! - `habitd-ref`: the same from another build's object (`--reference-object PATH`, e.g. the
//!   previous release's prebuilt object), so that a change's cost is measured in one run;
//!   skipped without the flag; `habitd-ref-learn` and `habitd-ref-detect` are that object with
//!   sequences learning and detecting, as `seq-learn` and `seq-detect` below;
//! - `seq-learn`: the full set with every cgroup's syscall sequences in learning (each 6-gram
//!   counted in the (workload, gram) hash map);
//! - `seq-detect`: the full set with every cgroup in detection (each 6-gram looked up and its
//!   value summed in the thread's task storage). Every 6-gram of the workload's repeated
//!   iteration is pre-valued, as a learned workload's would be: only the few grams around the
//!   loop's start are unknown (after which the thread sends its sums every 256 grams);
//! - `naive`:    a per-(cgroup, syscall) hash-map counter (`probes/bpf/bench/naive_counter.bpf.c`,
//!   compiled here with clang and the flags of `probes/bpf/clang-args`), the design habitd avoids.
//!
//! Each sample (one configuration, one workload) loads and attaches its configuration, warms up
//! (10 % of the iterations), times the iterations, then detaches; the order of configurations
//! rotates every round, and within a configuration the order of the workloads alternates.
//! Reported per workload: the median ns/syscall (and ns/iteration) per configuration over the
//! rounds and its deltas against `baseline` and `empty`, by two clocks: the wall clock (what
//! the loop's caller waits; other tasks running on the measuring CPU add to it) and the thread's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`: the loop's own user and kernel time, BPF programs
//! included, which the machine's other load leaves alone except through the caches; on a busy
//! machine it is the steadier of the two). Results are printed as tables and
//! written as JSON to `target/overhead.json` (one row per configuration and workload). It needs
//! root (it loads eBPF programs) and refuses to run without it.
//!
//!     sudo -E cargo bench --bench overhead          # 7 rounds x (2,000,000 getppid, 100,000 mix)
//!     sudo -E cargo bench --bench overhead -- --rounds 9 --calls 5000000 --iterations 300000
//!     sudo -E cargo bench --bench overhead -- --quick               # 3 rounds, a tenth of each
//!     sudo -E cargo bench --bench overhead -- --workload mix        # one workload only
//!
//! Other flags: `--cpu N` (measuring CPU; default: the last allowed one), `--json PATH`,
//! `--reference-object PATH` (another build's probes object, measured beside this one),
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
use std::ffi::CString;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::HashMap as BpfHashMap;
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use habit_probes::{BenchFloor, ProbeConfig, Probes, abi};
use serde_json::{Value, json};

const DEFAULT_ROUNDS: usize = 7;
const DEFAULT_CALLS: u64 = 2_000_000;
const QUICK_ROUNDS: usize = 3;
const QUICK_CALLS: u64 = 200_000;
const SMOKE_CALLS: u64 = 20_000;
const DEFAULT_ITERATIONS: u64 = 100_000;
const QUICK_ITERATIONS: u64 = 10_000;
const SMOKE_ITERATIONS: u64 = 1_000;

const USAGE: &str =
    "usage: overhead [--rounds N] [--calls N] [--iterations N] [--workload W] [--quick] [--cpu N]
                [--json PATH] [--max-wait S]
  --rounds N   interleaved rounds; one sample per configuration and workload per round
               (default 7)
  --calls N    getppid calls per sample (default 2000000)
  --iterations N
               mix iterations (10 syscalls each) per sample (default 100000)
  --workload W getppid, mix or all (default all)
  --quick      3 rounds of 200000 calls and 10000 iterations (unless --rounds, --calls or
               --iterations say otherwise)
  --cpu N      CPU the loop is pinned to (default: the last CPU this process may use)
  --json PATH  where to write the results (default: target/overhead.json)
  --reference-object PATH
               also measure habitd's probes from this object (another build's
               probes/bpf/prebuilt/habit.bpf.o, e.g. the previous release's:
               `git show REV:probes/bpf/prebuilt/habit.bpf.o > ref.o`), sequences off, as (c')
  --max-wait S total seconds to wait, before rounds, for other tracing programs (another
               habitd, a test run) to go away (default 120); rounds that saw one are rerun
               (up to 3x --rounds in all) and left out of the medians
run it with: sudo -E cargo bench --bench overhead -- [FLAGS]";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Baseline,
    Empty,
    /// The empty sys_enter program and an empty `tp_btf/sys_exit` program.
    EmptyExit,
    /// The empty sys_enter program and an empty program on the per-syscall exit tracepoints
    /// of the syscalls habitd reports at exit (`tracepoint/syscalls/sys_exit_openat`, ...).
    EmptyExitTracepoints,
    Habitd,
    /// habitd's probes from `--reference-object` (another build), sequences off.
    Reference,
    SeqLearn,
    SeqDetect,
    /// The `--reference-object` build with sequences learning, as [`Config::SeqLearn`].
    ReferenceSeqLearn,
    /// The `--reference-object` build with sequences detecting, as [`Config::SeqDetect`].
    ReferenceSeqDetect,
    Naive,
}

impl Config {
    const ALL: [Config; 11] = [
        Config::Baseline,
        Config::Empty,
        Config::EmptyExit,
        Config::EmptyExitTracepoints,
        Config::Habitd,
        Config::Reference,
        Config::SeqLearn,
        Config::SeqDetect,
        Config::ReferenceSeqLearn,
        Config::ReferenceSeqDetect,
        Config::Naive,
    ];

    /// Measured only with `--reference-object`.
    fn needs_reference(self) -> bool {
        matches!(
            self,
            Config::Reference | Config::ReferenceSeqLearn | Config::ReferenceSeqDetect
        )
    }

    fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Empty => "empty",
            Config::EmptyExit => "empty+exit",
            Config::EmptyExitTracepoints => "empty+exit-tp",
            Config::Habitd => "habitd",
            Config::Reference => "habitd-ref",
            Config::SeqLearn => "seq-learn",
            Config::SeqDetect => "seq-detect",
            Config::ReferenceSeqLearn => "habitd-ref-learn",
            Config::ReferenceSeqDetect => "habitd-ref-detect",
            Config::Naive => "naive",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "(a) nothing attached",
            Config::Empty => "(b) empty tp_btf/sys_enter",
            Config::EmptyExit => "(b1) (b) + empty tp_btf/sys_exit",
            Config::EmptyExitTracepoints => {
                "(b2) (b) + empty syscalls/sys_exit_{open*,connect,bind,dup*}"
            }
            Config::Habitd => "(c) habitd full probe set",
            Config::Reference => "(c') --reference-object, seq off",
            Config::SeqLearn => "(c1) habitd, sequences learning",
            Config::SeqDetect => "(c2) habitd, sequences detecting",
            Config::ReferenceSeqLearn => "(c1') --reference-object, learning",
            Config::ReferenceSeqDetect => "(c2') --reference-object, detecting",
            Config::Naive => "(d) naive (cgroup,syscall) hash",
        }
    }
}

/// What the measured CPU runs while a configuration is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Getppid,
    Mix,
}

/// The syscalls of one `mix` iteration, in order (see [`MixLoop::iteration`]).
const MIX_SYSCALLS: [libc::c_long; 10] = [
    libc::SYS_openat,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_write,
    libc::SYS_epoll_wait,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_read,
    libc::SYS_futex,
    libc::SYS_futex,
];

impl Workload {
    const ALL: [Workload; 2] = [Workload::Getppid, Workload::Mix];

    fn key(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid",
            Workload::Mix => "mix",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid loop (best case: one cheap syscall, one hot 6-gram)",
            Workload::Mix => {
                "realistic mix: open/read/close a file, loopback TCP request/response with \
                 epoll_wait, futex wake/wait"
            }
        }
    }

    /// The syscalls of one iteration, in order.
    fn syscalls(self) -> &'static [libc::c_long] {
        match self {
            Workload::Getppid => &[libc::SYS_getppid],
            Workload::Mix => &MIX_SYSCALLS,
        }
    }

    /// Every 6-gram of the iteration repeated forever: what a learned workload's baseline
    /// would value (the detection configuration writes them before measuring).
    fn hot_grams(self) -> Vec<u64> {
        let calls = self.syscalls();
        let grams: BTreeSet<u64> = (0..calls.len())
            .map(|start| {
                let window: Vec<u32> = (0..6)
                    .map(|i| calls[(start + i) % calls.len()] as u32)
                    .collect();
                habit_models::sequence::encode(&window)
            })
            .collect();
        grams.into_iter().collect()
    }
}

struct Args {
    rounds: usize,
    calls: u64,
    /// mix iterations per sample.
    iterations: u64,
    workloads: Vec<Workload>,
    quick: bool,
    /// Run by `cargo test` (no `--bench` flag): one small round, nothing written.
    smoke: bool,
    cpu: Option<usize>,
    json: PathBuf,
    /// Total time to wait for foreign tracing programs to go away.
    max_wait: Duration,
    /// Another build's probes object, measured as [`Config::Reference`].
    reference: Option<PathBuf>,
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
    let mut iterations = None;
    let mut workloads = Workload::ALL.to_vec();
    let mut quick = false;
    let mut bench = false;
    let mut explicit = false;
    let mut cpu = None;
    let mut json = None;
    let mut max_wait = None;
    let mut reference = None;
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
            "--iterations" => iterations = Some(parse_number::<u64>("--iterations", value())?),
            "--workload" => {
                let w = value().ok_or("--workload needs a value")?;
                workloads = match w.as_str() {
                    "all" => Workload::ALL.to_vec(),
                    "getppid" => vec![Workload::Getppid],
                    "mix" => vec![Workload::Mix],
                    _ => return Err(format!("--workload: getppid, mix or all, not {w}")),
                };
            }
            "--cpu" => cpu = Some(parse_number::<usize>("--cpu", value())?),
            "--max-wait" => max_wait = Some(parse_number::<u64>("--max-wait", value())?),
            "--json" => json = Some(PathBuf::from(value().ok_or("--json needs a path")?)),
            "--reference-object" => {
                reference = Some(PathBuf::from(
                    value().ok_or("--reference-object needs a path")?,
                ));
            }
            "-h" | "--help" => return Ok(None),
            other if other.starts_with('-') => return Err(format!("unknown flag {other}")),
            // A benchmark name filter given to `cargo bench NAME`: there is nothing to filter.
            _ => {}
        }
        explicit |= flag != "--bench";
    }
    let smoke = !bench && !explicit;
    let (default_rounds, default_calls, default_iterations) = if smoke {
        (1, SMOKE_CALLS, SMOKE_ITERATIONS)
    } else if quick {
        (QUICK_ROUNDS, QUICK_CALLS, QUICK_ITERATIONS)
    } else {
        (DEFAULT_ROUNDS, DEFAULT_CALLS, DEFAULT_ITERATIONS)
    };
    let rounds = rounds.unwrap_or(default_rounds);
    let calls = calls.unwrap_or(default_calls);
    let iterations = iterations.unwrap_or(default_iterations);
    if rounds == 0 || calls == 0 || iterations == 0 {
        return Err("--rounds, --calls and --iterations must be at least 1".into());
    }
    Ok(Some(Args {
        rounds,
        calls,
        iterations,
        workloads,
        quick,
        smoke,
        cpu,
        json: json.unwrap_or_else(|| target_dir().join("overhead.json")),
        max_wait: Duration::from_secs(max_wait.unwrap_or(if smoke { 0 } else { 120 })),
        reference,
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
// The measured loops

/// Size of the file the mix opens and reads each iteration.
const MIX_FILE_BYTES: usize = 4096;
/// Size of the request and of the response on the loopback connection.
const MIX_MESSAGE_BYTES: usize = 64;

/// The mix's file, connection, epoll set and futex word, set up once (before any probe is
/// attached) and reused by every sample.
struct MixLoop {
    path: CString,
    file_buf: Box<[u8; MIX_FILE_BYTES]>,
    client: TcpStream,
    server: TcpStream,
    epoll: OwnedFd,
    futex: Box<std::sync::atomic::AtomicU32>,
    message: [u8; MIX_MESSAGE_BYTES],
    reply: [u8; MIX_MESSAGE_BYTES],
    /// Syscalls that did not return what the iteration expects (a broken measurement).
    failures: u64,
}

impl MixLoop {
    fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = dir.join("mix-input");
        std::fs::write(&file, [b'x'; MIX_FILE_BYTES])
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        let path = CString::new(file.as_os_str().as_bytes())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("loopback listener: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?;
        let client = TcpStream::connect(addr).map_err(|e| format!("connecting {addr}: {e}"))?;
        let (server, _) = listener
            .accept()
            .map_err(|e| format!("accepting on {addr}: {e}"))?;
        for s in [&client, &server] {
            s.set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        }
        // SAFETY: epoll_create1 has no memory arguments; the descriptor is checked below.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: epfd is a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; `event` lives across the call.
        if unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                server.as_raw_fd(),
                &mut event,
            )
        } != 0
        {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
        let mut mix = Self {
            path,
            file_buf: Box::new([0; MIX_FILE_BYTES]),
            client,
            server,
            epoll,
            futex: Box::new(std::sync::atomic::AtomicU32::new(0)),
            message: [b'q'; MIX_MESSAGE_BYTES],
            reply: [0; MIX_MESSAGE_BYTES],
            failures: 0,
        };
        // One iteration now, so that a setup problem is an error, not a silent measurement.
        mix.iteration();
        if mix.failures > 0 {
            return Err(format!(
                "the mix's first iteration failed ({} unexpected syscall results)",
                mix.failures
            ));
        }
        Ok(mix)
    }

    /// One iteration: exactly the syscalls of [`MIX_SYSCALLS`], in that order.
    #[inline(always)]
    fn iteration(&mut self) {
        use libc::{SYS_close, SYS_epoll_wait, SYS_futex, SYS_openat, SYS_read, SYS_write};
        let client = self.client.as_raw_fd() as libc::c_long;
        let server = self.server.as_raw_fd() as libc::c_long;
        let msg = MIX_MESSAGE_BYTES as libc::c_long;
        let (zero, one): (libc::c_long, libc::c_long) = (0, 1);
        let futex = self.futex.as_ptr();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut ok = true;
        // SAFETY: every pointer passed points into `self` or `events`, which outlive the calls,
        // with the lengths given; the descriptors are open (owned by `self`), except the file
        // descriptor, which is only used if openat returned it.
        unsafe {
            let fd = libc::syscall(
                SYS_openat,
                libc::AT_FDCWD as libc::c_long,
                self.path.as_ptr(),
                (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_long,
            );
            ok &= fd >= 0;
            let n = libc::syscall(
                SYS_read,
                fd,
                self.file_buf.as_mut_ptr(),
                MIX_FILE_BYTES as libc::c_long,
            );
            ok &= n == MIX_FILE_BYTES as libc::c_long;
            ok &= libc::syscall(SYS_close, fd) == 0;
            // Request: the client writes; the server sees it readable, reads it and answers.
            ok &= libc::syscall(SYS_write, client, self.message.as_ptr(), msg) == msg;
            ok &= libc::syscall(
                SYS_epoll_wait,
                self.epoll.as_raw_fd() as libc::c_long,
                events.as_mut_ptr(),
                events.len() as libc::c_long,
                zero,
            ) == 1;
            ok &= libc::syscall(SYS_read, server, self.reply.as_mut_ptr(), msg) == msg;
            ok &= libc::syscall(SYS_write, server, self.reply.as_ptr(), msg) == msg;
            ok &= libc::syscall(SYS_read, client, self.reply.as_mut_ptr(), msg) == msg;
            // A lock's slow paths without a second thread: wake with no waiter (returns 0), and
            // wait on a value that has already changed (returns EAGAIN at once).
            ok &= libc::syscall(
                SYS_futex,
                futex,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as libc::c_long,
                one,
            ) == 0;
            ok &= libc::syscall(
                SYS_futex,
                futex,
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as libc::c_long,
                one,
                std::ptr::null::<libc::timespec>(),
            ) == -1;
        }
        self.failures += u64::from(!ok);
    }
}

/// A workload ready to run on the measured CPU.
enum Runner {
    Getppid,
    Mix(Box<MixLoop>),
}

impl Runner {
    fn new(workload: Workload, dir: &Path) -> Result<Self, String> {
        Ok(match workload {
            Workload::Getppid => Runner::Getppid,
            Workload::Mix => Runner::Mix(Box::new(MixLoop::new(dir)?)),
        })
    }

    /// Runs `iterations` iterations.
    #[inline(never)]
    fn run(&mut self, iterations: u64) {
        match self {
            Runner::Getppid => {
                for _ in 0..iterations {
                    // SAFETY: getppid takes no arguments and cannot fail.
                    std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
                }
            }
            Runner::Mix(mix) => {
                for _ in 0..iterations {
                    mix.iteration();
                }
            }
        }
    }

    /// Iterations whose syscalls did not return what they should, so far.
    fn failures(&self) -> u64 {
        match self {
            Runner::Getppid => 0,
            Runner::Mix(mix) => mix.failures,
        }
    }

    /// Times `iterations` iterations (after `warmup` untimed ones); returns ns per iteration,
    /// by the wall clock and in this thread's CPU time.
    fn time(&mut self, iterations: u64, warmup: u64) -> Timing {
        self.run(warmup);
        let cpu_start = thread_cpu_ns();
        let start = Instant::now();
        self.run(iterations);
        let wall = start.elapsed().as_nanos() as f64;
        let cpu = thread_cpu_ns() - cpu_start;
        Timing {
            wall: wall / iterations as f64,
            cpu: cpu as f64 / iterations as f64,
        }
    }
}

/// ns per iteration of one sample.
struct Timing {
    /// By the wall clock: includes time other tasks ran on the measuring CPU.
    wall: f64,
    /// This thread's CPU time (user and kernel, BPF programs included): what the machine's
    /// other load does not add to, unless it evicts our caches.
    cpu: f64,
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------------
// Attaching a configuration: a holder thread (on another CPU) loads the programs, drains events
// if any, and detaches when told to stop.

/// What a holder saw while its configuration was attached (sanity checks of the measurement).
#[derive(Default, Debug)]
struct HolderReport {
    /// Calls of the workload's syscalls the programs counted (all cgroups, so other processes'
    /// too): must cover the timed loop.
    counted: Option<u64>,
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

/// Loads and attaches `config` on a holder thread pinned to `cpu`, set up for `workload`;
/// returns once attached.
fn attach(
    config: Config,
    workload: Workload,
    cpu: usize,
    naive_object: Option<&Path>,
    reference: Option<&'static [u8]>,
) -> Result<Holder, String> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let naive_object = naive_object.map(Path::to_path_buf);
    let thread = std::thread::Builder::new()
        .name(format!("holder-{}-{}", config.key(), workload.key()))
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
                    Config::Empty => hold_empty(&ready_tx, stop_rx, BenchFloor::SysEnter).await,
                    Config::EmptyExit => {
                        hold_empty(&ready_tx, stop_rx, BenchFloor::SysEnterAndExit).await
                    }
                    Config::EmptyExitTracepoints => {
                        hold_empty(&ready_tx, stop_rx, BenchFloor::SysEnterAndExitTracepoints).await
                    }
                    Config::Habitd => {
                        hold_habitd(&ready_tx, stop_rx, abi::SEQ_OFF, workload, None).await
                    }
                    Config::Reference | Config::ReferenceSeqLearn | Config::ReferenceSeqDetect => {
                        let mode = match config {
                            Config::ReferenceSeqLearn => abi::SEQ_LEARN,
                            Config::ReferenceSeqDetect => abi::SEQ_DETECT,
                            _ => abi::SEQ_OFF,
                        };
                        match reference {
                            Some(object) => {
                                hold_habitd(&ready_tx, stop_rx, mode, workload, Some(object)).await
                            }
                            None => Err("no --reference-object".to_string()),
                        }
                    }
                    Config::SeqLearn => {
                        hold_habitd(&ready_tx, stop_rx, abi::SEQ_LEARN, workload, None).await
                    }
                    Config::SeqDetect => {
                        hold_habitd(&ready_tx, stop_rx, abi::SEQ_DETECT, workload, None).await
                    }
                    Config::Naive => match naive_object {
                        Some(path) => hold_naive(&path, &ready_tx, stop_rx, workload).await,
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

async fn hold_empty(ready: &Ready, stop: Stop, floor: BenchFloor) -> Result<HolderReport, String> {
    let probes = Probes::load(&ProbeConfig {
        self_tgid: 0,
        ring_buffer_bytes: 1 << 16,
        empty_only: true,
        bench_floor: floor,
        force_btf_sys_exit: false,
        object: None,
    })
    .map_err(|e| format!("loading the empty program: {e}"))?;
    let _ = ready.send(Ok(()));
    let _ = stop.await;
    drop(probes);
    Ok(HolderReport::default())
}

/// The workload id the sequence configurations give every cgroup slot.
const BENCH_WID: u32 = 1;

async fn hold_habitd(
    ready: &Ready,
    mut stop: Stop,
    seq_mode: u32,
    workload: Workload,
    object: Option<&'static [u8]>,
) -> Result<HolderReport, String> {
    let mut probes = Probes::load(&ProbeConfig {
        // Ignore nobody: the benchmark's own syscalls must take the full path.
        self_tgid: 0,
        ring_buffer_bytes: 8 << 20,
        empty_only: false,
        bench_floor: BenchFloor::SysEnter,
        force_btf_sys_exit: false,
        object,
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
            grams: 0,
        };
        for i in 0..abi::MAX_CGROUP_SLOTS {
            probes
                .sequences
                .set_slot(i, slot)
                .map_err(|e| format!("setting sequence slot {i}: {e}"))?;
        }
        if seq_mode == abi::SEQ_DETECT {
            // The loop's 6-grams are known, as in a learned workload.
            let grams = workload.hot_grams();
            probes
                .sequences
                .set_values(BENCH_WID, grams.into_iter().map(|g| (g, 1000, true)))
                .map_err(|e| format!("valuing the loop's grams: {e}"))?;
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
        let nrs = workload_nrs(workload);
        report.counted = Some(
            deltas
                .iter()
                .flat_map(|d| d.counts.iter())
                .filter(|(nr, _)| nrs.contains(nr))
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

/// The distinct syscall numbers of a workload's iteration.
fn workload_nrs(workload: Workload) -> BTreeSet<u32> {
    workload.syscalls().iter().map(|&nr| nr as u32).collect()
}

async fn hold_naive(
    object: &Path,
    ready: &Ready,
    stop: Stop,
    workload: Workload,
) -> Result<HolderReport, String> {
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
        let nrs = workload_nrs(workload);
        report.counted = Some(
            counts
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| nrs.contains(&k.nr))
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

/// What a sample's ns are measured by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Clock {
    Wall,
    ThreadCpu,
}

#[derive(Default)]
struct Series {
    /// Wall-clock ns/syscall by round (None: no sample that round).
    samples: Vec<Option<f64>>,
    /// Thread-CPU ns/syscall by round.
    cpu_samples: Vec<Option<f64>>,
    counted: Vec<Option<u64>>,
    events_drained: u64,
    decode_errors: u64,
    kernel_drops: BTreeMap<&'static str, u64>,
    kernel_drops_at_load: BTreeMap<&'static str, u64>,
    /// Iterations whose syscalls returned something unexpected (should stay 0).
    failed_iterations: u64,
    skipped: Option<String>,
}

impl Series {
    fn by(&self, clock: Clock) -> &[Option<f64>] {
        match clock {
            Clock::Wall => &self.samples,
            Clock::ThreadCpu => &self.cpu_samples,
        }
    }

    /// The samples of the rounds marked in `used`.
    fn values(&self, clock: Clock, used: &[bool]) -> Vec<f64> {
        self.by(clock)
            .iter()
            .zip(used)
            .filter_map(|(v, &u)| if u { *v } else { None })
            .collect()
    }
}

/// Median over the `used` rounds of (sample - reference sample of the same round).
fn paired_delta(a: &Series, reference: &Series, clock: Clock, used: &[bool]) -> Option<f64> {
    let d: Vec<f64> = a
        .by(clock)
        .iter()
        .zip(reference.by(clock))
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

/// One workload as the rounds run it.
struct Plan {
    workload: Workload,
    /// Timed iterations per sample.
    iterations: u64,
    /// Untimed iterations before them.
    warmup: u64,
    runner: Runner,
}

impl Plan {
    fn syscalls_per_iteration(&self) -> usize {
        self.workload.syscalls().len()
    }
}

fn join_loadavg(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
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

    // The workloads are set up (file written, connection made) before anything is attached.
    let mut plans: Vec<Plan> = args
        .workloads
        .iter()
        .map(|&workload| {
            let (iterations, min_warmup) = match workload {
                Workload::Getppid => (args.calls, 1000),
                Workload::Mix => (args.iterations, 100),
            };
            Ok(Plan {
                workload,
                iterations,
                warmup: (iterations / 10).max(min_warmup),
                runner: Runner::new(workload, &target_dir().join("overhead"))?,
            })
        })
        .collect::<Result<_, String>>()?;

    let mut series: BTreeMap<(Workload, Config), Series> = args
        .workloads
        .iter()
        .flat_map(|&w| {
            Config::ALL
                .iter()
                .map(move |&c| ((w, c), Series::default()))
        })
        .collect();
    let naive_object = match build_naive_object()? {
        Some(path) => Some(path),
        None => {
            let why = "clang not found: install clang and libbpf-dev (apt-get install clang \
                       libbpf-dev) or set CLANG to measure the naive hash-map counter";
            eprintln!("overhead: skipping (d): {why}");
            for ((_, c), s) in series.iter_mut() {
                if *c == Config::Naive {
                    s.skipped = Some(why.into());
                }
            }
            None
        }
    };

    // The per-syscall exit tracepoints are found through tracefs, which these machines do not
    // mount by default: mount it (habitd itself never needs it).
    if let Err(why) = habit_probes::loader::ensure_tracefs() {
        eprintln!("overhead: skipping (b2): {why}");
        for ((_, c), s) in series.iter_mut() {
            if *c == Config::EmptyExitTracepoints {
                s.skipped = Some(why.clone());
            }
        }
    }

    // Loaded once and kept for the whole run (aya parses the bytes at each load).
    let reference: Option<&'static [u8]> = match &args.reference {
        Some(path) => {
            Some(Vec::leak(std::fs::read(path).map_err(|e| {
                format!("--reference-object {}: {e}", path.display())
            })?))
        }
        None => {
            for ((_, c), s) in series.iter_mut() {
                if c.needs_reference() {
                    s.skipped = Some("no --reference-object given".into());
                }
            }
            None
        }
    };

    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let mode = if args.smoke {
        " (smoke test: run with `cargo bench --bench overhead` to measure; nothing is written)"
    } else if args.quick {
        " (--quick)"
    } else {
        ""
    };
    println!(
        "habitd syscall overhead: {} round(s), CPU {cpu} (holder on CPU {holder_cpu}), kernel \
         {kernel}{mode}",
        args.rounds
    );
    for plan in &plans {
        println!(
            "  {}: {}; {} iteration(s) of {} syscall(s) per sample (+{} warm-up)",
            plan.workload.key(),
            plan.workload.label(),
            plan.iterations,
            plan.syscalls_per_iteration(),
            plan.warmup
        );
    }
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
        // Rotate the order each round so that no configuration always follows another, and
        // alternate the order of the workloads within a configuration.
        let order: Vec<Config> = (0..Config::ALL.len())
            .map(|i| Config::ALL[(i + round) % Config::ALL.len()])
            .collect();
        let mut plan_order: Vec<usize> = (0..plans.len()).collect();
        if round % 2 == 1 {
            plan_order.reverse();
        }
        let mut lines: BTreeMap<Workload, String> = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for config in order {
            for &p in &plan_order {
                let plan = &mut plans[p];
                let Some(s) = series.get_mut(&(plan.workload, config)) else {
                    continue;
                };
                s.samples.push(None);
                s.cpu_samples.push(None);
                s.counted.push(None);
                if s.skipped.is_some() {
                    continue;
                }
                let before = tracing_programs();
                let holder = match attach(
                    config,
                    plan.workload,
                    holder_cpu,
                    naive_object.as_deref(),
                    reference,
                ) {
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
                let failures_before = plan.runner.failures();
                let timing = plan.runner.time(plan.iterations, plan.warmup);
                let failures = plan.runner.failures() - failures_before;
                let ns = timing.wall / plan.syscalls_per_iteration() as f64;
                let cpu_ns = timing.cpu / plan.syscalls_per_iteration() as f64;
                let after = tracing_programs();
                let report = holder.finish();
                foreign.extend(
                    before
                        .into_iter()
                        .chain(after)
                        .filter(|(id, _)| !ours.contains(id))
                        .map(|(id, name)| format!("{name}#{id}")),
                );
                let expected = plan.iterations * plan.syscalls_per_iteration() as u64;
                if let Some(counted) = report.counted
                    && counted < expected
                {
                    eprintln!(
                        "  warning: {} counted only {counted} of the {expected} {} syscalls: its \
                         program did not see the loop",
                        config.key(),
                        plan.workload.key()
                    );
                }
                if failures > 0 {
                    eprintln!(
                        "  warning: {} iteration(s) of {} under {} had unexpected syscall results",
                        failures,
                        plan.workload.key(),
                        config.key()
                    );
                }
                let round_idx = s.samples.len() - 1;
                s.samples[round_idx] = Some(ns);
                s.cpu_samples[round_idx] = Some(cpu_ns);
                s.counted[round_idx] = report.counted;
                s.failed_iterations += failures;
                s.events_drained += report.events_drained;
                s.decode_errors += report.decode_errors;
                for (reason, n) in report.kernel_drops {
                    *s.kernel_drops.entry(reason).or_default() += n;
                }
                for (reason, n) in report.kernel_drops_at_load {
                    *s.kernel_drops_at_load.entry(reason).or_default() += n;
                }
                lines
                    .entry(plan.workload)
                    .or_default()
                    .push_str(&format!(" {}={ns:.1}/{cpu_ns:.1}", config.key()));
            }
        }
        let mut line = format!("  round {} (ns/syscall, wall/thread CPU):", round + 1);
        for (workload, samples) in &lines {
            line.push_str(&format!("\n    {:<8}{samples}", workload.key()));
        }
        if !foreign.is_empty() {
            line.push_str(&format!(
                "\n    [not counted: other tracing programs were attached: {}]",
                foreign.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        eprintln!("{line}");
        rounds.push(RoundInfo { foreign });
    }
    let elapsed = started.elapsed();
    let load_end = read_trimmed("/proc/loadavg");

    // Medians over the clean rounds; over all of them (with a warning) if none was clean.
    let clean: Vec<bool> = rounds.iter().map(|r| r.foreign.is_empty()).collect();
    let clean_count = clean.iter().filter(|&&c| c).count();
    let used: Vec<bool> = if clean_count > 0 {
        clean.clone()
    } else {
        vec![true; rounds.len()]
    };
    let used_count = used.iter().filter(|&&u| u).count();
    let medians: BTreeMap<(Workload, Config, Clock), Option<f64>> = series
        .iter()
        .flat_map(|(&(w, c), s)| {
            [Clock::Wall, Clock::ThreadCpu].map(|k| ((w, c, k), median(&s.values(k, &used))))
        })
        .collect();
    let median_of = |w: Workload, c: Config, k: Clock| medians.get(&(w, c, k)).copied().flatten();
    let delta = |m: Option<f64>, r: Option<f64>| Some(m? - r?);
    let times = |v: Option<f64>, k: usize| v.map(|v| v * k as f64);

    let mut json_configs = Vec::new();
    for plan in &plans {
        let w = plan.workload;
        let per_iteration = plan.syscalls_per_iteration();
        println!(
            "\n{} ({} syscall(s) per iteration): median ns per syscall (and per iteration)",
            w.key(),
            per_iteration
        );
        println!(
            "{:<34} | {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8} {:>9}",
            "",
            "wall",
            "min",
            "max",
            "Δnothing",
            "Δempty",
            "ns/iter",
            "CPU",
            "Δnothing",
            "Δempty",
            "ns/iter"
        );
        for config in Config::ALL {
            let Some(s) = series.get(&(w, config)) else {
                continue;
            };
            let row = |k: Clock| {
                let values = s.values(k, &used);
                let m = median_of(w, config, k);
                let base = median_of(w, Config::Baseline, k);
                let empty = median_of(w, Config::Empty, k);
                (
                    values,
                    m,
                    delta(m, base),
                    delta(m, empty),
                    paired_delta(s, &series[&(w, Config::Baseline)], k, &used),
                    paired_delta(s, &series[&(w, Config::Empty)], k, &used),
                )
            };
            let (values, m, vs_base, vs_empty, paired_base, paired_empty) = row(Clock::Wall);
            let (_, cpu_m, cpu_vs_base, cpu_vs_empty, cpu_paired_base, cpu_paired_empty) =
                row(Clock::ThreadCpu);
            let min = values.iter().copied().reduce(f64::min);
            let max = values.iter().copied().reduce(f64::max);
            if let Some(why) = &s.skipped
                && values.is_empty()
            {
                println!("{:<34} | skipped: {why}", config.label());
            } else {
                println!(
                    "{:<34} | {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8} {:>9}",
                    config.label(),
                    fmt_opt(m, false),
                    fmt_opt(min, false),
                    fmt_opt(max, false),
                    fmt_opt(vs_base, true),
                    fmt_opt(vs_empty, true),
                    fmt_opt(times(m, per_iteration), false),
                    fmt_opt(cpu_m, false),
                    fmt_opt(cpu_vs_base, true),
                    fmt_opt(cpu_vs_empty, true),
                    fmt_opt(times(cpu_m, per_iteration), false),
                );
            }
            json_configs.push(json!({
                "name": config.key(),
                "label": config.label(),
                "workload": w.key(),
                "syscalls_per_iteration": per_iteration,
                "samples_ns_per_syscall": s.samples,
                "median_ns_per_syscall": m,
                "min_ns_per_syscall": min,
                "max_ns_per_syscall": max,
                "delta_vs_baseline_ns": vs_base,
                "delta_vs_empty_ns": vs_empty,
                "paired_delta_vs_baseline_ns": paired_base,
                "paired_delta_vs_empty_ns": paired_empty,
                "median_ns_per_iteration": times(m, per_iteration),
                "delta_vs_baseline_ns_per_iteration": times(vs_base, per_iteration),
                "delta_vs_empty_ns_per_iteration": times(vs_empty, per_iteration),
                "thread_cpu": {
                    "samples_ns_per_syscall": s.cpu_samples,
                    "median_ns_per_syscall": cpu_m,
                    "delta_vs_baseline_ns": cpu_vs_base,
                    "delta_vs_empty_ns": cpu_vs_empty,
                    "paired_delta_vs_baseline_ns": cpu_paired_base,
                    "paired_delta_vs_empty_ns": cpu_paired_empty,
                    "median_ns_per_iteration": times(cpu_m, per_iteration),
                },
                "workload_syscalls_counted_by_program": s.counted,
                "failed_iterations": s.failed_iterations,
                "events_drained": s.events_drained,
                "decode_errors": s.decode_errors,
                "kernel_drops_total": s.kernel_drops,
                "kernel_drops_before_measuring": s.kernel_drops_at_load,
                "skipped": s.skipped,
            }));
        }
    }
    if plans.len() > 1 {
        for (clock, name) in [
            (Clock::Wall, "wall clock"),
            (Clock::ThreadCpu, "thread CPU time"),
        ] {
            println!(
                "\nside by side, {name} (median ns per syscall; deltas vs nothing attached / vs \
                 empty)"
            );
            let mut header = format!("{:<34}", "configuration");
            for plan in &plans {
                header.push_str(&format!(
                    " | {:>8} {:>8} {:>8}",
                    plan.workload.key(),
                    "Δnothing",
                    "Δempty"
                ));
            }
            println!("{header}");
            for config in Config::ALL {
                let mut row = format!("{:<34}", config.label());
                for plan in &plans {
                    let w = plan.workload;
                    let m = median_of(w, config, clock);
                    row.push_str(&format!(
                        " | {:>8} {:>8} {:>8}",
                        fmt_opt(m, false),
                        fmt_opt(delta(m, median_of(w, Config::Baseline, clock)), true),
                        fmt_opt(delta(m, median_of(w, Config::Empty, clock)), true)
                    ));
                }
                println!("{row}");
            }
        }
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
        join_loadavg(&load_start),
        join_loadavg(&load_end),
    );

    if !args.smoke {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let workloads: Vec<Value> = plans
            .iter()
            .map(|p| {
                json!({
                    "name": p.workload.key(),
                    "label": p.workload.label(),
                    "syscalls_per_iteration": p.syscalls_per_iteration(),
                    "syscalls": p.workload.syscalls(),
                    "iterations_per_sample": p.iterations,
                    "warmup_iterations": p.warmup,
                })
            })
            .collect();
        let doc: Value = json!({
            "benchmark": "syscall loops (getppid; realistic mix), ns per syscall",
            "unix_time": unix_time,
            "rounds_requested": args.rounds,
            "rounds_run": rounds.len(),
            "rounds_used": used,
            "foreign_programs_by_round": rounds.iter().map(|r| &r.foreign).collect::<Vec<_>>(),
            "workloads": workloads,
            "calls_per_sample": args.calls,
            "mix_iterations_per_sample": args.iterations,
            "quick": args.quick,
            "cpu": cpu,
            "holder_cpu": holder_cpu,
            "cpu_model": cpu_model(),
            "kernel": kernel,
            "load_average_start": join_loadavg(&load_start),
            "load_average_end": join_loadavg(&load_end),
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
