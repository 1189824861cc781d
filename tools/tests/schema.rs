//! Exported baseline files match the JSON Schema shipped in the repository
//! (`profiles/schema/baseline.schema.json`): a freshly frozen one, one with every model and
//! its learning data and full metadata, a merge of two, and a new version's baseline built on
//! its predecessor's (rollout inheritance: lineage, and items naming the version that
//! introduced them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use habit_models::artifact::{LearningData, TimedInterval, merge_baselines, store_models};
use habit_models::calibrate::calibrate;
use habit_models::rate::{FEATURE_COUNT, FeatureVector, RateConfig, RateModel};
use habit_models::sequence::{SequenceConfig, SequenceModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{FileMode, Observation, Proto};
use habit_profiles::profile::{Introduced, Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/schema/baseline.schema.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn learned(node: &str, seed: u32) -> Baseline {
    let mut p = Profile::new(
        WorkloadKey::from_raw("docker.io/shop/web:2.1"),
        node,
        0,
        ProfileConfig::default(),
    );
    let here = Provenance::new(node, Some("0123abcd"));
    for o in [
        Observation::exec("/usr/bin/web"),
        Observation::file("/etc/web.conf", FileMode::Read),
        Observation::listen(8080, Proto::Tcp),
        Observation::outbound("10.1.2.3".parse().unwrap(), 5432, Proto::Tcp),
        Observation::syscall("read"),
        Observation::file_change("rename", "/var/log/web.log", Some("/var/log/web.log.1")),
    ] {
        let _ = p.observe(&o, 1000, &here);
    }
    p.observe_syscall_counts(&[("read", 40), ("write", 9)], 10.0, 2000, &here)
        .unwrap();
    let mut b = Baseline::freeze(&p, 60_000, false);
    calibrate(&mut b, 0.01);
    b.metadata
        .digests
        .insert(format!("sha256:{}", "a".repeat(64)));
    b.metadata
        .image_ids
        .insert(format!("sha256:{}", "b".repeat(64)));
    b.metadata.labels.insert("app".into(), "web".into());
    b.metadata.namespace = Some("shop".into());
    let traces: Vec<Vec<u32>> = (0..6)
        .map(|k| (0..50).map(|i| (i * (k + seed)) % 7).collect())
        .collect();
    let sequence = SequenceModel::train(&traces, SequenceConfig::default()).unwrap();
    let intervals: Vec<TimedInterval> = (0u32..12)
        .map(|i| {
            let mut values = [0.0; FEATURE_COUNT];
            values[0] = 1.0;
            values[FEATURE_COUNT - 2] = 100.0 + f64::from((i + seed) % 4);
            TimedInterval {
                at: 10_000 * u64::from(i + 1),
                features: FeatureVector::from_values(10.0, values, false).unwrap(),
            }
        })
        .collect();
    let vectors: Vec<FeatureVector> = intervals.iter().map(|i| i.features.clone()).collect();
    let rate = RateModel::fit(&vectors, &RateConfig::default()).unwrap();
    store_models(
        &mut b,
        Some(&sequence),
        Some(&rate),
        LearningData { traces, intervals },
    )
    .unwrap();
    b
}

fn check(validator: &jsonschema::Validator, what: &str, b: &Baseline) {
    let value: serde_json::Value = serde_json::from_str(&b.to_json_pretty().unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the schema: {errors:#?}"
    );
}

#[test]
fn exported_files_match_the_schema() {
    let validator = schema();
    let mut bare = learned("node-a", 1);
    bare.models.clear();
    bare.calibration = None;
    check(&validator, "a bare baseline", &bare);
    let a = learned("node-a", 1);
    check(&validator, "a baseline with models", &a);
    let (merged, _) = merge_baselines(&[a.clone(), learned("node-b", 2)]).unwrap();
    check(&validator, "a merged baseline", &merged);

    // Rollout inheritance: version 2.2 started from 2.1's baseline and added an executable.
    let mut previous = learned("node-a", 1);
    previous.workload = WorkloadKey::from_raw("docker.io/shop/web:2.2");
    let mut p = Profile::new(
        WorkloadKey::from_raw("docker.io/shop/web:2.2"),
        "node-a",
        0,
        ProfileConfig::default(),
    );
    let here = Provenance::new("node-a", Some("4567cdef"));
    let _ = p.observe(&Observation::exec("/usr/bin/web"), 1000, &here);
    let _ = p.observe(&Observation::exec("/usr/bin/migrate"), 1000, &here);
    let mut fresh = Baseline::freeze(&p, 60_000, false);
    calibrate(&mut fresh, 0.01);
    let (mut inherited, _) = merge_baselines(&[previous.clone(), fresh]).unwrap();
    inherited
        .metadata
        .inherited_from
        .push("docker.io/shop/web:2.1".to_owned());
    let version = Introduced {
        version: "docker.io/shop/web:2.2".to_owned(),
        digest: Some(format!("sha256:{}", "c".repeat(64))),
        image_id: Some(format!("sha256:{}", "d".repeat(64))),
    };
    assert_eq!(inherited.mark_introduced(&previous, &version), 1);
    check(&validator, "an inherited baseline", &inherited);
    let text = inherited.to_json_pretty().unwrap();
    assert!(text.contains("\"introduced_by\""), "{text}");

    // An `introduced_by` must name the version, and nothing unknown.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["dimensions"]["exec"]["items"]["/usr/bin/migrate"]["introduced_by"] =
        serde_json::json!({ "digest": "sha256:00" });
    assert!(!validator.is_valid(&value));
    value["dimensions"]["exec"]["items"]["/usr/bin/migrate"]["introduced_by"] =
        serde_json::json!({ "version": "docker.io/shop/web:2.2", "tag": "2.2" });
    assert!(!validator.is_valid(&value));

    // The schema is not a rubber stamp.
    let mut value: serde_json::Value = serde_json::from_str(&a.to_json_pretty().unwrap()).unwrap();
    value["version"] = 99.into();
    assert!(!validator.is_valid(&value));
    let mut value: serde_json::Value = serde_json::from_str(&a.to_json_pretty().unwrap()).unwrap();
    value["models"]["sequence"]["grams"][0]["seq"] = serde_json::json!([1, 2, 3, 4, 5, 6, 7]);
    assert!(!validator.is_valid(&value));
    let mut value: serde_json::Value = serde_json::from_str(&a.to_json_pretty().unwrap()).unwrap();
    value["dimensions"]["exek"] = serde_json::json!({});
    assert!(!validator.is_valid(&value));
}
