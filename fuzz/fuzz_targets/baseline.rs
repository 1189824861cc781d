//! Baseline files: `PUT /api/v1/baselines/{key}`, `--baselines-dir` and `habitctl baseline
//! import|merge|diff` read them. Whatever the bytes, the import path (file format, content
//! validation, the models' own checks) answers an error, never a panic; what it accepts
//! writes back to the same baseline and merges, diffs and exports.
#![no_main]

use habit_models::artifact::load_models;
use habit_profiles::baseline::{Baseline, diff, merge};
use habit_profiles::export::{NetpolOptions, SeccompOptions, network_policy, seccomp_profile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(baseline) = Baseline::from_json_slice(data) else {
        return;
    };
    // What the daemon checks before the store is touched (learning/commands.rs, Import).
    if load_models(&baseline).is_err() {
        return;
    }
    // An accepted file round-trips: the store keeps what was imported.
    let Ok(bytes) = baseline.to_json_vec() else {
        panic!("an accepted baseline does not encode");
    };
    match Baseline::from_json_slice(&bytes) {
        Ok(back) => assert_eq!(back, baseline, "a stored baseline reads back different"),
        Err(e) => panic!("a baseline habitd accepted is refused once stored: {e}"),
    }
    let _ = merge(&baseline, &baseline);
    let _ = diff(&baseline, &baseline);
    let _ = seccomp_profile(&baseline, SeccompOptions::default());
    let _ = network_policy(&baseline, &NetpolOptions::default());
});
