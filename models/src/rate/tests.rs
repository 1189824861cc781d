//! End-to-end tests of the rate model on a synthetic workload: a web service with a busy and
//! an idle mode, Poisson-noisy syscall counts, a few backend connections and helper execs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};

use super::*;

const SECS: f64 = 10.0;
/// Normal connect and exec rates of the synthetic workload, per second.
const CONNECT_RATE: f64 = 0.5;
const EXEC_RATE: f64 = 0.3;

struct Workload {
    rng: Xoshiro256PlusPlus,
}

#[derive(Clone, Copy)]
struct Change {
    connect: f64,
    exec: f64,
    /// Share of privileged syscalls (`setuid`) added on top.
    setuid_per_sec: f64,
    bytes: bool,
    /// Factor on the clients' requests (3: a burst of three times the clients).
    load: f64,
}

const NORMAL: Change = Change {
    connect: 1.0,
    exec: 1.0,
    setuid_per_sec: 0.0,
    bytes: false,
    load: 1.0,
};

impl Workload {
    fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 50.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    fn pick(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }

    /// One interval: busy (70 %) or idle, request load varying ±10 % within a mode.
    fn interval(&mut self, change: Change) -> FeatureVector {
        let busy = self.uniform() < 0.7;
        let load = if busy { 200.0 } else { 40.0 } * (0.1 * self.normal()).exp() * change.load;
        let requests = self.poisson(load * SECS) as f64;
        let mut b = IntervalFeatures::new(SECS);
        let per_request = [
            ("accept4", 1.0),
            ("read", 3.0),
            ("write", 2.0),
            ("openat", 0.5),
            ("close", 1.5),
            ("newfstatat", 1.0),
            ("epoll_wait", 2.0),
            ("futex", 4.0),
            ("sendto", 0.2),
            ("recvfrom", 0.2),
            ("mmap", 0.05),
            ("clock_gettime", 3.0),
        ];
        let mut opens = 0;
        let mut accepts = 0;
        for (name, per) in per_request {
            let count = self.poisson(per * requests);
            b.add_syscall(name, count);
            match name {
                "openat" => opens = count,
                "accept4" => accepts = count,
                _ => {}
            }
        }
        for (name, per_sec) in [
            ("futex", 50.0),
            ("nanosleep", 10.0),
            ("clock_gettime", 20.0),
            ("epoll_wait", 5.0),
        ] {
            let count = self.poisson(per_sec * SECS);
            b.add_syscall(name, count);
        }
        let connects = self.poisson(CONNECT_RATE * change.connect * SECS);
        b.add_syscalls(&[("socket", connects), ("connect", connects)]);
        b.add_events(EventKind::Connect, connects);
        for _ in 0..connects {
            let backend = self.pick(4);
            b.add_destination(&format!("10.0.0.{backend}:5432"));
        }
        let execs = self.poisson(EXEC_RATE * change.exec * SECS);
        b.add_syscalls(&[("clone", execs), ("execve", execs), ("wait4", execs)]);
        b.add_events(EventKind::Exec, execs);
        b.add_events(EventKind::Open, opens);
        b.add_events(EventKind::Accept, accepts);
        for _ in 0..opens.min(200) {
            let file = self.pick(30);
            b.add_file(&format!("/srv/www/page{file}.html"));
        }
        let setuids = self.poisson(change.setuid_per_sec * SECS);
        b.add_syscall("setuid", setuids);
        if change.bytes {
            b.add_bytes(self.poisson(requests * 2000.0));
        }
        b.finish()
    }

    fn intervals(&mut self, n: usize, change: Change) -> Vec<FeatureVector> {
        (0..n).map(|_| self.interval(change)).collect()
    }
}

fn config(false_alarm_rate: f64) -> RateConfig {
    RateConfig {
        false_alarm_rate,
        ..RateConfig::default()
    }
}

/// The serialised form holds only finite numbers, and loads back to a model that scores the
/// same.
fn assert_clean_round_trip(model: &RateModel, probes: &[FeatureVector]) {
    let json = serde_json::to_string(model).unwrap();
    for bad in ["NaN", "nan", "null", "inf"] {
        assert!(!json.contains(bad), "{bad} in {json}");
    }
    let back: RateModel = serde_json::from_str(&json).unwrap();
    assert_eq!(back.clusters(), model.clusters());
    assert_eq!(back.baselines().len(), model.baselines().len());
    for probe in probes {
        let (a, b) = (model.score(probe), back.score(probe));
        assert_eq!(a.anomalous, b.anomalous);
        assert!((a.statistic - b.statistic).abs() <= 1e-9 * a.statistic.max(1.0));
        assert!((a.score - b.score).abs() <= 1e-9);
        assert_eq!(
            a.top.iter().map(|d| &d.name).collect::<Vec<_>>(),
            b.top.iter().map(|d| &d.name).collect::<Vec<_>>()
        );
    }
}

fn assert_sane(score: &RateScore) {
    assert!(score.score.is_finite() && (0.0..=1.0).contains(&score.score));
    assert!(score.statistic.is_finite() && score.statistic >= 0.0);
    assert!(score.threshold.is_finite());
    for d in &score.top {
        assert!(d.z.is_finite() && d.observed.is_finite() && d.baseline_mean.is_finite());
        assert!(d.ratio.is_none_or(f64::is_finite));
    }
}

fn false_alarm_rate(model: &RateModel, intervals: &[FeatureVector]) -> f64 {
    let alarms = intervals
        .iter()
        .filter(|v| {
            let s = model.score(v);
            assert_sane(&s);
            s.anomalous
        })
        .count();
    alarms as f64 / intervals.len() as f64
}

/// Three times the clients (requests, their syscalls, accepts and opens, and the backend
/// connects they cause, all ×3, in the same mix) is within the default load headroom; the same
/// burst without headroom, and a rise of what does not follow load (execs) or more than the
/// headroom (a 40× connect scan), are anomalous.
#[test]
fn a_burst_of_three_times_the_clients_is_within_the_load_headroom() {
    let mut w = Workload::new(11);
    let learning = w.intervals(120, NORMAL);
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    let strict = RateModel::fit(
        &learning,
        &RateConfig {
            load_headroom: 1.0,
            ..RateConfig::default()
        },
    )
    .unwrap();
    let burst = Change {
        load: 3.0,
        connect: 3.0,
        ..NORMAL
    };
    let bursts = w.intervals(200, burst);
    let alarms = bursts.iter().filter(|v| model.score(v).anomalous).count();
    assert_eq!(alarms, 0, "3x clients alarmed {alarms} of 200 intervals");
    let strict_alarms = bursts.iter().filter(|v| strict.score(v).anomalous).count();
    assert!(
        strict_alarms > 150,
        "without headroom 3x clients alarm ({strict_alarms} of 200)"
    );
    for change in [
        Change {
            exec: 20.0,
            ..NORMAL
        },
        Change {
            connect: 40.0,
            ..NORMAL
        },
    ] {
        let s = model.score(&w.interval(change));
        assert!(s.anomalous, "{}", s.explain());
        assert_eq!(s.direction, RateDirection::Rise);
    }
    // Stored and loaded, the headroom scores the same (old models get the default).
    assert_clean_round_trip(&model, &bursts[..5]);
    let mut json: serde_json::Value = serde_json::to_value(&model).unwrap();
    assert_eq!(json["load_headroom"], serde_json::json!(4.0));
    json.as_object_mut().unwrap().remove("load_headroom");
    let old: RateModel = serde_json::from_value(json).unwrap();
    assert_eq!(old.score(&bursts[0]), model.score(&bursts[0]));
    assert!(
        RateModel::fit(
            &learning,
            &RateConfig {
                load_headroom: 0.5,
                ..RateConfig::default()
            }
        )
        .is_err()
    );
}

#[test]
fn normal_intervals_alarm_at_about_the_requested_rate() {
    let mut w = Workload::new(1);
    let learning = w.intervals(300, NORMAL);
    let fresh = w.intervals(4000, NORMAL);
    // Without the floor (min_threshold 0) and without load headroom (which scoring applies,
    // not the calibration) the calibration alone decides.
    let cfg = RateConfig {
        min_threshold: 0.0,
        load_headroom: 1.0,
        ..config(0.01)
    };
    let fitted = RateModel::fit(&learning, &cfg).unwrap();
    assert_eq!(fitted.clusters(), 2, "busy and idle modes");
    for target in [0.01, 0.05] {
        let model = fitted.with_false_alarm_rate(target).unwrap();
        let observed = false_alarm_rate(&model, &fresh);
        eprintln!(
            "target {target}: observed {observed:.4}, threshold {:.1}",
            model.calibration().threshold
        );
        assert!(
            observed >= target / 2.0 && observed <= 2.0 * target,
            "target {target}, observed {observed}"
        );
    }
    // With the load headroom: at most the target (it only lowers statistics).
    let headroom = RateModel::fit(
        &learning,
        &RateConfig {
            min_threshold: 0.0,
            ..config(0.01)
        },
    )
    .unwrap();
    let observed = false_alarm_rate(&headroom, &fresh);
    eprintln!("load headroom, target 0.01: observed {observed:.4}");
    assert!(observed <= 0.01, "observed {observed}");
    // With the default floor: at most about the target (the floor only raises the threshold).
    let model = RateModel::fit(&learning, &config(0.01)).unwrap();
    assert!(model.calibration().threshold >= RateConfig::default().min_threshold);
    let observed = false_alarm_rate(&model, &fresh);
    eprintln!("default floor, target 0.01: observed {observed:.4}");
    assert!(observed <= 0.02, "observed {observed}");
    let loose = model.with_false_alarm_rate(0.05).unwrap();
    assert!(false_alarm_rate(&loose, &fresh) <= 0.05);
    let strict = model.with_false_alarm_rate(0.001).unwrap();
    let observed = false_alarm_rate(&strict, &fresh);
    eprintln!("default floor, target 0.001: observed {observed:.4}");
    assert!(observed <= 0.004, "observed {observed}");
}

#[test]
fn a_short_learning_phase_still_calibrates() {
    let mut w = Workload::new(2);
    let learning = w.intervals(30, NORMAL);
    let fresh = w.intervals(2000, NORMAL);
    let model = RateModel::fit(&learning, &config(0.01)).unwrap();
    let observed = false_alarm_rate(&model, &fresh);
    eprintln!(
        "30 intervals, {} clusters: observed {observed:.4}",
        model.clusters()
    );
    assert!(observed <= 0.04, "observed {observed}");
    let storm = w.interval(Change {
        connect: 40.0,
        ..NORMAL
    });
    assert!(model.score(&storm).anomalous);
}

#[test]
fn a_connect_storm_is_named_with_its_rates() {
    let mut w = Workload::new(3);
    let model = RateModel::fit(&w.intervals(200, NORMAL), &RateConfig::default()).unwrap();
    for _ in 0..20 {
        let storm = w.interval(Change {
            connect: 40.0,
            ..NORMAL
        });
        let score = model.score(&storm);
        assert_sane(&score);
        assert!(score.anomalous, "{}", score.explain());
        assert!(score.score > 0.999);
        let first = &score.top[0];
        assert_eq!(first.name, "rate.connect", "{}", score.explain());
        assert_eq!(first.label, "connect rate");
        assert!((first.baseline_mean - CONNECT_RATE).abs() < 0.1);
        assert_eq!(first.observed, storm.by_name("rate.connect").unwrap());
        let ratio = first.ratio.unwrap();
        assert!((25.0..60.0).contains(&ratio), "ratio {ratio}");
        let text = score.explain();
        assert!(text.starts_with("rate anomaly"), "{text}");
        assert!(text.contains("connect rate"), "{text}");
        assert!(text.contains("× baseline (0.5"), "{text}");
        assert!(text.contains("/s → "), "{text}");
    }
}

#[test]
fn an_exec_burst_is_named_with_its_rates() {
    let mut w = Workload::new(4);
    let model = RateModel::fit(&w.intervals(200, NORMAL), &RateConfig::default()).unwrap();
    for _ in 0..20 {
        let burst = w.interval(Change {
            exec: 20.0,
            ..NORMAL
        });
        let score = model.score(&burst);
        assert!(score.anomalous, "{}", score.explain());
        let first = &score.top[0];
        assert_eq!(first.name, "rate.exec", "{}", score.explain());
        assert!((first.baseline_mean - EXEC_RATE).abs() < 0.1);
        assert!(first.ratio.unwrap() > 10.0);
        assert!(score.explain().contains("exec rate"));
    }
}

#[test]
fn a_never_seen_syscall_group_is_named() {
    let mut w = Workload::new(5);
    let model = RateModel::fit(&w.intervals(100, NORMAL), &RateConfig::default()).unwrap();
    let score = model.score(&w.interval(Change {
        setuid_per_sec: 100.0,
        ..NORMAL
    }));
    assert!(score.anomalous);
    assert_eq!(score.top[0].name, "share.privileged");
    assert_eq!(score.top[0].ratio, None);
    assert!(
        score.explain().contains("never above 0 in baseline"),
        "{}",
        score.explain()
    );
}

#[test]
fn a_quieter_workload_is_explained_as_below_baseline() {
    let mut w = Workload::new(6);
    let model = RateModel::fit(&w.intervals(100, NORMAL), &RateConfig::default()).unwrap();
    let mut quiet = w.interval(NORMAL);
    quiet.set(Feature::Rate(RateKind::Syscalls), 1.0);
    let score = model.score(&quiet);
    assert!(score.anomalous);
    assert_eq!(score.top[0].name, "rate.syscalls");
    assert!(
        score.explain().contains("below baseline"),
        "{}",
        score.explain()
    );
    assert_eq!(score.direction, RateDirection::Drop);
}

/// Issue 11: a learned busy server whose load stops (its syscalls fall hundreds of times and
/// its mix turns to polling and timers) is a drop, not a rise; the storms and bursts above
/// are rises, a new syscall group at the usual rates is a change of mix or a rise.
#[test]
fn anomalies_have_a_direction() {
    let learning: Vec<FeatureVector> = (0..40)
        .map(|i| quiet_service(400 + (i % 7) * 10).finish())
        .collect();
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    // The load stops: one timer wake-up and a poll per second.
    let mut idle = IntervalFeatures::new(1.0);
    idle.add_syscalls(&[("epoll_wait", 10), ("clock_gettime", 2), ("openat", 1)]);
    idle.add_events(EventKind::Open, 1);
    idle.add_file("/proc/self/stat");
    let score = model.score(&idle.finish());
    assert!(score.anomalous, "{}", score.explain());
    assert_eq!(score.direction, RateDirection::Drop, "{}", score.explain());
    // Three times the learned load: a rise.
    let score = model.score(&quiet_service(4000).finish());
    assert!(score.anomalous, "{}", score.explain());
    assert_eq!(score.direction, RateDirection::Rise, "{}", score.explain());
    // The load stops but a process starts exec-ing and connecting: a rise, however idle.
    let mut dropper = IntervalFeatures::new(1.0);
    dropper.add_syscalls(&[("epoll_wait", 10), ("execve", 30), ("connect", 30)]);
    dropper.add_events(EventKind::Exec, 30);
    dropper.add_events(EventKind::Connect, 30);
    for i in 0..30 {
        dropper.add_destination(&format!("10.0.0.{i}:4444"));
    }
    let score = model.score(&dropper.finish());
    assert!(score.anomalous, "{}", score.explain());
    assert_eq!(score.direction, RateDirection::Rise, "{}", score.explain());
    // Serialised with its direction.
    let json = serde_json::to_value(&score).unwrap();
    assert_eq!(json["direction"], "rise");
}

#[test]
fn too_few_intervals_are_an_error() {
    let mut w = Workload::new(7);
    assert_eq!(
        RateModel::fit(&[], &RateConfig::default()),
        Err(RateError::TooFewIntervals { got: 0, need: 10 })
    );
    let one = w.intervals(1, NORMAL);
    let cfg = RateConfig {
        min_intervals: 1,
        ..RateConfig::default()
    };
    assert_eq!(
        RateModel::fit(&one, &cfg),
        Err(RateError::TooFewIntervals { got: 1, need: 2 })
    );
    // Two intervals are enough when configured so, and give a sane model.
    let two = w.intervals(2, NORMAL);
    let model = RateModel::fit(&two, &cfg).unwrap();
    let probes = w.intervals(5, NORMAL);
    for p in &probes {
        assert_sane(&model.score(p));
    }
    assert_clean_round_trip(&model, &probes);
}

#[test]
fn identical_intervals_give_a_sane_model() {
    let mut w = Workload::new(8);
    let one = w.interval(NORMAL);
    let learning = vec![one.clone(); 20];
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert_eq!(model.clusters(), 1);
    let same = model.score(&one);
    assert_sane(&same);
    assert!(!same.anomalous);
    assert_eq!(same.statistic, 0.0);
    assert_eq!(model.calibration().threshold, 25.0, "the floor decides");
    // Ordinary noise around the one learned interval does not alarm on every interval...
    let noisy = w.intervals(200, NORMAL);
    let busy_like: Vec<_> = noisy
        .iter()
        .filter(|v| {
            (v.by_name("rate.syscalls").unwrap() / one.by_name("rate.syscalls").unwrap() - 1.0)
                .abs()
                < 0.05
        })
        .collect();
    for v in &busy_like {
        assert_sane(&model.score(v));
    }
    // ...and a storm does.
    let mut storm = one.clone();
    storm.set(Feature::Rate(RateKind::Connect), 20.0);
    let score = model.score(&storm);
    assert!(score.anomalous);
    assert_eq!(score.top[0].name, "rate.connect");
    assert_clean_round_trip(&model, &[one, storm]);
}

#[test]
fn an_idle_workload_gives_a_sane_model() {
    let idle = IntervalFeatures::new(SECS).finish();
    let model = RateModel::fit(&vec![idle.clone(); 12], &RateConfig::default()).unwrap();
    let score = model.score(&idle);
    assert_sane(&score);
    assert!(!score.anomalous);
    let mut w = Workload::new(9);
    let busy = w.interval(NORMAL);
    let score = model.score(&busy);
    assert_sane(&score);
    assert!(score.anomalous);
    assert!(score.top.iter().all(|d| d.ratio.is_none()));
    assert_clean_round_trip(&model, &[idle, busy]);
}

#[test]
fn constant_features_do_not_blow_up() {
    let mut w = Workload::new(10);
    let mut learning = w.intervals(60, NORMAL);
    // Make the exec rate exactly constant and the connect rate exactly zero.
    for v in &mut learning {
        v.set(Feature::Rate(RateKind::Exec), 0.3);
        v.set(Feature::Rate(RateKind::Connect), 0.0);
    }
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    let exec = model.baseline(Feature::Rate(RateKind::Exec)).unwrap();
    assert_eq!(exec.std, 0.0);
    let mut probe = learning[0].clone();
    probe.set(Feature::Rate(RateKind::Exec), 0.4);
    let small = model.score(&probe);
    assert_sane(&small);
    assert!(!small.anomalous, "one more exec per interval is noise");
    probe.set(Feature::Rate(RateKind::Connect), 2.0);
    let score = model.score(&probe);
    assert_sane(&score);
    assert!(score.anomalous);
    assert_eq!(score.top[0].name, "rate.connect");
}

#[test]
fn optional_bytes_are_used_only_when_always_present() {
    let mut w = Workload::new(11);
    let with = Change {
        bytes: true,
        ..NORMAL
    };
    let mut learning = w.intervals(60, with);
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert!(model.baseline(Feature::Rate(RateKind::Bytes)).is_some());
    // Scoring an interval without bytes leaves the feature out instead of reading 0 B/s.
    let without = w.interval(NORMAL);
    let score = model.score(&without);
    assert_sane(&score);
    assert!(score.top.iter().all(|d| d.name != "rate.bytes"));
    assert_clean_round_trip(&model, &[without.clone(), w.interval(with)]);

    learning.push(without);
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert!(model.baseline(Feature::Rate(RateKind::Bytes)).is_none());
}

#[test]
fn serde_round_trip_and_validation() {
    let mut w = Workload::new(12);
    let model = RateModel::fit(&w.intervals(120, NORMAL), &RateConfig::default()).unwrap();
    let mut probes = w.intervals(50, NORMAL);
    probes.push(w.interval(Change {
        connect: 40.0,
        ..NORMAL
    }));
    assert_clean_round_trip(&model, &probes);
    let value = serde_json::to_value(&model).unwrap();
    assert_eq!(value["method"], METHOD);
    assert_eq!(value["features"][0]["feature"], "share.file_read");

    let load = |v: &serde_json::Value| serde_json::from_value::<RateModel>(v.clone());

    // A feature this build does not know: refused, with a reason.
    let mut unknown = value.clone();
    unknown["features"][1]["feature"] = "share.quantum".into();
    let err = load(&unknown).unwrap_err().to_string();
    assert!(err.contains("share.quantum"), "{err}");

    // A model without a feature this build has (an older layout): loads and scores.
    let mut older = value.clone();
    older["features"].as_array_mut().unwrap().remove(0);
    for c in older["clusters"].as_array_mut().unwrap() {
        c["center"].as_array_mut().unwrap().remove(0);
        c["scale"].as_array_mut().unwrap().remove(0);
        c["mean"].as_array_mut().unwrap().remove(0);
    }
    let older = load(&older).unwrap();
    assert_eq!(older.baselines().len(), model.baselines().len() - 1);
    assert!(older.score(probes.last().unwrap()).anomalous);

    for (path, bad) in [
        ("/clusters/0/scale/0", serde_json::json!(0.0)),
        ("/clusters/0/center", serde_json::json!([1.0])),
        ("/calibration/tail_scale", serde_json::json!(-1.0)),
        ("/calibration/threshold", serde_json::Value::Null),
        ("/method", serde_json::json!("something/else")),
        ("/format", serde_json::json!(99)),
        ("/features/0/transform", serde_json::json!("log1p")),
    ] {
        let mut broken = value.clone();
        *broken.pointer_mut(path).unwrap() = bad;
        assert!(load(&broken).is_err(), "{path} accepted");
    }
}

#[test]
fn fitting_is_deterministic_and_recalibration_is_monotone() {
    let mut w = Workload::new(13);
    let learning = w.intervals(150, NORMAL);
    let a = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    let b = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert_eq!(a, b);
    let thresholds: Vec<f64> = [0.001, 0.01, 0.1, 0.5]
        .iter()
        .map(|&r| a.with_false_alarm_rate(r).unwrap().calibration().threshold)
        .collect();
    assert!(
        thresholds.windows(2).all(|t| t[0] >= t[1]),
        "{thresholds:?}"
    );
    assert!(a.with_false_alarm_rate(0.0).is_err());
    assert!(a.with_false_alarm_rate(f64::NAN).is_err());
}

#[test]
fn bad_configurations_are_refused() {
    let mut w = Workload::new(14);
    let learning = w.intervals(20, NORMAL);
    let base = RateConfig::default();
    for cfg in [
        RateConfig {
            false_alarm_rate: 0.0,
            ..base.clone()
        },
        RateConfig {
            false_alarm_rate: f64::NAN,
            ..base.clone()
        },
        RateConfig {
            folds: 1,
            ..base.clone()
        },
        RateConfig {
            max_clusters: 0,
            ..base.clone()
        },
        RateConfig {
            min_share_std: 0.0,
            ..base.clone()
        },
        RateConfig {
            min_threshold: f64::INFINITY,
            ..base.clone()
        },
        RateConfig {
            top_features: 1000,
            ..base.clone()
        },
    ] {
        assert!(matches!(
            RateModel::fit(&learning, &cfg),
            Err(RateError::InvalidConfig(_))
        ));
    }
    // The configuration itself reads from partial TOML-like input.
    let partial: RateConfig = serde_json::from_str(r#"{"false_alarm_rate": 0.05}"#).unwrap();
    assert_eq!(partial.folds, base.folds);
}

/// A quiet web service seen over 1-s intervals (a small container answering a health check
/// every 200 ms): `requests` times the same bundle of syscalls, and nothing else.
fn quiet_service(requests: u64) -> IntervalFeatures {
    let mut b = IntervalFeatures::new(1.0);
    for (name, per_request) in [
        ("accept4", 1),
        ("read", 2),
        ("openat", 2),
        ("newfstatat", 3),
        ("write", 2),
        ("close", 4),
        ("clone", 1),
        ("wait4", 1),
        ("rt_sigaction", 3),
        ("clock_gettime", 2),
        ("fcntl", 2),
    ] {
        b.add_syscall(name, per_request * requests);
    }
    b.add_events(EventKind::Accept, requests);
    b.add_events(EventKind::Open, 2 * requests);
    b.add_file("/www/index.html").add_file("/etc/httpd.conf");
    b
}

/// The container's first interval: the runtime and the entrypoint starting (one exec, a few
/// hundred opens, stats and mappings), ten times any later interval.
fn start_up() -> FeatureVector {
    let mut b = quiet_service(2);
    b.add_syscalls(&[
        ("execve", 1),
        ("openat", 76),
        ("newfstatat", 300),
        ("read", 250),
        ("mmap", 120),
        ("mprotect", 40),
        ("close", 150),
        ("rt_sigaction", 120),
        ("prctl", 30),
        ("setuid", 2),
        ("capset", 2),
        ("mount", 20),
        ("fcntl", 300),
    ]);
    b.add_event(EventKind::Exec).add_events(EventKind::Open, 76);
    for i in 0..4 {
        b.add_file(&format!("/lib/{i}.so"));
    }
    b.finish()
}

/// Learning of the quiet service: its start-up, then steady intervals of 4 to 6 requests.
fn quiet_learning() -> Vec<FeatureVector> {
    let mut learning = vec![start_up()];
    for requests in [5, 5, 5, 4, 5, 6, 5, 5, 5, 5, 4, 5, 5, 5] {
        learning.push(quiet_service(requests).finish());
    }
    learning
}

#[test]
fn a_start_up_interval_is_set_aside_and_does_not_inflate_the_threshold() {
    let learning = quiet_learning();
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    let calibration = model.calibration();
    eprintln!(
        "quiet service: threshold {:.1}, transients {}, held-out max {:.1}",
        calibration.threshold,
        calibration.transients,
        calibration.heldout.last().unwrap()
    );
    // Kept, the start-up would dominate the held-out tail (a threshold in the thousands, which
    // no burst of this workload reaches) and inflate every spread of its one mode.
    assert_eq!(calibration.transients, 1);
    assert_eq!(calibration.heldout_count, learning.len() - 1);
    assert_eq!(model.intervals(), learning.len() - 1);
    assert!(calibration.threshold < 100.0, "{calibration:?}");
    let syscalls = model.baseline(Feature::Rate(RateKind::Syscalls)).unwrap();
    assert!(syscalls.max < 200.0, "baselines quote the steady intervals");
    // The same model as without the start-up.
    let without = RateModel::fit(&learning[1..], &RateConfig::default()).unwrap();
    assert_eq!(without.calibration().transients, 0);
    let ratio = calibration.threshold / without.calibration().threshold;
    assert!((0.8..1.25).contains(&ratio), "{ratio}");

    // Steady intervals stay quiet, a stray exec too...
    for requests in 4..=6 {
        let score = model.score(&quiet_service(requests).finish());
        assert_sane(&score);
        assert!(!score.anomalous, "{requests} requests: {}", score.explain());
    }
    let mut stray = quiet_service(5);
    stray.add_syscalls(&[("execve", 1), ("mmap", 3)]);
    stray.add_event(EventKind::Exec);
    let score = model.score(&stray.finish());
    assert!(!score.anomalous, "{}", score.explain());
    // ...and another start-up is beyond the threshold of the modes but like the one set
    // aside: explained (the daemon does not score a new cgroup's start-up anyway).
    let again = model.score(&start_up());
    assert!(again.statistic > calibration.threshold && !again.anomalous);
}

#[test]
fn a_burst_of_a_rare_event_is_named_before_the_aggregates_moving_with_it() {
    let model = RateModel::fit(&quiet_learning(), &RateConfig::default()).unwrap();
    // 300 `connect` helpers run in one second: 300 execs and connects where there were none,
    // 300 more accepts (the connects are to the service itself), 40 times the syscalls.
    let mut burst = quiet_service(5);
    burst.add_syscalls(&[
        ("execve", 300),
        ("clone", 300),
        ("wait4", 300),
        ("socket", 300),
        ("connect", 300),
        ("mmap", 1500),
        ("close", 600),
        ("exit_group", 300),
    ]);
    burst.add_syscalls(&[("accept4", 300), ("read", 600), ("write", 300)]);
    burst
        .add_events(EventKind::Exec, 300)
        .add_events(EventKind::Connect, 300)
        .add_events(EventKind::Accept, 300)
        .add_destination("127.0.0.1:8080");
    let score = model.score(&burst.finish());
    assert_sane(&score);
    let text = score.explain();
    eprintln!("{text}");
    assert!(score.anomalous, "{text}");
    // By |z| alone the syscall rate (≈ 40 spreads) and the accept rate would come first: a
    // rate from zero is held to ≈ 8 spreads by the one-event floor.
    let first = &score.top[0];
    assert!(
        first.name == "rate.exec" || first.name == "rate.connect",
        "{text}"
    );
    assert_eq!(first.ratio, None);
    assert_eq!(first.baseline_mean, 0.0);
    assert_eq!(first.observed, 300.0);
    assert!(score.top.iter().any(|d| d.z.abs() > first.z.abs()));
    assert!(
        text.contains("exec rate 300/s, never above 0 in baseline")
            && text.contains("connect rate 300/s, never above 0 in baseline"),
        "{text}"
    );
}

#[test]
fn transients_are_few_or_they_are_a_regime() {
    let mut w = Workload::new(15);
    let spike = |w: &mut Workload| {
        let mut v = w.interval(NORMAL);
        v.set(Feature::Rate(RateKind::Syscalls), 1e6);
        v.set(Feature::Rate(RateKind::Exec), 200.0);
        v
    };
    // Two isolated spikes among 60 intervals: set aside.
    let mut learning = w.intervals(60, NORMAL);
    learning[0] = spike(&mut w);
    learning[31] = spike(&mut w);
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert_eq!(model.calibration().transients, 2);
    // A transient is set aside, not forgotten: when it recurs (a periodic job), whole or
    // split across two intervals, it is explained; what learning never showed is anomalous.
    let job = spike(&mut w);
    assert!(model.score(&job).statistic > model.calibration().threshold);
    assert!(
        !model.score(&job).anomalous,
        "{}",
        model.score(&job).explain()
    );
    let mut half = w.interval(NORMAL);
    half.set(Feature::Rate(RateKind::Syscalls), 5e5);
    half.set(Feature::Rate(RateKind::Exec), 100.0);
    assert!(
        !model.score(&half).anomalous,
        "{}",
        model.score(&half).explain()
    );
    let mut other = spike(&mut w);
    other.set(Feature::Rate(RateKind::Connect), 200.0);
    assert!(model.score(&other).anomalous);
    let mut scan = w.interval(NORMAL);
    scan.set(Feature::Rate(RateKind::Connect), 200.0);
    assert!(model.score(&scan).anomalous);
    // They are stored with the model; a model stored before them has none and alerts.
    let json = serde_json::to_value(&model).unwrap();
    let back: RateModel = serde_json::from_value(json.clone()).unwrap();
    assert!(!back.score(&job).anomalous);
    let mut old = json;
    old.as_object_mut().unwrap().remove("transients");
    let old: RateModel = serde_json::from_value(old).unwrap();
    assert!(old.score(&job).anomalous);
    // Twelve in a row are more than a transient (at most `min_cluster_size − 1`): a regime
    // that calibration must see. None is set aside.
    let mut learning = w.intervals(60, NORMAL);
    for v in learning.iter_mut().skip(40).take(12) {
        *v = spike(&mut w);
    }
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    assert_eq!(model.calibration().transients, 0);
    assert_eq!(model.calibration().heldout_count, 60);
    // Ordinary noise is never set aside.
    let model = RateModel::fit(&w.intervals(200, NORMAL), &RateConfig::default()).unwrap();
    assert_eq!(model.calibration().transients, 0);
}

/// The learning intervals (5 s) of the evaluation's Python service (`tests/eval_apps.rs`), read
/// from the baseline it saved: steady requests, a health check every interval, and a
/// maintenance round (log rotation, compaction) in 3 of them.
const PYAPP_LEARNING: &str = include_str!("testdata/pyapp_learning.json");

#[test]
fn a_maintenance_round_that_recurs_while_learning_is_a_regime_not_a_transient() {
    let learning: Vec<FeatureVector> = serde_json::from_str(PYAPP_LEARNING).unwrap();
    assert_eq!(learning.len(), 15);
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    let calibration = model.calibration();
    eprintln!(
        "python service: threshold {:.1}, transients {}",
        calibration.threshold, calibration.transients
    );
    // With a quarter as the bound, the 3 maintenance intervals were set aside, the 12 identical
    // steady ones left every share's spread and the threshold at their floors (25), and each
    // benign change of mix in detection (health checks in a row, a log rotation) alerted.
    assert_eq!(calibration.transients, 0);
    assert_eq!(calibration.heldout_count, 15);
    assert!(calibration.threshold > 100.0, "{calibration:?}");
    for interval in &learning {
        assert!(!model.score(interval).anomalous);
    }
}

#[test]
fn a_share_that_falls_does_not_count_one_that_rises_does() {
    // The quiet service with a health check's helper process in every learning interval: its
    // start-up is the mode's memory syscalls.
    let with_helper = |requests: u64, mappings: u64| {
        let mut b = quiet_service(requests);
        b.add_syscalls(&[("execve", 1), ("mmap", 2 * mappings), ("munmap", mappings)]);
        b.add_event(EventKind::Exec);
        b.finish()
    };
    let learning: Vec<FeatureVector> = [5, 5, 5, 4, 5, 6, 5, 5, 5, 5, 4, 5, 5, 5]
        .into_iter()
        .map(|requests| with_helper(requests, 10))
        .collect();
    let model = RateModel::fit(&learning, &RateConfig::default()).unwrap();
    // Three times the requests, and the helper did not run this interval: the memory share
    // falls to 0 and the others rise by the same factor. Counted, the fall alone was far
    // beyond the threshold ("share of memory syscalls fell to 0%" on redis, benign).
    let score = model.score(&quiet_service(15).finish());
    assert!(!score.anomalous, "{}", score.explain());
    assert!(
        score
            .top
            .iter()
            .all(|d| d.z >= 0.0 || !d.name.starts_with("share.")),
        "{}",
        score.explain()
    );
    // The same helper mapping five times as much: the memory share rises, and counts.
    let score = model.score(&with_helper(5, 50));
    assert!(score.anomalous, "{}", score.explain());
    assert_eq!(score.top[0].name, "share.memory", "{}", score.explain());
}
