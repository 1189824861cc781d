//! `habitctl baseline diff` as a CI gate: its exit codes, with and without --fail-on-new, and
//! its JSON; the version a new item was introduced by, cited; `habitctl baseline merge` of more
//! than two files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{Observation, Proto};
use habit_profiles::profile::{Introduced, Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;

fn learned(node: &str, execs: &[&str], destinations: &[&str]) -> Baseline {
    let mut p = Profile::new(
        WorkloadKey::from_raw("docker.io/shop/web:2.1"),
        node,
        0,
        ProfileConfig::default(),
    );
    let here = Provenance::new(node, Some("c1"));
    for e in execs {
        let _ = p.observe(&Observation::exec(e), 0, &here);
    }
    for d in destinations {
        let _ = p.observe(
            &Observation::outbound(d.parse().unwrap(), 443, Proto::Tcp),
            0,
            &here,
        );
    }
    Baseline::freeze(&p, 1, false)
}

fn write(dir: &Path, name: &str, b: &Baseline) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b.to_json_pretty().unwrap()).unwrap();
    path
}

fn habitctl(args: &[&str], files: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .args(["baseline"])
        .args(args.iter().take(1))
        .args(files)
        .args(args.iter().skip(1))
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn diff_exit_codes_make_a_ci_gate() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(
        dir.path(),
        "old.json",
        &learned("n", &["/bin/app"], &["10.0.0.1"]),
    );
    let same = write(
        dir.path(),
        "same.json",
        &learned("n", &["/bin/app"], &["10.0.0.1"]),
    );
    let new_exec = write(
        dir.path(),
        "exec.json",
        &learned("n", &["/bin/app", "/bin/sh"], &["10.0.0.1"]),
    );
    let dropped = write(
        dir.path(),
        "dropped.json",
        &learned("n", &["/bin/app"], &[]),
    );

    // No gate: 0 when equal, 1 when anything differs.
    assert_eq!(habitctl(&["diff"], &[&old, &same]).0, 0);
    let (code, out, _) = habitctl(&["diff"], &[&old, &new_exec]);
    assert_eq!(code, 1);
    assert!(out.contains("  + /bin/sh"), "{out}");
    assert_eq!(habitctl(&["diff"], &[&old, &dropped]).0, 1);

    // Gate: 1 only for new items in a listed dimension.
    let gate = ["diff", "--fail-on-new", "exec,outbound"];
    assert_eq!(habitctl(&gate, &[&old, &new_exec]).0, 1);
    assert_eq!(
        habitctl(&gate, &[&old, &dropped]).0,
        0,
        "removed is not new"
    );
    assert_eq!(
        habitctl(&["diff", "--fail-on-new", "outbound"], &[&old, &new_exec]).0,
        0
    );
    assert_eq!(
        habitctl(&["diff", "--fail-on-new", "all"], &[&old, &new_exec]).0,
        1
    );

    // JSON names what is new where.
    let (code, out, _) = habitctl(
        &["diff", "--json", "--fail-on-new", "exec"],
        &[&old, &new_exec],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["dimensions"]["exec"]["added"],
        serde_json::json!(["/bin/sh"])
    );
    assert_eq!(v["new_in"], serde_json::json!(["exec"]));
    assert_eq!(v["workload"], "docker.io/shop/web:2.1");

    // Errors exit 2: a bad dimension, a missing file, a broken file.
    let (code, _, err) = habitctl(&["diff", "--fail-on-new", "exek"], &[&old, &same]);
    assert_eq!(code, 2);
    assert!(err.contains("\"exek\" is not a dimension"), "{err}");
    assert_eq!(
        habitctl(&["diff"], &[&old, &dir.path().join("nope.json")]).0,
        2
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"format\": \"habitd-baseline\", \"version\": 2").unwrap();
    assert_eq!(habitctl(&["diff"], &[&old, &broken]).0, 2);
}

/// Rollout inheritance: the diff of a new version's baseline cites the version that added each
/// new item, in text ("added by …") and JSON (`introduced_by`).
#[test]
fn diff_cites_the_version_that_introduced_an_item() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = learned("n", &["/bin/app"], &["10.0.0.1"]);
    let mut v2 = learned(
        "n",
        &["/bin/app", "/bin/migrate"],
        &["10.0.0.1", "10.0.0.2"],
    );
    let by = Introduced {
        version: "docker.io/shop/web:2.2".to_owned(),
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
        image_id: None,
    };
    assert_eq!(v2.mark_introduced(&v1, &by), 2);
    let old = write(dir.path(), "v1.json", &v1);
    let new = write(dir.path(), "v2.json", &v2);
    let (code, out, err) = habitctl(&["diff"], &[&old, &new]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("  + /bin/migrate  (added by docker.io/shop/web:2.2 (sha256:abababababab))"),
        "{out}"
    );
    assert!(
        out.contains("  + 10.0.0.2 443/tcp  (added by docker.io/shop/web:2.2"),
        "{out}"
    );
    // Versions of one repository, the new one built on the old: the diff says so.
    let mut v1 = v1;
    v1.workload = WorkloadKey::from_raw("docker.io/shop/web:2.1");
    v2.workload = WorkloadKey::from_raw("docker.io/shop/web:2.2");
    v2.metadata
        .inherited_from
        .push("docker.io/shop/web:2.1".to_owned());
    let old = write(dir.path(), "v1.json", &v1);
    let new = write(dir.path(), "v2.json", &v2);
    let (_, out, _) = habitctl(&["diff"], &[&old, &new]);
    assert!(
        out.contains(
            "note: docker.io/shop/web:2.2 was built on the baseline of docker.io/shop/web:2.1 \
             (rollout inheritance)"
        ),
        "{out}"
    );
    assert!(!out.contains("different workloads"), "{out}");
    let (_, out, _) = habitctl(&["diff", "--json"], &[&old, &new]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["dimensions"]["exec"]["introduced_by"]["/bin/migrate"]["version"],
        "docker.io/shop/web:2.2"
    );
    assert_eq!(
        v["dimensions"]["exec"]["introduced_by"]["/bin/migrate"]["digest"],
        by.digest.unwrap()
    );
    // An item learned without inheritance cites nothing.
    let plain = write(
        dir.path(),
        "plain.json",
        &learned("n", &["/bin/app", "/bin/migrate"], &["10.0.0.1"]),
    );
    let (_, out, _) = habitctl(&["diff"], &[&old, &plain]);
    assert!(out.contains("  + /bin/migrate\n"), "{out}");
    assert!(!out.contains("added by"), "{out}");
}

#[test]
fn merge_takes_any_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.json", &learned("node-a", &["/bin/a"], &[]));
    let b = write(dir.path(), "b.json", &learned("node-b", &["/bin/b"], &[]));
    let c = write(
        dir.path(),
        "c.json",
        &learned("node-c", &["/bin/a", "/bin/c"], &[]),
    );
    let out = dir.path().join("out.json");
    let (code, _, err) = habitctl(&["merge"], &[&a, &b, &c, Path::new("-o"), &out]);
    assert_eq!(code, 0, "{err}");
    let merged = Baseline::from_json_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(merged.items_total(), 3);
    assert_eq!(merged.metadata.nodes.len(), 3);
    assert_eq!(
        merged
            .item(habit_profiles::observation::Dimension::Exec, "/bin/a")
            .unwrap()
            .count,
        2
    );
    // One file is not a merge.
    assert_eq!(habitctl(&["merge"], &[&a]).0, 2);
}
