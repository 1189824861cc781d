//! Tests of whole-baseline merges: the merged models are those learned from all inputs, and
//! merging is commutative and associative (property tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use habit_profiles::observation::Observation;
use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;
use proptest::prelude::*;

use super::*;
use crate::rate::FEATURE_COUNT;
use crate::sequence::{SequenceConfig, gram_keys};

const SEC: u64 = 1000;

/// What one replica did while learning: executables, syscalls, traces and intervals.
#[derive(Debug, Clone)]
struct Replica {
    node: String,
    start: u64,
    execs: Vec<u8>,
    traces: Vec<Vec<u32>>,
    /// (connects per second, syscalls per second) per interval.
    intervals: Vec<(u8, u8)>,
}

fn features(connects: u8, syscalls: u8) -> FeatureVector {
    let mut values = [0.0; FEATURE_COUNT];
    values[0] = 1.0;
    values[FEATURE_COUNT - 3] = f64::from(connects);
    values[FEATURE_COUNT - 2] = 100.0 + f64::from(syscalls);
    FeatureVector::from_values(10.0, values, false).unwrap()
}

/// The baseline the daemon would freeze for this replica, with its models and their data.
fn learn(r: &Replica) -> Baseline {
    let mut p = Profile::new(
        WorkloadKey::from_raw("docker.io/library/app:1"),
        r.node.clone(),
        r.start,
        ProfileConfig::default(),
    );
    let here = Provenance::new(r.node.clone(), Some(&format!("c-{}", r.node)));
    for (i, e) in r.execs.iter().enumerate() {
        let at = r.start + i as u64 * SEC;
        let _ = p.observe(&Observation::exec(&format!("/bin/e{e}")), at, &here);
    }
    let names = ["read", "write", "openat", "close"];
    let counts: Vec<(&str, u64)> = names.iter().map(|n| (*n, 5)).collect();
    p.observe_syscall_counts(&counts, 10.0, r.start, &here)
        .unwrap();
    let mut b = Baseline::freeze(&p, r.start + 100 * SEC, false);
    calibrate(&mut b, 0.05);
    let data = learning_data(r);
    let sequence = sequence_of(&data.traces);
    let rate = rate_of(&data.intervals);
    store_models(&mut b, sequence.as_ref(), rate.as_ref(), data).unwrap();
    b
}

fn learning_data(r: &Replica) -> LearningData {
    LearningData {
        traces: r.traces.clone(),
        intervals: r
            .intervals
            .iter()
            .enumerate()
            .map(|(i, &(c, s))| TimedInterval {
                at: r.start + (i as u64 + 1) * 10 * SEC,
                features: features(c, s),
            })
            .collect(),
    }
}

/// The sequence model learned from these traces (counts of all, calibrated on them).
fn sequence_of(traces: &[Vec<u32>]) -> Option<SequenceModel> {
    let mut counts = BTreeMap::new();
    for t in traces {
        for k in gram_keys(t) {
            *counts.entry(k).or_insert(0u64) += 1;
        }
    }
    let syscalls = traces.iter().map(|t| t.len() as u64).sum();
    let mut m = SequenceModel::from_counts(
        SequenceConfig::default(),
        counts,
        traces.len() as u64,
        syscalls,
    )
    .ok()?;
    m.calibrate_on_traces(&canonical_traces(traces.to_vec()))
        .unwrap();
    Some(m)
}

fn rate_of(intervals: &[TimedInterval]) -> Option<RateModel> {
    let vectors: Vec<FeatureVector> = canonical_intervals(intervals.to_vec())
        .into_iter()
        .map(|i| i.features)
        .collect();
    RateModel::fit(&vectors, &RateConfig::default()).ok()
}

fn replica(node: &str, start: u64, seed: u32) -> Replica {
    let trace = |k: u32| -> Vec<u32> {
        (0..60)
            .map(|i| [0, 1, 3, 4 + (k % 3), 9][((i * (k + 1)) % 5) as usize])
            .collect()
    };
    Replica {
        node: node.into(),
        start,
        execs: vec![1, 2, (seed % 4) as u8 + 3],
        traces: (0..6).map(|i| trace(seed + i)).collect(),
        intervals: (0..12)
            .map(|i| ((i % 3) as u8, (seed as u8).wrapping_add(i as u8 % 5)))
            .collect(),
    }
}

#[test]
fn merged_models_are_those_learned_from_all_inputs() {
    let a = replica("node-a", 0, 1);
    let b = replica("node-b", 5 * SEC, 7);
    let (merged, report) = merge_baselines(&[learn(&a), learn(&b)]).unwrap();
    assert!(report.notes.is_empty(), "{report:?}");
    merged.validate().unwrap();
    let models = load_models(&merged).unwrap();

    // The reference: one learner that saw both replicas' data.
    let mut all = learning_data(&a);
    let more = learning_data(&b);
    all.traces.extend(more.traces);
    all.intervals.extend(more.intervals);
    let expected_sequence = sequence_of(&all.traces).unwrap();
    let expected_rate = rate_of(&all.intervals).unwrap();

    let sequence = models.sequence.unwrap();
    assert_eq!(
        sequence.known_grams().collect::<Vec<_>>(),
        expected_sequence.known_grams().collect::<Vec<_>>()
    );
    assert_eq!(sequence.calibration(), expected_sequence.calibration());
    let probe: Vec<u32> = (0..200).map(|i| [0, 1, 3, 7, 9, 2][i % 6]).collect();
    assert_eq!(
        sequence.score_trace(&probe),
        expected_sequence.score_trace(&probe)
    );
    assert_eq!(models.rate.unwrap(), expected_rate);
    assert_eq!(models.data.intervals.len(), 24);
    assert_eq!(models.data.traces.len(), 12);

    // Items: counts summed, earliest first sighting, both provenances.
    let e1 = merged.item(Dimension::Exec, "/bin/e1").unwrap();
    assert_eq!(e1.count, 2);
    assert_eq!(e1.first_seen, 0);
    assert_eq!(e1.provenance.len(), 2);
    assert!(merged.calibration.is_some());
    assert_eq!(
        merged.metadata.nodes.iter().collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
}

use habit_profiles::observation::Dimension;

#[test]
fn inputs_without_learning_data_merge_with_a_note() {
    let mut a = learn(&replica("node-a", 0, 1));
    let b = learn(&replica("node-b", 0, 2));
    a.models.remove(SEQUENCE_TRACES);
    a.models.remove(RATE_INTERVALS);
    let (merged, report) = merge_baselines(&[a, b]).unwrap();
    assert_eq!(report.notes.len(), 2, "{report:?}");
    let models = load_models(&merged).unwrap();
    assert!(models.rate.is_none());
    let calibration = models.sequence.unwrap().calibration().cloned().unwrap();
    assert_eq!(calibration.method, POOLED_SCORES_METHOD);
}

#[test]
fn models_of_the_wrong_shape_are_refused_naming_the_field() {
    let b = learn(&replica("node-a", 0, 1));
    let mut bad = b.clone();
    bad.models
        .get_mut(RATE_MODEL)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert("clusters".into(), serde_json::json!([{"weight": 1.0}]));
    let e = load_models(&bad).unwrap_err().to_string();
    assert!(e.contains("models.rate"), "{e}");
    let mut bad = b.clone();
    bad.models.get_mut(SEQUENCE_MODEL).unwrap()["grams"][0]["seq"] =
        serde_json::json!([1, 2, 3, 4, 5, 6, 7]);
    let e = load_models(&bad).unwrap_err().to_string();
    assert!(e.contains("models.sequence"), "{e}");
    let mut bad = b.clone();
    bad.models.insert("neural".into(), serde_json::json!({}));
    let e = load_models(&bad).unwrap_err().to_string();
    assert!(e.contains("models.neural"), "{e}");
    let mut bad = b;
    bad.models.insert(
        SEQUENCE_TRACES.into(),
        serde_json::json!(vec![vec![1u32; MAX_TRACE_LEN + 1]]),
    );
    let e = load_models(&bad).unwrap_err().to_string();
    assert!(e.contains("models.sequence_traces[0]"), "{e}");
}

/// A baseline's comparable content: JSON with the syscall-rate floats rounded (their merge
/// is associative only up to rounding).
fn comparable(b: &Baseline) -> serde_json::Value {
    let mut v = serde_json::to_value(b).unwrap();
    if let Some(rates) = v["syscall_rates"].as_object_mut() {
        for stats in rates.values_mut() {
            for field in ["mean", "m2"] {
                let x = stats[field].as_f64().unwrap();
                stats[field] = serde_json::json!(format!("{x:.9e}"));
            }
        }
    }
    v
}

fn arb_replica(node: &'static str) -> impl Strategy<Value = Replica> {
    (
        0u64..50,
        proptest::collection::vec(0u8..8, 1..5),
        proptest::collection::vec(proptest::collection::vec(0u32..6, 8..40), 2..5),
        proptest::collection::vec((0u8..4, 0u8..6), 10..14),
    )
        .prop_map(move |(start, execs, traces, intervals)| Replica {
            node: node.into(),
            start: start * SEC,
            execs,
            traces,
            intervals,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_and_associative(
        a in arb_replica("node-a"),
        b in arb_replica("node-b"),
        c in arb_replica("node-c"),
    ) {
        let (a, b, c) = (learn(&a), learn(&b), learn(&c));
        let merge = |x: &Baseline, y: &Baseline| merge_baselines(&[x.clone(), y.clone()]).unwrap().0;
        let ab = merge(&a, &b);
        prop_assert_eq!(comparable(&ab), comparable(&merge(&b, &a)));
        let left = merge(&ab, &c);
        let right = merge(&a, &merge(&b, &c));
        prop_assert_eq!(comparable(&left), comparable(&right));
        let all = merge_baselines(&[c.clone(), a.clone(), b.clone()]).unwrap().0;
        prop_assert_eq!(comparable(&left), comparable(&all));
    }
}
