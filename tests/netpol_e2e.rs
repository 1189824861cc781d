//! End-to-end test of the NetworkPolicy's pod selector: a real habitd learns a pod created
//! through CRI (a real standalone containerd, as the kubelet would), its baseline records the
//! pod's labels and namespace and the image, and `habitctl export netpol KEY` selects the pods
//! by the learned labels without `--selector`; the policy validates against the Kubernetes
//! schema. Needs root, BTF, Docker (to build the images), containerd and
//! `kubernetes-validate`, and fails with what to install when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::process::Command;
use std::time::Duration;

use common::{ClientLoop, Daemon, free_port, import_rootfs, require_docker, static_busybox};
use cri::Containerd;
use serde_json::{Value, json};

const LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

const PAUSE: &str = "habitd-inherit/pause:1";

/// Builds the web image `habitd-inherit/cri-web:labels` and the pause image with Docker and
/// imports both into containerd's `k8s.io` namespace; returns the workload key.
fn images(ctd: &Containerd) -> String {
    require_docker();
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {root}; mkdir -p bin etc tmp www; cp {busybox} bin/; \
         for a in sh sleep httpd; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo hello > www/index.html",
        root = root.path().display(),
        busybox = static_busybox().display(),
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web = "habitd-inherit/cri-web:labels";
    import_rootfs(root.path(), web, &[]);
    import_rootfs(
        root.path(),
        PAUSE,
        &["--change", r#"ENTRYPOINT ["/bin/sleep", "1000000"]"#],
    );
    ctd.import_from_docker(web);
    ctd.import_from_docker(PAUSE);
    format!("docker.io/{web}")
}

#[test]
fn the_learned_pod_labels_select_the_network_policys_pods() {
    let mut ctd = Containerd::start(PAUSE);
    let key = images(&ctd);
    let daemon = Daemon::start(&format!(
        "{LEARNING}[runtime]\ncri_sockets = [\"{}\"]\n",
        ctd.socket.display()
    ));
    let port = free_port();
    // Labels: app=web, and the kubelet's io.kubernetes.* (never part of a selector).
    let pod = ctd.run_pod("web-1", "shop", "uid-web-1", "web", false);
    let cmd = format!("/bin/httpd -f -p {port} -h /www");
    let id = ctd.run_container(&pod, "httpd", 0, &key, &["/bin/sh", "-c", &cmd]);
    let client = ClientLoop::start(move || {
        let _ = common::http_request(port, "GET", "/index.html", &[], "");
    });
    daemon.wait_state(&key, "stable", Duration::from_secs(60));
    drop(client);

    // The baseline records what CRI said of the pod and the image.
    let (status, body) = daemon
        .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let baseline: Value = serde_json::from_str(&body).unwrap();
    let meta = &baseline["metadata"];
    assert_eq!(meta["labels"], json!({"app": "web"}), "{meta:#}");
    assert_eq!(meta["namespace"], "shop", "{meta:#}");
    assert!(
        meta["containers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == id.as_str())),
        "{meta:#}"
    );
    let named = |field: &str| meta[field].as_array().map_or(0, Vec::len);
    assert!(
        named("image_ids") + named("digests") >= 1,
        "the image is named: {meta:#}"
    );

    // `habitctl export netpol KEY`, from the daemon, with no --selector.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("netpol.json");
    let out = Command::new(common::habitd_bin().with_file_name("habitctl"))
        .env("HABITD_API", format!("http://127.0.0.1:{}", daemon.port))
        .args(["export", "netpol", &key, "-o"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&policy).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["spec"]["podSelector"]["matchLabels"],
        json!({"app": "web"}),
        "{text}"
    );
    assert_eq!(v["metadata"]["namespace"], "shop", "{text}");
    eprintln!("NetworkPolicy of the learned pod:\n{text}");
    let checked = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(&policy)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate cannot run ({e}): install it with \
                 `pip install kubernetes-validate`"
            )
        });
    assert!(
        checked.status.success(),
        "kubernetes-validate refused the policy:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    ctd.remove_container(&id);
}
