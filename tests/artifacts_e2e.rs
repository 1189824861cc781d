//! End-to-end tests of the enforcement artifacts: a real habitd learns a real busybox web
//! server container, `habitctl export seccomp` turns its baseline into a seccomp profile, and
//! a container of the same image run under that profile still serves its pages while a
//! syscall it never made fails with the profile's errno. They need root, BTF and Docker and
//! fail with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use habit_profiles::baseline::{Baseline, DimensionStats};
use habit_profiles::observation::Dimension;

use common::{Container, Daemon, import_rootfs, static_busybox, static_helper};

const FAST_LEARNING: &str = "[learning]\nmin = \"4s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

/// A busybox web server image with the `trysys` helper at /bin/trysys.
fn image(tag: &str) -> String {
    let name = format!("habitd-e2e/artifacts:{tag}");
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {root}; mkdir -p bin etc tmp www; cp {busybox} bin/; \
         for a in sh httpd; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo hello > www/index.html; \
         cp {trysys} bin/trysys",
        root = root.path().display(),
        busybox = static_busybox().display(),
        trysys = static_helper("trysys").display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    import_rootfs(root.path(), &name, &[]);
    name
}

fn trysys(c: &Container, name: &str) -> String {
    let out = c.exec(&["/bin/trysys", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The job the workload learns: serve a page now and then, and run the helper's harmless
/// action in the container.
fn do_the_job(c: &Container, ip: &str) {
    assert!(common::web_get(ip, "/index.html").is_some_and(|b| b.contains("hello")));
    assert_eq!(trysys(c, "getpid"), "ok");
}

fn run_under(profile: &Path, image: &str) -> Container {
    let opt = format!("seccomp={}", profile.display());
    Container::run_with(
        &["--security-opt", &opt],
        image,
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    )
}

#[test]
fn seccomp_profile_from_a_learned_baseline_runs_the_workload_and_blocks_the_rest() {
    let daemon = Daemon::start(FAST_LEARNING);
    let image = image("seccomp");
    let key = format!("docker.io/{image}");
    let c = Container::run(&image, &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);
    let ip = c.ip();
    std::thread::sleep(Duration::from_millis(300));
    // The control: without a profile, sysinfo works.
    assert_eq!(trysys(&c, "sysinfo"), "ok");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        do_the_job(&c, &ip);
        let state = daemon.workload(&key).map(|w| w["state"].clone());
        if state.as_ref().is_some_and(|s| s == "stable") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stable: {state:?}\n{}",
            common::tail(&daemon.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(c);
    let (status, baseline) = daemon
        .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
        .unwrap();
    assert_eq!(status, 200, "{baseline}");
    // The control call of sysinfo happened in learning: take it out, as if never made.
    let mut b = Baseline::from_json_slice(baseline.as_bytes()).unwrap();
    let syscalls = b.dimensions.get_mut(&Dimension::Syscall).unwrap();
    assert!(
        syscalls.items.len() > 5,
        "learned syscalls: {:?}",
        syscalls.items.keys()
    );
    syscalls.items.remove("sysinfo");
    syscalls.stats = DimensionStats::of(&syscalls.items);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    std::fs::write(&file, b.to_json_pretty().unwrap()).unwrap();
    let profile = dir.path().join("seccomp.json");
    let out = Command::new(common::habitctl_bin())
        .args(["export", "seccomp"])
        .arg(&file)
        .arg("-o")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&profile).unwrap();
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(!text.contains("\"sysinfo\""), "{text}");

    // Under the profile: the learned job still works...
    let c = run_under(&profile, &image);
    let ip = c.ip();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::web_get(&ip, "/index.html").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    do_the_job(&c, &ip);
    do_the_job(&c, &ip);
    // ...and a syscall it never made fails with EPERM.
    assert_eq!(trysys(&c, "sysinfo"), "errno=1", "profile:\n{text}");
}
