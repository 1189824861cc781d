//! End-to-end tests of habitd on a Kubernetes-like node: a real standalone containerd with
//! the CRI plugin, pods and containers created through CRI as the kubelet does, and a real
//! habitd pointed at that containerd's socket. They need root, BTF, Docker (to build the test
//! images) and containerd, and fail with what to install when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ClientLoop, Daemon, actions_binary, free_port, import_rootfs, require_docker, static_busybox,
};
use cri::Containerd;
use serde_json::Value;

/// Second-scale learning windows.
const FAST_LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

/// Generous: the test machines are shared and often loaded (load average 10+ on 2 cores).
const WAIT: Duration = Duration::from_secs(60);

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds (with Docker) the web image `habitd-e2e/cri-web:TAG` (busybox, a web root, an
/// /etc/shadow to steal) and the pause image, imports both into containerd's `k8s.io`.
fn images(ctd: &Containerd, tag: &str) -> String {
    require_docker();
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {root}; mkdir -p bin etc tmp www; cp {busybox} bin/; \
         for a in sh cat ls sleep wget httpd echo id true; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo 'root:*:19000:0:::::' > etc/shadow; \
         echo hello > www/index.html; cp {actions} bin/actions",
        root = root.path().display(),
        busybox = static_busybox().display(),
        actions = actions_binary().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web = format!("habitd-e2e/cri-web:{tag}");
    import_rootfs(root.path(), &web, &[]);
    import_rootfs(
        root.path(),
        PAUSE,
        &["--change", r#"ENTRYPOINT ["/bin/sleep", "1000000"]"#],
    );
    ctd.import_from_docker(&web);
    ctd.import_from_docker(PAUSE);
    format!("docker.io/{web}")
}

const PAUSE: &str = "habitd-e2e/pause:1";

fn config_for(ctd: &Containerd, extra: &str) -> String {
    format!(
        "{FAST_LEARNING}[runtime]\ncri_sockets = [\"{}\"]\n{extra}",
        ctd.socket.display()
    )
}

fn httpd_command(port: u16) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("/bin/httpd -f -p {port} -h /www"),
    ]
}

/// Waits for a printed event of `key` matching `pred`.
fn wait_event(daemon: &Daemon, key: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(e) = daemon
            .events()
            .into_iter()
            .find(|e| e["output_fields"]["habitd.workload"] == key && pred(e))
        {
            return e;
        }
        if Instant::now() > deadline {
            let mine: Vec<String> = daemon
                .events()
                .into_iter()
                .filter(|e| {
                    let w = e["output_fields"]["habitd.workload"].as_str().unwrap_or("");
                    (w == key || w.starts_with("container:") || w.contains("pause"))
                        && e["kind"] == "exec"
                })
                .take(60)
                .map(|e| {
                    let f = &e["output_fields"];
                    format!(
                        "{} {} {} {} {}",
                        f["habitd.workload"],
                        e["kind"],
                        f["container.id"],
                        f["proc.exe"],
                        f["proc.cmdline"]
                    )
                })
                .collect();
            panic!(
                "no event {what} of {key}; container events:\n{}\nkernel drops: {}\n\
                 habitd log:\n{}",
                mine.join("\n"),
                common::drops(daemon),
                common::tail(&daemon.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exec of the entrypoint shell (`sh -c '/bin/httpd …'`).
fn is_entrypoint_exec(e: &Value) -> bool {
    e["kind"] == "exec"
        && e["output_fields"]["proc.cmdline"]
            .as_str()
            .is_some_and(|c| c.starts_with("sh -c /bin/httpd"))
}

/// A client fetching the index page from the pod's host-network web server every 200 ms.
fn web_client(port: u16) -> ClientLoop {
    ClientLoop::start(move || {
        let _ = common::http_request(port, "GET", "/index.html", &[], "");
    })
}

#[test]
fn pods_are_learned_under_their_image_and_attacks_alert_with_kubernetes_fields() {
    let _serial = serial();
    let mut ctd = Containerd::start(PAUSE);
    let key = images(&ctd, "learn");
    let daemon = Daemon::start(&config_for(&ctd, ""));

    let port = free_port();
    let pod = ctd.run_pod("web-1", "shop", "uid-web-1", "web", true);
    let cmd = httpd_command(port);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let started = Instant::now();
    let id = ctd.run_container(&pod, "httpd", 0, &key, &cmd);
    let client = web_client(port);

    // The entrypoint's exec, before any description could exist, is attributed to the image.
    let entry = wait_event(&daemon, &key, "entrypoint exec", is_entrypoint_exec);
    let f = &entry["output_fields"];
    assert_eq!(f["k8s.pod.name"], "web-1", "{entry:#}");
    assert_eq!(f["k8s.ns.name"], "shop");
    assert_eq!(f["k8s.pod.uid"], "uid-web-1");
    assert_eq!(f["k8s.pod.labels"], "(app:web)");
    assert_eq!(f["container.name"], "httpd");
    assert_eq!(f["container.id"], &id[..12]);
    println!(
        "entrypoint attributed {:?} after CreateContainer; describe wait: {} held events \
         released, histogram sum {:.4}s over {} containers",
        started.elapsed(),
        daemon.metric("habitd_pending_events_released_total{outcome=\"described\"}"),
        daemon.metric("habitd_pending_describe_seconds_sum"),
        daemon.metric("habitd_pending_describe_seconds_count"),
    );
    // The pause container is recognised and never learned.
    assert!(
        daemon.workload("registry.k8s.io/pause:latest").is_none()
            && daemon.workload(&format!("docker.io/{PAUSE}")).is_none(),
        "the sandbox was learned as a workload"
    );

    let stable = daemon.wait_state(&key, "stable", Duration::from_secs(60));
    assert!(
        stable["profile_sizes"]["exec"].as_u64().unwrap() >= 1,
        "{stable}"
    );

    // Stop and start again (a new attempt, as the kubelet restarts a container), then a
    // second pod of the same image: no alert.
    ctd.remove_container(&id);
    let id2 = ctd.run_container(&pod, "httpd", 1, &key, &cmd);
    wait_event(&daemon, &key, "restarted entrypoint", |e| {
        is_entrypoint_exec(e) && e["output_fields"]["container.id"] == id2[..12]
    });
    // Host network: the second pod serves on the same port, so the first one's container goes.
    ctd.remove_container(&id2);
    let pod2 = ctd.run_pod("web-2", "shop", "uid-web-2", "web", false);
    let id3 = ctd.run_container(&pod2, "httpd", 0, &key, &cmd);
    let replica = wait_event(&daemon, &key, "second pod's entrypoint", |e| {
        is_entrypoint_exec(e) && e["output_fields"]["container.id"] == id3[..12]
    });
    assert_eq!(replica["output_fields"]["k8s.pod.name"], "web-2");
    std::thread::sleep(Duration::from_secs(5));
    let quiet = common::alerts_of(&daemon, &key);
    assert!(
        quiet.is_empty(),
        "a restart or a second pod of a learned image raised alerts: {quiet:#?}"
    );

    // An attack: a shell reading /etc/shadow.
    let (code, out) = ctd.exec_sync(&id3, &["/bin/sh", "-c", "/bin/cat /etc/shadow"]);
    assert_eq!(code, 0, "{out}");
    let a = daemon.wait_alert("a sensitive read", &key, WAIT, |a| {
        a["output_fields"]["fd.name"] == "/etc/shadow"
            || a["habitd"]["novel"].as_array().is_some_and(|n| {
                n.iter().any(|x| {
                    x["item"]
                        .as_str()
                        .is_some_and(|i| i.contains("/etc/shadow"))
                })
            })
    });
    let f = &a["output_fields"];
    assert_eq!(f["k8s.pod.name"], "web-2", "{a:#}");
    assert_eq!(f["k8s.ns.name"], "shop");
    assert_eq!(f["k8s.pod.uid"], "uid-web-2");
    assert_eq!(f["container.name"], "httpd");
    assert_eq!(
        f["container.image.repository"],
        key.rsplit_once(':').unwrap().0
    );
    drop(client);
}

#[test]
fn containers_are_described_when_containerd_comes_back() {
    let _serial = serial();
    let mut ctd = Containerd::start(PAUSE);
    let key = images(&ctd, "restart");
    let port = free_port();
    let pod = ctd.run_pod("web-r", "ops", "uid-web-r", "web", false);
    let cmd = httpd_command(port);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let id = ctd.run_container(&pod, "httpd", 0, &key, &cmd);

    // containerd stops; its containers run on under their shims.
    ctd.stop();
    let daemon = Daemon::start(&config_for(&ctd, "hold_events_for = \"1s\"\n"));
    let client = web_client(port);
    let provisional = format!("container:{}", &id[..12]);
    wait_event(
        &daemon,
        &provisional,
        "provisional events while containerd is down",
        |_| true,
    );
    let errors =
        || daemon.metric("habitd_runtime_errors_total{reason=\"absent\",runtime=\"containerd\"}");
    assert!(errors() >= 1.0, "{}", common::tail(&daemon.log(), 30));
    assert_eq!(
        daemon.metric("habitd_runtime_up{runtime=\"containerd\"}"),
        0.0
    );
    let logged = daemon.log().matches("Container runtime is down").count();
    assert_eq!(logged, 1, "logged once per state change:\n{}", daemon.log());

    let back = Instant::now();
    ctd.restart();
    let e = wait_event(&daemon, &key, "described after containerd came back", |e| {
        e["output_fields"]["container.id"] == id[..12]
    });
    println!("described {:?} after containerd restarted", back.elapsed());
    assert_eq!(e["output_fields"]["k8s.pod.name"], "web-r");
    assert_eq!(
        daemon.metric("habitd_runtime_up{runtime=\"containerd\"}"),
        1.0
    );
    assert!(
        daemon.metric("habitd_pending_events_released_total{outcome=\"deadline\"}") >= 1.0,
        "events went on provisionally after the deadline"
    );
    drop(client);
}

/// The response (issue 16) stops a CRI container through `StopContainer`: a write below /etc
/// in a pod's container (rule "Write below etc or root", Error) with a policy that acts from
/// Error up on this image only.
#[test]
fn the_response_stops_a_container_through_cri() {
    let _serial = serial();
    let started = Instant::now();
    let mut ctd = Containerd::start(PAUSE);
    let key = images(&ctd, "response");
    let daemon = Daemon::start(&config_for(
        &ctd,
        &format!(
            "[response]\nenabled = true\naction = \"stop\"\nfused = false\n\
             min_priority = \"error\"\nstop_grace = \"1s\"\nworkloads = [\"{key}\"]\n"
        ),
    ));
    let pod = ctd.run_pod("resp-1", "shop", "uid-resp-1", "web", false);
    let id = ctd.run_container(&pod, "sleeper", 0, &key, &["/bin/sleep", "300"]);
    wait_event(&daemon, &key, "entrypoint exec", |e| {
        e["kind"] == "exec" && e["output_fields"]["container.id"] == id[..12]
    });
    assert_eq!(
        ctd.container_state(&id),
        Some(cri::api::ContainerState::ContainerRunning)
    );
    let (code, _) = ctd.exec_sync(&id, &["/bin/sh", "-c", "echo owned > /etc/owned"]);
    assert_eq!(code, 0);
    let response = daemon.wait_alert("the response", &key, WAIT, |a| {
        a["rule"] == "habitd response"
    });
    let f = &response["output_fields"];
    println!(
        "CRI stop: {} ({}), runtime answered {:.0} ms after the alert; container state {:?}",
        f["habitd.response.outcome"],
        f["habitd.response.detail"],
        f["habitd.response.latency_ms"].as_f64().unwrap_or(-1.0),
        ctd.container_state(&id)
    );
    assert_eq!(
        f["habitd.response.rule"], "Write below etc or root",
        "{response}"
    );
    assert_eq!(f["habitd.response.outcome"], "done", "{response}");
    assert!(
        f["habitd.response.detail"]
            .as_str()
            .unwrap()
            .ends_with("(CRI)"),
        "{response}"
    );
    assert_eq!(
        ctd.container_state(&id),
        Some(cri::api::ContainerState::ContainerExited)
    );
    assert_eq!(
        daemon.metric("habitd_response_actions_total{action=\"stop\",outcome=\"done\"}"),
        1.0
    );
    ctd.remove_container(&id);
    println!(
        "the_response_stops_a_container_through_cri took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
