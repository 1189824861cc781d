//! The CRI client against sockets that misbehave (absent, refusing, hanging, answering
//! garbage): every call ends within its timeout with an error whose reason names the case,
//! and the resolver never waits for it on the event path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::*;
use crate::attribution::cgroup::{CgroupIndex, IndexLimits};
use crate::attribution::{Resolution, ResolverConfig, RuntimeMetrics, WorkloadResolver};

const TIMEOUT: Duration = Duration::from_millis(300);
const ID: &str = "cccccccccccc0000000000000000000000000000000000000000000000000003";

/// What a fake server does with each connection.
#[derive(Clone, Copy)]
enum Misbehave {
    /// Accepts and never answers.
    Hang,
    /// Accepts and answers bytes that are not HTTP/2.
    Garbage,
}

/// A unix socket server that misbehaves; stops when dropped.
struct FakeServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    fn start(how: Misbehave) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                if let Misbehave::Garbage = how {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nnot grpc at all\r\n\r\n\x00\x01garbage")
                        .await;
                }
                open.push(stream);
            }
        });
        Self {
            _dir: dir,
            path,
            task,
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One description attempt through the runtime's health: the error's reason, how long the
/// attempt took, and the `habitd_runtime_errors_total` sample of that reason afterwards.
async fn reason_of(runtime: &CriRuntime) -> (&'static str, Duration) {
    let metrics = RuntimeMetrics::new();
    let name = ContainerRuntime::name(runtime).to_owned();
    let health = crate::attribution::health::RuntimeHealth::new(&name, metrics.clone());
    let started = Instant::now();
    let err = runtime.describe(ID).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_runtime_failure(), "{err}");
    health.failed(&err);
    assert!(health.is_down(), "{err}");
    assert_eq!(
        metrics
            .errors
            .with_label_values(&[name.as_str(), err.reason()])
            .get(),
        1,
        "counted under its reason"
    );
    assert_eq!(metrics.up.with_label_values(&[name.as_str()]).get(), 0);
    (err.reason(), took)
}

#[tokio::test]
async fn absent_socket() {
    let runtime = CriRuntime::new("/nonexistent/containerd.sock", TIMEOUT);
    let (reason, took) = reason_of(&runtime).await;
    assert_eq!(reason, "absent");
    assert!(took < TIMEOUT, "{took:?}");
    assert_eq!(ContainerRuntime::name(&runtime), "containerd");
}

#[tokio::test]
async fn refusing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crio.sock");
    // A socket file nobody listens on any more: connect() is refused.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let runtime = CriRuntime::new(&path, TIMEOUT);
    let (reason, took) = reason_of(&runtime).await;
    assert_eq!(reason, "unavailable");
    assert!(took < TIMEOUT, "{took:?}");
    assert_eq!(ContainerRuntime::name(&runtime), "crio");
}

#[tokio::test]
async fn hanging_runtime_times_out() {
    let server = FakeServer::start(Misbehave::Hang);
    let runtime = CriRuntime::new(&server.path, TIMEOUT);
    let (reason, took) = reason_of(&runtime).await;
    assert_eq!(reason, "timeout");
    assert!(
        took >= TIMEOUT && took < TIMEOUT * 3,
        "one call ends at its timeout: {took:?}"
    );
}

#[tokio::test]
async fn garbage_answer_is_an_error_not_a_hang() {
    let server = FakeServer::start(Misbehave::Garbage);
    let runtime = CriRuntime::new(&server.path, TIMEOUT);
    let (reason, took) = reason_of(&runtime).await;
    assert_eq!(reason, "protocol", "garbage is a protocol error");
    assert!(took < TIMEOUT * 2, "{took:?}");
}

#[test]
fn sockets_are_the_configured_ones_or_the_well_known_ones_that_exist() {
    let root = tempfile::tempdir().unwrap();
    assert!(sockets(&[], root.path()).is_empty());
    let crio = root.path().join("run/crio");
    std::fs::create_dir_all(&crio).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(crio.join("crio.sock")).unwrap();
    assert_eq!(sockets(&[], root.path()), [crio.join("crio.sock")]);
    let configured = [PathBuf::from("/host/run/containerd/containerd.sock")];
    assert_eq!(sockets(&configured, root.path()), configured);
    assert_eq!(
        runtime_name(Path::new("/run/k3s/containerd/containerd.sock")),
        "containerd"
    );
    assert_eq!(runtime_name(Path::new("/x/cri.sock")), "cri");
}

/// With a hanging runtime, the event path gets an answer at once (pending), the runtime is
/// marked down after one timeout, counted, and not asked again until its back-off passes.
#[tokio::test]
async fn a_hanging_runtime_never_blocks_the_event_path() {
    let server = FakeServer::start(Misbehave::Hang);
    let tree = tempfile::tempdir().unwrap();
    let dirs: Vec<String> = (1..=3)
        .map(|i| format!("kubepods/cri-containerd-{:064x}.scope", i))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(tree.path().join(d)).unwrap();
    }
    let index = CgroupIndex::with_limits(
        tree.path(),
        IndexLimits {
            min_refresh_interval: Duration::from_millis(10),
            ..IndexLimits::default()
        },
    );
    let metrics = RuntimeMetrics::new();
    let runtime = CriRuntime::new(&server.path, TIMEOUT);
    let resolver = Arc::new(WorkloadResolver::with_metrics(
        index,
        vec![Box::new(runtime)],
        ResolverConfig::default(),
        metrics.clone(),
    ));
    let cgroup = |d: &str| std::fs::metadata(tree.path().join(d)).unwrap().ino();

    let started = Instant::now();
    let first = resolver.resolve_now(cgroup(&dirs[0]), None).await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(first, Resolution::Pending(ref w) if w.is_unresolved()));
    tokio::time::sleep(TIMEOUT + Duration::from_millis(100)).await;
    let timeouts = || metrics.errors.with_label_values(&["cri", "timeout"]).get();
    assert_eq!(timeouts(), 1);
    assert_eq!(metrics.up.with_label_values(&["cri"]).get(), 0);

    // Down and backing off: a second container is not asked (no second timeout).
    let started = Instant::now();
    assert!(matches!(
        resolver.resolve_now(cgroup(&dirs[1]), None).await,
        Resolution::Pending(_)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        resolver.resolve_now(cgroup(&dirs[1]), None).await,
        Resolution::Pending(_)
    ));
    assert_eq!(timeouts(), 1, "not asked while backing off");
}
