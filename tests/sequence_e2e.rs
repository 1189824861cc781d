//! End-to-end test of the syscall-sequence model: a real container learns with the kernel's
//! 6-gram path on, becomes stable, and a program that uses only known binaries, files and
//! syscalls but in another order raises a sequence alert, while the learned order raises none.
//! Both models (sequence and rate) survive a kill -9 (sled) and an export/import. Needs root, BTF and Docker.
//! The kernel's detection cache of 6-gram values follows the values user space changes (probes
//! only, a process in a cgroup of its own; root and BTF).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Container, Daemon, TOKEN, http_request, import_rootfs, static_busybox, static_helper,
};
use habit_models::sequence::SequenceModel;
use habit_profiles::baseline::Baseline;
use habit_profiles::profile::{Profile, ProfileConfig, UnstableReason};
use habit_profiles::workload::WorkloadKey;
use serde_json::Value;

/// Second-scale learning; the counters interval (which also moves the kernel's sequence modes
/// and reads its counts, and is the rate model's interval) at 1 s; 15 s of learning give the
/// rate model the 10 intervals it needs (the container's first intervals are its start-up, and
/// the interval that ends the start-up is left out too; 12 s gave 9 once).
const FAST_LEARNING: &str = "[learning]\nmin = \"15s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.01\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(40);

/// The windows the reordered path's ring-buffer records are counted in (15 runs each on a quiet
/// machine), and the band its records per run must fall in: 10.1-10.4 measured (see the
/// assertion).
const WINDOWS: usize = 6;
const WINDOW: Duration = Duration::from_secs(3);
const RECORDS_PER_RUN: std::ops::RangeInclusive<f64> = 9.5..=11.5;

/// A busybox image with the two-code-path program at /bin/seqpaths.
fn seq_image(tag: &str) -> String {
    let name = format!("habitd-e2e/seq:{tag}");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["bin", "etc", "tmp", "ctl"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::copy(static_busybox(), r.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::copy(static_helper("seqpaths"), r.join("bin/seqpaths")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    import_rootfs(r, &name, &[]);
    name
}

/// The workload: `seqpaths a` (the learned order) in a loop, `seqpaths b` once the host
/// creates `ctl/b` (a bind mount: switching needs no exec in the container).
fn seq_workload(tag: &str, ctl: &Path) -> (String, Container) {
    let image = seq_image(tag);
    let c = Container::run_with(
        &["-v", &format!("{}:/ctl", ctl.display())],
        &image,
        &[
            "/bin/sh",
            "-c",
            "while :; do if [ -e /ctl/b ]; then /bin/seqpaths b; else /bin/seqpaths a; fi; \
             sleep 0.2; done",
        ],
    );
    (format!("docker.io/{image}"), c)
}

/// `docker ARGS`, which must succeed.
fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_sequence_alert(a: &Value) -> bool {
    a["habitd"]["novel"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["dimension"] == "sequence"))
}

fn seqpaths_alerts(d: &Daemon, key: &str) -> Vec<Value> {
    d.alerts()
        .into_iter()
        .filter(|a| a["habitd"]["workload"] == key && is_sequence_alert(a))
        .filter(|a| a["output_fields"]["proc.name"] == "seqpaths")
        .collect()
}

fn baseline(d: &Daemon, key: &str) -> String {
    let (status, body) = d
        .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The models of an exported baseline (sequence and rate, both required), and the sequence
/// model parsed by its own loader.
fn models(baseline: &str) -> (Value, SequenceModel) {
    let doc: Value = serde_json::from_str(baseline).unwrap();
    let models = doc["models"].clone();
    assert!(!models["rate"].is_null(), "no rate model in {models}");
    let value = models["sequence"].clone();
    assert!(!value.is_null(), "no sequence model in the baseline");
    let model: SequenceModel = serde_json::from_value(value).unwrap();
    let _: habit_models::rate::RateModel = serde_json::from_value(models["rate"].clone()).unwrap();
    (models, model)
}

/// Switches the workload to the reordered path and waits for a new sequence alert about it.
fn expect_reordered_alert(d: &Daemon, key: &str, ctl: &Path) -> Value {
    let seen = seqpaths_alerts(d, key).len();
    std::fs::write(ctl.join("b"), "").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let alert = loop {
        if let Some(a) = seqpaths_alerts(d, key).get(seen) {
            break a.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sequence alert for the reordered path within {WAIT:?}; log:\n{}",
            common::tail(&d.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::fs::remove_file(ctl.join("b")).unwrap();
    alert
}

/// Switches the host's syscall sequences off: the host workload gets an empty baseline marked
/// unstable (an unstable workload alerts on rules only and its sequences are not followed), so
/// the kernel follows none of the host's threads. The records counter is the daemon's, for the
/// whole node, and the host's own threads (this test, dockerd, the daemon itself; traced whole
/// while the host learns, summed while it detects) would otherwise send hundreds of records a
/// second. (The baseline is made here rather than by freezing the host's learning: that is
/// the workload under test's business, not the host's.)
fn host_sequences_off(d: &Daemon) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let config = ProfileConfig {
        interval_ms: 250,
        ..ProfileConfig::default()
    };
    let profile = Profile::new(WorkloadKey::host(), "e2e", now, config);
    let mut host = Baseline::freeze(&profile, now, true);
    host.unstable_reason = Some(UnstableReason::TotalLimit { limit: 0 });
    let body = String::from_utf8(host.to_json_vec().unwrap()).unwrap();
    let auth = format!("Bearer {TOKEN}");
    // Imported once the host's entry has a baseline (it may be unstable already: learning).
    // The import is retried: a checkpoint of the host's learning that lands between the import
    // and its reload writes the learning profile back over it (seen on a loaded machine).
    let imported = |d: &Daemon| {
        d.workload("host")
            .is_some_and(|h| h["state"] == "unstable" && h["baseline_created"].is_number())
    };
    for _ in 0..5 {
        let (status, answer) = http_request(
            d.port,
            "PUT",
            "/api/v1/baselines/host",
            &[("Authorization", &auth)],
            &body,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if imported(d) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!(
        "the host's baseline was not imported: {:?}",
        d.workload("host")
    );
}

#[test]
fn sequence_model_learns_an_order_and_alerts_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(dir.path(), FAST_LEARNING);
    host_sequences_off(&d);
    let (key, c) = seq_workload("paths", ctl.path());
    d.wait_state(&key, "stable", Duration::from_secs(90));

    // Learned from kernel counts, calibrated on traced learning threads.
    let exported = baseline(&d, &key);
    let (value, model) = models(&exported);
    assert!(model.known_len() > 6, "{value}");
    let calibration = model.calibration().expect("calibrated on learning traces");
    assert!(calibration.held_out >= 2, "{calibration:?}");

    // The learned path keeps running in detection: no sequence alert, for it or anything else
    // in the container.
    std::thread::sleep(Duration::from_secs(5));
    let quiet: Vec<Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["habitd"]["workload"] == key.as_str() && is_sequence_alert(a))
        .collect();
    assert!(
        quiet.is_empty(),
        "the learned behaviour alerted: {quiet:#?}"
    );

    // Same binary, same syscalls, another order: a sequence alert naming the process and
    // the unknown sequences by syscall name.
    let alert = expect_reordered_alert(&d, &key, ctl.path());
    let output = alert["output"].as_str().unwrap();
    assert!(output.contains("Unusual syscall sequence"), "{output}");
    let examples = alert["output_fields"]["habitd.sequence.examples"]
        .as_array()
        .unwrap();
    assert!(!examples.is_empty());
    assert!(
        examples
            .iter()
            .any(|e| e.as_str().unwrap().contains("getpid → getegid")),
        "the examples show the new order: {examples:?}"
    );
    assert!(
        alert["output_fields"]["habitd.sequence.statistic"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // Only unknown grams (once each) and the sums of scored threads (every 256 grams and at
    // the end) cross the ring buffer, not the reordered path's 2400 syscalls per run.
    let runs_of_b = |d: &Daemon| {
        d.events()
            .iter()
            .filter(|e| {
                let f = &e["output_fields"];
                f["evt.type"] == "execve"
                    && f["proc.exepath"] == "/bin/seqpaths"
                    && f["proc.args"] == "b"
            })
            .count()
    };
    let records = |d: &Daemon| d.metric("habitd_events_total{type=\"sequence\"}");
    // The records counter is the daemon's, for the whole node: the host's sequences are off
    // (above), but other containers that run on the machine meanwhile (learning ones are
    // traced whole) add to it. So the reordered path runs for several windows and the quiet
    // ones are the measurement (the quietest, the one with fewest records per run, and those
    // within a quarter of it, summed: a window's edges cut runs): other activity only ever
    // adds records, never removes any.
    // The counts are read with the container frozen (`docker pause`) once the daemon has
    // handled what it sent (both counts unchanged for a second; a loaded machine can lag by
    // seconds): runs (their execs) and records are then counted alike.
    let settled = |d: &Daemon| {
        docker(&["pause", &c.id]);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut counts = (runs_of_b(d), records(d));
        loop {
            std::thread::sleep(Duration::from_millis(1000));
            let now = (runs_of_b(d), records(d));
            if now == counts || std::time::Instant::now() > deadline {
                counts = now;
                break;
            }
            counts = now;
        }
        docker(&["unpause", &c.id]);
        counts
    };
    std::fs::write(ctl.path().join("b"), "").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut windows = Vec::new();
    let mut previous = settled(&d);
    for _ in 0..WINDOWS {
        std::thread::sleep(WINDOW);
        let now = settled(&d);
        windows.push((now.0 - previous.0, now.1 - previous.1));
        previous = now;
    }
    std::fs::remove_file(ctl.path().join("b")).unwrap();
    eprintln!("(runs, sequence records) per {WINDOW:?} window of the reordered path: {windows:?}");
    let rate = |(runs, sent): (usize, f64)| sent / runs as f64;
    let quietest = windows
        .iter()
        .copied()
        .filter(|(runs, _)| *runs >= 3)
        .map(rate)
        .min_by(f64::total_cmp)
        .unwrap_or_else(|| panic!("the reordered path hardly ran: {windows:?}"));
    let quiet: Vec<(usize, f64)> = windows
        .iter()
        .copied()
        .filter(|w| w.0 >= 3 && rate(*w) <= quietest * 1.25)
        .collect();
    let runs: usize = quiet.iter().map(|w| w.0).sum();
    let sent: f64 = quiet.iter().map(|w| w.1).sum();
    let per_run = sent / runs as f64;
    eprintln!(
        "{sent} sequence records for {runs} runs of the reordered path in {} quiet windows: \
         {per_run:.2} per run",
        quiet.len()
    );
    // Per run of 2400 syscalls: the thread's sums every 256 grams (9) and at its end (1); its
    // unknown grams crossed once, when it first ran. The loop's shell adds its own sums now
    // and then (a few records a window, more per run when a loaded machine runs fewer runs).
    // Measured: 150-156 records per window of 15 runs, 10.1-10.2 per run (10.4 on a loaded
    // machine). Fewer than 9.5 means the sums are not sent (the thread is not scored); more
    // than 11.5, that grams or syscalls cross.
    assert!(
        RECORDS_PER_RUN.contains(&per_run),
        "{per_run:.1} sequence records per run of 2400 syscalls ({sent} for {runs} runs), \
         outside {RECORDS_PER_RUN:?}; windows (runs, records): {windows:?}"
    );

    // Through sled: a kill -9 and a restart keep the model, and it still detects.
    d.kill9();
    let d = Daemon::start_in(dir.path(), FAST_LEARNING);
    let (after, _) = models(&baseline(&d, &key));
    assert_eq!(
        after, value,
        "the models read back from sled are the ones exported"
    );
    expect_reordered_alert(&d, &key, ctl.path());

    // Through export/import: the exported baseline imports and exports unchanged.
    let path = format!("/api/v1/baselines/{}", key.replace('/', "%2F"));
    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        http_request(d.port, "PUT", &path, &[("Authorization", &auth)], &exported).unwrap();
    assert_eq!(status, 200, "{body}");
    let (reimported, _) = models(&baseline(&d, &key));
    assert_eq!(reimported, value);

    // A container's shutdown is not an intrusion: the reordered path run just before the
    // container is killed is set aside (its cgroup is gone when the alert is due), not raised.
    let seen = seqpaths_alerts(&d, &key).len();
    std::fs::write(ctl.path().join("b"), "").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    docker(&["kill", &c.id]);
    let stopping = "habitd_sequence_findings_set_aside_total{reason=\"stopping\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while d.metric(stopping) < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(ctl.path().join("b")).unwrap();
    assert!(
        d.metric(stopping) >= 1.0,
        "the reordered path of a container killed at once was not set aside; log:\n{}",
        common::tail(&d.log(), 40)
    );
    let raised = seqpaths_alerts(&d, &key);
    assert_eq!(
        raised.len(),
        seen,
        "a sequence alert of a stopped container was raised: {:#?}",
        &raised[seen..]
    );
    drop(c);
}

/// A child process in a cgroup of its own (v2 hierarchy), killed and its cgroup removed on drop.
struct CgroupChild {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    dir: std::path::PathBuf,
}

impl CgroupChild {
    /// Starts `gramloop CPU` and moves it into a new cgroup.
    fn start(cpu: usize) -> Self {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|d| d.join("cgroup.procs").exists() && d.join("cgroup.threads").exists())
            .expect("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup");
        let dir = root.join(format!("habitd-gramcache-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        let mut child = Command::new(static_helper("gramloop"))
            .arg(cpu.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting gramloop");
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
            .unwrap_or_else(|e| panic!("moving gramloop into {}: {e}", dir.display()));
        let stdout = child.stdout.take().expect("gramloop's stdout");
        Self {
            child,
            lines: std::io::BufReader::new(stdout).lines(),
            dir,
        }
    }

    fn cgroup_id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir).unwrap().ino()
    }

    /// Makes `n` calls of syscall `name` in a row and waits until they are done.
    fn run(&mut self, n: u64, name: &str) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("gramloop's stdin");
        writeln!(stdin, "{n} {name}").expect("writing to gramloop");
        let line = self
            .lines
            .next()
            .expect("gramloop ended")
            .expect("reading gramloop");
        assert_eq!(line, "done", "gramloop said {line:?}");
    }

    /// Ends the process (end of input) and waits for it.
    fn finish(&mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("waiting for gramloop");
        assert!(status.success(), "gramloop failed: {status}");
    }
}

impl Drop for CgroupChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The kernel reads 6-gram values in detection through a per-CPU cache (probes/bpf/sequence.h).
/// A process pinned to one CPU repeats getppid (its 6-gram valued V1) and getuid (its 6-gram
/// unknown); user space then values getppid's gram V2 and getuid's V3 and the process repeats
/// both again on the same CPU, whose cache holds the old answers. The thread's final sum must
/// use each value exactly where it applied, and getuid's gram must be reported unknown in the
/// first run only: a cache entry of a changed gram is never served after the change.
#[test]
fn the_gram_cache_serves_values_that_user_space_changed() {
    use habit_probes::abi;
    use habit_probes::event::EventBody;
    use habit_probes::loader::{ProbeConfig, Probes};
    use std::sync::{Arc, Mutex};

    common::require_root_and_bpf();
    const WID: u32 = 77;
    const V1: u32 = 1_000;
    const V2: u32 = 7_000;
    const V3: u32 = 300;
    const K1: u64 = 1_000;
    const K2: u64 = 2_000;
    const K3: u64 = 300;
    let ppid_gram = habit_models::sequence::encode(&[libc::SYS_getppid as u32; 6]);
    let uid_gram = habit_models::sequence::encode(&[libc::SYS_getuid as u32; 6]);
    // SAFETY: sysconf has no preconditions.
    let cpu = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as usize).max(1) - 1;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let mut probes =
        Probes::load(&ProbeConfig::default()).unwrap_or_else(|e| panic!("loading the probes: {e}"));
    let mut events = probes.take_events().unwrap();
    let mut child = CgroupChild::start(cpu);
    let pid = child.child.id();
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    rt.spawn(async move {
        let mut batch = Vec::new();
        while events.next_batch(&mut batch, |_| {}).await.is_ok() {
            let mut sink = sink.lock().unwrap();
            for ev in &batch {
                if let (EventBody::Sequence(r), true) = (&ev.body, ev.header.pid == pid) {
                    sink.push(*r);
                }
            }
        }
    });

    // A syscall in the new cgroup gives it a counter slot; its threads then detect.
    child.run(1, "getppid");
    let slot = probes
        .counters
        .slot_of(child.cgroup_id())
        .expect("the kernel gave gramloop's cgroup no slot");
    let detect = abi::SeqSlot {
        mode: abi::SEQ_DETECT,
        wid: WID,
        samples: 0,
        grams: 0,
    };
    probes.sequences.set_slot(slot, detect).unwrap();
    let gen0 = probes.sequences.generation(WID).unwrap();
    probes
        .sequences
        .set_values(WID, [(ppid_gram, V1, true)])
        .unwrap();
    let gen1 = probes.sequences.generation(WID).unwrap();
    assert_ne!(
        gen0, gen1,
        "set_values did not advance the workload's generation"
    );

    child.run(K1, "getppid");
    child.run(K3, "getuid");
    probes
        .sequences
        .set_values(WID, [(ppid_gram, V2, true), (uid_gram, V3, true)])
        .unwrap();
    child.run(K2, "getppid");
    child.run(K3, "getuid");
    child.finish();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let end = loop {
        let found = records
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.has(abi::SEQ_REC_END))
            .copied();
        if let Some(end) = found {
            break end;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no END record from gramloop within 10 s; kernel drops: {:?}",
            probes.counters.read_drops()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let records = records.lock().unwrap().clone();
    assert!(
        records.iter().all(|r| r.wid == WID),
        "a record of another workload id"
    );
    let uid_unknown = records
        .iter()
        .filter(|r| r.has(abi::SEQ_REC_UNKNOWN) && r.gram == uid_gram)
        .count() as u64;
    assert_eq!(
        uid_unknown,
        K3 - 5,
        "getuid's 6-gram must be unknown in the first run only (K3 - 5 records)"
    );
    let expected = (K1 - 5) * u64::from(V1) + (K2 - 5) * u64::from(V2) + (K3 - 5) * u64::from(V3);
    assert_eq!(
        end.known_sum, expected,
        "the thread's sum of known values: each gram's value where it applied \
         ((K1-5)*V1 + (K2-5)*V2 + (K3-5)*V3); nsys {} unknown {}",
        end.nsys, end.unknown
    );
}
