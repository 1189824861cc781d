//! The NetworkPolicy `habitctl export netpol` writes is valid against the Kubernetes schema
//! (`kubernetes-validate` from PyPI, strict: no unknown properties), and selects its pods by
//! the labels the baseline learned (recorded from the runtime's pod description, as habitd
//! does), `--selector` overriding them; a baseline without pod labels is refused with the
//! advice to pass `--selector`. Fails with an install hint when the validator is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{Observation, Proto};
use habit_profiles::profile::{ContainerOrigin, Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;

fn learned() -> Baseline {
    let mut p = Profile::new(
        WorkloadKey::from_raw("docker.io/shop/web:2.1"),
        "node-a",
        0,
        ProfileConfig::default(),
    );
    let here = Provenance::new("node-a", Some("c1"));
    for o in [
        Observation::listen(8080, Proto::Tcp),
        Observation::listen(9090, Proto::Tcp),
        Observation::listen(5353, Proto::Udp),
        Observation::inbound("10.0.0.5".parse().unwrap(), 43122, 8080, Proto::Tcp),
        Observation::inbound("fd00::7".parse().unwrap(), 50000, 8080, Proto::Tcp),
        Observation::inbound("10.0.3.9".parse().unwrap(), 40000, 5353, Proto::Udp),
        Observation::outbound("10.1.2.3".parse().unwrap(), 5432, Proto::Tcp),
        Observation::outbound("10.96.0.10".parse().unwrap(), 53, Proto::Udp),
        Observation::outbound("2001:db8::1".parse().unwrap(), 443, Proto::Tcp),
        Observation::outbound("10.9.9.9".parse().unwrap(), 7, Proto::Other(47)),
    ] {
        let _ = p.observe(&o, 0, &here);
    }
    // What the CRI runtime described of the pod (habitd records it while learning).
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "web".to_owned()),
        ("pod-template-hash".to_owned(), "5d9c7".to_owned()),
    ]);
    p.note_container(&ContainerOrigin {
        digest: Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        image_id: None,
        namespace: Some("shop"),
        labels: &labels,
    });
    let b = Baseline::freeze(&p, 1, false);
    assert_eq!(b.metadata.labels, labels);
    assert_eq!(b.metadata.namespace.as_deref(), Some("shop"));
    b
}

fn export(baseline: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .args(["export", "netpol"])
        .arg(baseline)
        .args(args)
        .output()
        .unwrap()
}

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate cannot run ({e}): install it with \
                 `pip install kubernetes-validate`"
            )
        })
}

#[test]
fn exported_network_policy_validates_against_the_kubernetes_schema() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    std::fs::write(&file, learned().to_json_pretty().unwrap()).unwrap();
    for extra in [&[][..], &["--any-peer"][..]] {
        let policy = dir.path().join("netpol.json");
        let out = Command::new(env!("CARGO_BIN_EXE_habitctl"))
            .args(["export", "netpol"])
            .arg(&file)
            .arg("-o")
            .arg(&policy)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(
            v["spec"]["podSelector"]["matchLabels"],
            serde_json::json!({"app.kubernetes.io/name": "web"})
        );
        let checked = validate(&policy);
        assert!(
            checked.status.success(),
            "kubernetes-validate refused the policy:\n{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    // --selector overrides the learned labels (and the result validates too).
    let policy = dir.path().join("selected.json");
    let out = export(
        &file,
        &["--selector", "tier=front", "-o", policy.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(
        v["spec"]["podSelector"]["matchLabels"],
        serde_json::json!({"tier": "front"})
    );
    assert!(validate(&policy).status.success());

    // Without learned pod labels (not learned from Kubernetes pods): refused, saying to pass
    // --selector; with it, exported.
    let mut unlabelled = learned();
    unlabelled.metadata.labels.clear();
    let bare = dir.path().join("unlabelled.json");
    std::fs::write(&bare, unlabelled.to_json_pretty().unwrap()).unwrap();
    let out = export(&bare, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no learned pod labels") && err.contains("--selector KEY=VALUE"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing written on error");
    let out = export(&bare, &["--selector", "app=web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The validator is not a rubber stamp: a wrong policy fails.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"x"},
            "spec":{"podSelector":{},"ingress":[{"ports":[{"port":8080,"protocol":"TCP","bogus":1}]}]}}"#,
    )
    .unwrap();
    assert!(!validate(&bad).status.success());
}
