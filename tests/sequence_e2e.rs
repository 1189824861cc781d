//! End-to-end test of the syscall-sequence model: a real container learns with the kernel's
//! 6-gram path on, becomes stable, and a program that uses only known binaries, files and
//! syscalls but in another order raises a sequence alert, while the learned order raises none.
//! Both models (sequence and rate) survive a kill -9 (sled) and an export/import. Needs root, BTF and Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Container, Daemon, TOKEN, http_request, import_rootfs, static_busybox, static_helper,
};
use habit_models::sequence::SequenceModel;
use serde_json::Value;

/// Second-scale learning; the counters interval (which also moves the kernel's sequence modes
/// and reads its counts, and is the rate model's interval) at 1 s; 12 s of learning give the
/// rate model the 10 intervals it needs.
const FAST_LEARNING: &str = "[learning]\nmin = \"12s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.01\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(40);

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

#[test]
fn sequence_model_learns_an_order_and_alerts_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(dir.path(), FAST_LEARNING);
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
    let (runs_before, records_before) = (runs_of_b(&d), records(&d));
    std::fs::write(ctl.path().join("b"), "").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(ctl.path().join("b")).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let runs = runs_of_b(&d) - runs_before;
    let sent = records(&d) - records_before;
    eprintln!("{sent} sequence records for {runs} runs of the reordered path");
    assert!(runs >= 3, "only {runs} runs of the reordered path");
    // Per run: 9 checkpoints + 1 end, plus a few from the shell's fork child and the first
    // run's unknown grams (13 per run measured), against 2400 syscalls per run.
    assert!(
        sent <= (runs * 16 + 40) as f64,
        "{sent} sequence records for {runs} runs of 2400 syscalls"
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
    drop(c);
}
