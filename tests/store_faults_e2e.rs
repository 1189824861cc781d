//! Nothing learned is lost: the store under crashes and a full disk.
//!
//! **Crashes.** habitd killed with `kill -9` at random moments — while learning,
//! starting, freezing a baseline, importing one, extending and merging one, relearning — at
//! least 50 times over one store.
//!
//! After every kill the next habitd must open the store and serve it, every workload must be
//! consistent (a stable one has its baseline, the models' learning data exists only for
//! learning workloads), a decision the API had answered must have survived, and a workload that
//! was learning must resume where its last checkpoint left it: no fewer profile items, rate
//! intervals, 6-grams or calibration traces than a view taken two checkpoints before the kill.
//! At the end the store is opened directly and every value in it decoded.
//!
//! `HABITD_CRASH_ROUNDS` sets the number of kills (default 50); `HABITD_CRASH_SEED` replays a
//! run (the seed is printed).
//!
//! **A full disk.** The store on a small tmpfs filled while a workload learns: learning
//! pauses (metric, log; the workload does not freeze although it converged), detection of a
//! stable workload goes on, and when space returns the store is reopened, learning resumes
//! and the workload freezes; every stored value decodes.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    Container, Daemon, TOKEN, alerts_of, busybox_image, habitd_bin, has_novel, http_request, tail,
};
use habit_profiles::store::{ProfileStore, WorkloadState};
use serde_json::Value;

const CONFIG: &str = "[learning]\nmin = \"1h\"\nstable = \"1h\"\nmax = \"2h\"\n\
    interval = \"1s\"\ncheckpoint = \"200ms\"\n[probes]\ncounters_interval = \"1s\"\n";
/// Completed checkpoints after a view that make what it showed durable (one is enough: the
/// engine publishes views and checkpoints in turn; two leave no doubt).
const DURABLE_CHECKPOINTS: f64 = 2.0;
const CHECKPOINTS: &str = "habitd_store_checkpoints_total";

/// Waits until `DURABLE_CHECKPOINTS` more checkpoints completed (what the API showed before is
/// in the store); false if that takes more than 10 s (a loaded machine: nothing is assumed).
/// A fixed wait was not enough when other tests' daemons and Docker shared the two cores.
fn wait_durable(daemon: &Daemon) -> bool {
    let before = daemon.metric(CHECKPOINTS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if daemon.metric(CHECKPOINTS) >= before + DURABLE_CHECKPOINTS {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A small deterministic generator (xorshift64*): a failing run replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.next() % max.max(1))
    }
}

/// What an operator does just before a kill.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// Nothing: the kill falls in plain learning.
    Learn,
    /// `mode detect` on a learning workload: freeze (a merge, when it extends a baseline).
    Freeze,
    /// `mode learn` on a stable workload: extend its baseline (merged at the next freeze).
    Extend,
    /// `mode relearn`.
    Relearn,
    /// `PUT /api/v1/baselines/{key}` of a second workload.
    Import,
    /// The kill falls while habitd starts (opening the store, loading probes).
    Startup,
}

const OPS: [Op; 6] = [
    Op::Learn,
    Op::Freeze,
    Op::Extend,
    Op::Relearn,
    Op::Import,
    Op::Startup,
];

fn post_mode(port: u16, key: &str, mode: &str) -> Option<u16> {
    let auth = format!("Bearer {TOKEN}");
    http_request(
        port,
        "POST",
        &format!("/api/v1/workloads/{key}/mode"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &format!("{{\"mode\":\"{mode}\"}}"),
    )
    .map(|(status, _)| status)
}

fn put_baseline(port: u16, key: &str, body: &str) -> Option<u16> {
    let auth = format!("Bearer {TOKEN}");
    http_request(
        port,
        "PUT",
        &format!("/api/v1/baselines/{key}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .map(|(status, _)| status)
}

/// The API view of `key`, once the daemon knows it (the container's first events).
fn wait_for(daemon: &Daemon, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(view) = daemon.workload(key) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never appeared:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The size of what a learning workload has learned, from its API view.
fn learned(view: &Value) -> [u64; 4] {
    let models = &view["learning"]["models"];
    [
        view["items"].as_u64().unwrap_or(0),
        models["rate_intervals"].as_u64().unwrap_or(0),
        models["sequence_grams"].as_u64().unwrap_or(0),
        models["sequence_traces"].as_u64().unwrap_or(0),
    ]
}

/// Every workload the API serves is consistent: a stable or unstable one with a baseline
/// serves it. Returns the views.
fn check_served(daemon: &Daemon, round: usize) -> Vec<Value> {
    let (status, body) = daemon.get("/api/v1/workloads").expect("workloads answered");
    assert_eq!(status, 200, "round {round}: {body}");
    let views: Vec<Value> = serde_json::from_str(&body).unwrap();
    for v in &views {
        if v["state"] == "stable" {
            let key = v["key"].as_str().unwrap();
            let (status, body) = daemon
                .get(&format!("/api/v1/baselines/{key}"))
                .expect("baseline answered");
            assert_eq!(
                status, 200,
                "round {round}: stable {key} has no baseline: {body}"
            );
        }
    }
    views
}

/// Opens the store directly and decodes every value in it; checks the invariants between the
/// trees. Returns the number of workloads.
fn check_store(data: &Path) -> usize {
    let store = ProfileStore::open(data).expect("the store opens after the last kill");
    let records = store.workloads().list().expect("every record decodes");
    for r in &records {
        let profile = store.profiles().get(&r.key).expect("profile decodes");
        let baseline = store.baselines().get(&r.key).expect("baseline decodes");
        let models = store
            .model_learning()
            .get(&r.key)
            .expect("learning data reads");
        match r.state {
            WorkloadState::Stable => {
                assert!(baseline.is_some(), "{}: stable without a baseline", r.key);
                assert!(profile.is_none(), "{}: stable with a profile", r.key);
                assert!(models.is_none(), "{}: stable with learning data", r.key);
            }
            WorkloadState::Learning => {
                assert!(
                    r.baseline_created.is_none() || baseline.is_some() || profile.is_some(),
                    "{}: learning with nothing stored: {r:?}",
                    r.key
                );
            }
            WorkloadState::Unstable => {}
        }
        if let Some(bytes) = models {
            let data: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{}: learning data is not JSON: {e}", r.key));
            assert!(data["grams"].is_array(), "{}: {data}", r.key);
            assert!(
                profile.is_some(),
                "{}: learning data without a profile",
                r.key
            );
        }
    }
    records.len()
}

#[test]
fn fifty_kill_9_at_random_moments_lose_nothing_checkpointed() {
    common::require_docker();
    let rounds: usize = std::env::var("HABITD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed = std::env::var("HABITD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash loop: {rounds} rounds, HABITD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    // A workload that keeps doing things: new processes (6-grams, calibration traces), files,
    // and syscalls every counters interval.
    let image = busybox_image("crash");
    let key = "docker.io/habitd-e2e/busybox:crash".to_owned();
    let imported = "docker.io/habitd-e2e/busybox:crash-imported";
    let _c = Container::run(
        &image,
        &[
            "sh",
            "-c",
            "while true; do ls /bin > /dev/null; cat /etc/passwd > /dev/null; \
             head -c 100 /www/index.html > /dev/null; sleep 0.1; done",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // What must hold after the next restart.
    let mut expect_learned: Option<[u64; 4]> = None;
    let mut expect_state: Option<(String, &str)> = None;
    let mut exported: Option<String> = None;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let (mut resumed, mut decisions) = (0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let op = OPS[(rng.next() % OPS.len() as u64) as usize];
        if op == Op::Startup {
            // The config is the one the previous round's Daemon wrote (round 0 never comes
            // here without one: it starts a Daemon first).
            let config = dir.path().join("habitd.toml");
            if config.exists() {
                let mut child = Command::new(habitd_bin())
                    .args(["run", "--config"])
                    .arg(&config)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(rng.millis(1500));
                let _ = child.kill();
                let _ = child.wait();
                *counts.entry(format!("{op:?}")).or_default() += 1;
                continue;
            }
        }
        let mut daemon = Daemon::start_in_quiet(dir.path(), CONFIG);
        let views = check_served(&daemon, round);
        let view_of = |k: &str| views.iter().find(|v| v["key"] == k);
        if let Some((workload, state)) = &expect_state {
            let view = view_of(workload)
                .unwrap_or_else(|| panic!("round {round}: {workload} lost: {views:?}"));
            assert_eq!(
                view["state"], *state,
                "round {round}: a decision the API answered did not survive the kill: {view}"
            );
        }
        let view = view_of(&key);
        if let Some(before) = expect_learned {
            let view = view.unwrap_or_else(|| panic!("round {round}: {key} lost"));
            if view["state"] == "learning" {
                resumed += 1;
                let now = learned(view);
                for (i, what) in ["items", "rate intervals", "6-grams", "traces"]
                    .iter()
                    .enumerate()
                {
                    assert!(
                        now[i] >= before[i],
                        "round {round}: {what} went back from {} to {} after kill -9 \
                         (seed {seed}): {view}",
                        before[i],
                        now[i]
                    );
                }
            }
        }
        expect_learned = None;
        expect_state = None;

        // Learning goes on; the workload appears in the first round.
        let view = wait_for(&daemon, &key);
        if view["state"] == "stable" && exported.is_none() {
            let (_, body) = daemon.get(&format!("/api/v1/baselines/{key}")).unwrap();
            let mut file: Value = serde_json::from_str(&body).unwrap();
            file["workload"] = Value::from(imported);
            exported = Some(file.to_string());
        }
        std::thread::sleep(rng.millis(1000));
        let snapshot = daemon.workload(&key).unwrap();
        let durable = wait_durable(&daemon);
        if !durable {
            println!("round {round}: no two checkpoints within 10 s; learning not compared");
        }
        let learning = snapshot["state"] == "learning";

        // The operation, answered or not when the kill comes: (workload, state it must be in
        // after the restart if the API answered, the request).
        type Request = Box<dyn FnOnce() -> Option<u16> + Send>;
        let port = daemon.port;
        let k = key.clone();
        let request: Option<(String, &str, Request)> = match op {
            Op::Freeze if learning => Some((
                k.clone(),
                "stable",
                Box::new(move || post_mode(port, &k, "detect")),
            )),
            Op::Extend if !learning => Some((
                k.clone(),
                "learning",
                Box::new(move || post_mode(port, &k, "learn")),
            )),
            Op::Relearn => Some((
                k.clone(),
                "learning",
                Box::new(move || post_mode(port, &k, "relearn")),
            )),
            Op::Import => exported.clone().map(|file| -> (String, &str, Request) {
                (
                    imported.to_owned(),
                    "stable",
                    Box::new(move || put_baseline(port, imported, &file)),
                )
            }),
            _ => None,
        };
        let (tx, rx) = mpsc::channel();
        let requested = request.is_some();
        if let Some((workload, state, send)) = request {
            std::thread::spawn(move || {
                let _ = tx.send((workload, state, send()));
            });
            std::thread::sleep(rng.millis(300));
        } else if learning && durable {
            // Plain learning: everything the snapshot showed is two checkpoints old.
            expect_learned = Some(learned(&snapshot));
        }
        daemon.kill9();
        let moment = match (requested, learning) {
            (true, _) => format!("{op:?}"),
            (false, true) => "learning".to_owned(),
            (false, false) => "detecting".to_owned(),
        };
        *counts.entry(moment).or_default() += 1;
        if let Ok((workload, state, Some(200))) = rx.recv_timeout(Duration::from_millis(50)) {
            // Answered before the kill: the decision must be in the store.
            expect_state = Some((workload, state));
            decisions += 1;
        }
        drop(daemon);
    }
    let daemon = Daemon::start_in_quiet(dir.path(), CONFIG);
    check_served(&daemon, rounds);
    drop(daemon);
    let workloads = check_store(&data);
    println!(
        "crash loop: {rounds} kills in {:.0} s, at {counts:?}; the store opened every time; \
         learning resumed at least where it was {resumed} times, {decisions} answered decisions \
         survived; the store holds {workloads} consistent workloads",
        started.elapsed().as_secs_f64()
    );
    assert!(workloads >= 1);
}

/// A tmpfs mounted on a directory for the test's life.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the test runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        let fill = self.0.join("fill");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}", fill.display()))
            .output();
        let stat = Command::new("df").arg(&self.0).output().unwrap();
        println!("disk full:\n{}", String::from_utf8_lossy(&stat.stdout));
        fill
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Learning converges after `LEARN_MIN` at the earliest: the store must fail before that, or
/// the learner could freeze before the disk was seen full (sled writes into its file's free
/// space first; the failure came 3 to 5 s after the fill, once after the learner froze at
/// 4.2 s when `min` was 3 s).
const LEARN_MIN: Duration = Duration::from_secs(12);
const FAST: &str = "[learning]\nmin = \"12s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

fn wait_until(what: &str, daemon: &Daemon, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {timeout:?}\nhabitd log tail:\n{}",
            tail(&daemon.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_pauses_learning_detection_goes_on_and_learning_resumes_with_room() {
    full_disk(Failure::Reserve);
}

#[test]
fn a_write_that_fails_pauses_learning_until_a_restart_that_resumes_it() {
    full_disk(Failure::FailedWrite);
}

/// How the store meets the full disk.
#[derive(PartialEq)]
enum Failure {
    /// The default reserve: learning pauses before any write fails, resumes with room.
    Reserve,
    /// No reserve: a write fails; learning pauses until a restart.
    FailedWrite,
}

fn full_disk(failure: Failure) {
    common::require_docker();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("data"), "32m");
    let config = match failure {
        Failure::Reserve => FAST.to_owned(),
        Failure::FailedWrite => FAST.replace("[learning]\n", "[learning]\nstore_reserve = 0\n"),
    };
    let mut daemon = Daemon::start_in_quiet(dir.path(), &config);
    // A workload learned before the disk fills.
    let stable_key = "docker.io/habitd-e2e/busybox:disk-stable";
    let stable = Container::run(
        &busybox_image("disk-stable"),
        &[
            "sh",
            "-c",
            "while true; do ls /www > /dev/null; sleep 0.2; done",
        ],
    );
    daemon.wait_state(stable_key, "stable", Duration::from_secs(60));

    let fill = disk.fill();
    let started = Instant::now();
    // A new workload learns while nothing can be written: it converges (5 s) but is not frozen.
    let learner_key = "docker.io/habitd-e2e/busybox:disk-learner";
    let _learner = Container::run(
        &busybox_image("disk-learner"),
        &[
            "sh",
            "-c",
            "while true; do cat /etc/hostname > /dev/null; sleep 0.2; done",
        ],
    );
    wait_until(
        "habitd_store_writable 0",
        &daemon,
        Duration::from_secs(20),
        || daemon.metric("habitd_store_writable ") == 0.0,
    );
    let log = daemon.log();
    let expected = match failure {
        Failure::Reserve => "learning is paused (nothing",
        Failure::FailedWrite => "learning is paused until habitd restarts",
    };
    let paused = log.lines().find(|l| l.contains(expected));
    println!(
        "disk full: {} ({:.1} s after the learner started)",
        paused.unwrap_or_else(|| panic!("no `{expected}` in the log:\n{}", tail(&log, 20))),
        started.elapsed().as_secs_f64()
    );
    assert!(
        started.elapsed() < LEARN_MIN,
        "the store was seen full only {:?} after the learner started: it could have frozen \
         before (the test needs the failure first)",
        started.elapsed()
    );
    daemon.wait_state(learner_key, "learning", Duration::from_secs(30));

    // Detection goes on: a new program in the stable workload alerts.
    let out = stable.exec(&["id"]);
    assert!(out.status.success());
    wait_until(
        "an alert for `id` in the stable workload",
        &daemon,
        Duration::from_secs(20),
        || {
            alerts_of(&daemon, stable_key)
                .iter()
                .any(|a| has_novel(a, "exec", "/bin/id") || has_novel(a, "process_edge", "id"))
        },
    );
    // Past `min` and the `stable` window (its loop has nothing new after its first second, so
    // with a writable store it froze at `min`): converged, and still not frozen.
    std::thread::sleep((LEARN_MIN + Duration::from_secs(5)).saturating_sub(started.elapsed()));
    let view = daemon.workload(learner_key).unwrap();
    assert_eq!(
        view["state"], "learning",
        "converged, but not frozen while the disk is full: {view}"
    );

    std::fs::remove_file(&fill).unwrap();
    let freed = Instant::now();
    match failure {
        Failure::Reserve => {
            // Room again: learning resumes in this process, the learner freezes.
            wait_until(
                "habitd_store_writable 1",
                &daemon,
                Duration::from_secs(20),
                || daemon.metric("habitd_store_writable ") == 1.0,
            );
            daemon.wait_state(learner_key, "stable", Duration::from_secs(30));
            assert!(
                daemon.log().contains("learning resumed"),
                "{}",
                tail(&daemon.log(), 20)
            );
        }
        Failure::FailedWrite => {
            // Still paused with room: this store takes no more writes. A restart resumes.
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(daemon.metric("habitd_store_writable "), 0.0);
            let stopping = Instant::now();
            daemon.stop();
            assert!(
                stopping.elapsed() < Duration::from_secs(9),
                "SIGTERM did not stop habitd by itself (it waited {:?}): closing the failed \
                 store hung",
                stopping.elapsed()
            );
            assert!(daemon.log().contains("exiting without closing it"));
            drop(daemon);
            daemon = Daemon::start_in_quiet(dir.path(), &config);
            assert_eq!(daemon.workload(stable_key).unwrap()["state"], "stable");
            daemon.wait_state(learner_key, "stable", Duration::from_secs(30));
        }
    }
    println!(
        "disk full: learning resumed and the learner froze {:.1} s after space returned",
        freed.elapsed().as_secs_f64()
    );
    daemon.stop();
    drop(daemon);

    // Nothing corrupt: every value decodes, both baselines are there.
    check_store(&dir.path().join("data"));
    let store = ProfileStore::open(dir.path().join("data")).unwrap();
    for key in [stable_key, learner_key] {
        let key = habit_profiles::workload::WorkloadKey::from_raw(key);
        let record = store.workloads().get(&key).unwrap().unwrap();
        assert_eq!(record.state, WorkloadState::Stable, "{record:?}");
        assert!(store.baselines().get(&key).unwrap().is_some());
    }
}
