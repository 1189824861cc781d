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

/// A fake CRI runtime: a real gRPC server on a unix socket that knows the containers and pod
/// sandboxes the test gives it, with or without `GetContainerEvents`.
mod fake {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::net::UnixListener;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
    use tonic::{Request, Response, Status};

    use super::super::proto::server as s;
    use s::runtime_service_server::{RuntimeService, RuntimeServiceServer};

    type EventSender = mpsc::Sender<Result<s::ContainerEventResponse, Status>>;

    #[derive(Default)]
    pub struct State {
        pub containers: HashMap<String, (s::ContainerStatus, String)>,
        pub sandboxes: HashMap<String, s::PodSandboxStatus>,
        pub events: Vec<EventSender>,
    }

    #[derive(Clone, Default)]
    pub struct Fake {
        pub state: Arc<Mutex<State>>,
        pub status_calls: Arc<AtomicUsize>,
        pub with_events: bool,
    }

    impl Fake {
        pub fn add(&self, id: &str, image: &str, sandbox: &str, pod: &str) {
            let status = s::ContainerStatus {
                id: id.into(),
                metadata: Some(s::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                state: s::ContainerState::ContainerRunning as i32,
                image: Some(s::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                image_ref: image.into(),
                ..Default::default()
            };
            let sandbox_status = s::PodSandboxStatus {
                id: sandbox.into(),
                metadata: Some(s::PodSandboxMetadata {
                    name: pod.into(),
                    uid: format!("uid-{pod}"),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                labels: [("app".to_owned(), pod.to_owned())].into(),
                ..Default::default()
            };
            let mut state = self.state.lock().unwrap();
            state.containers.insert(id.into(), (status, sandbox.into()));
            state.sandboxes.insert(sandbox.into(), sandbox_status);
        }

        /// Sends a CONTAINER_CREATED event for a container added before.
        pub async fn created(&self, id: &str) {
            let (senders, sandbox) = {
                let state = self.state.lock().unwrap();
                let sandbox = state
                    .containers
                    .get(id)
                    .and_then(|(_, s)| state.sandboxes.get(s))
                    .cloned();
                (state.events.clone(), sandbox)
            };
            for tx in senders {
                let _ = tx
                    .send(Ok(s::ContainerEventResponse {
                        container_id: id.into(),
                        container_event_type: s::ContainerEventType::ContainerCreatedEvent as i32,
                        created_at: 0,
                        pod_sandbox_status: sandbox.clone(),
                        containers_statuses: Vec::new(),
                    }))
                    .await;
            }
        }

        /// Serves on `path` until the returned task is aborted.
        pub fn serve(&self, path: &PathBuf) -> tokio::task::JoinHandle<()> {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).unwrap();
            let service = RuntimeServiceServer::new(self.clone());
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await;
            })
        }
    }

    #[tonic::async_trait]
    impl RuntimeService for Fake {
        async fn version(
            &self,
            _: Request<s::VersionRequest>,
        ) -> Result<Response<s::VersionResponse>, Status> {
            Ok(Response::new(s::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "fake".into(),
                runtime_version: "1".into(),
                runtime_api_version: "v1".into(),
            }))
        }

        async fn list_containers(
            &self,
            request: Request<s::ListContainersRequest>,
        ) -> Result<Response<s::ListContainersResponse>, Status> {
            let only = request.into_inner().filter.map(|f| f.id);
            let state = self.state.lock().unwrap();
            let containers = state
                .containers
                .values()
                .filter(|(c, _)| only.as_ref().is_none_or(|id| id.is_empty() || *id == c.id))
                .map(|(c, sandbox)| s::Container {
                    id: c.id.clone(),
                    pod_sandbox_id: sandbox.clone(),
                    metadata: c.metadata.clone(),
                    image: c.image.clone(),
                    image_ref: c.image_ref.clone(),
                    state: c.state,
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(s::ListContainersResponse { containers }))
        }

        async fn container_status(
            &self,
            request: Request<s::ContainerStatusRequest>,
        ) -> Result<Response<s::ContainerStatusResponse>, Status> {
            self.status_calls.fetch_add(1, Ordering::SeqCst);
            let id = request.into_inner().container_id;
            let state = self.state.lock().unwrap();
            let Some((status, sandbox)) = state.containers.get(&id) else {
                return Err(Status::not_found("no such container"));
            };
            let info = serde_json::json!({"sandboxID": sandbox, "pid": 4242}).to_string();
            Ok(Response::new(s::ContainerStatusResponse {
                status: Some(status.clone()),
                info: [("info".to_owned(), info)].into(),
            }))
        }

        async fn pod_sandbox_status(
            &self,
            request: Request<s::PodSandboxStatusRequest>,
        ) -> Result<Response<s::PodSandboxStatusResponse>, Status> {
            let id = request.into_inner().pod_sandbox_id;
            let state = self.state.lock().unwrap();
            let Some(status) = state.sandboxes.get(&id) else {
                return Err(Status::not_found("no such sandbox"));
            };
            Ok(Response::new(s::PodSandboxStatusResponse {
                status: Some(status.clone()),
                ..Default::default()
            }))
        }

        async fn get_container_events(
            &self,
            _: Request<s::GetEventsRequest>,
        ) -> Result<Response<tonic::codegen::BoxStream<s::ContainerEventResponse>>, Status>
        {
            if !self.with_events {
                return Err(Status::unimplemented("no events, like containerd 1.6"));
            }
            let (tx, rx) = mpsc::channel(16);
            self.state.lock().unwrap().events.push(tx);
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }
}

const C1: &str = "c100000000000000000000000000000000000000000000000000000000000001";
const C2: &str = "c200000000000000000000000000000000000000000000000000000000000002";
const S1: &str = "5100000000000000000000000000000000000000000000000000000000000001";

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `GetContainerEvents`, a container is described when it is created, before any event
/// of its cgroup asks; containers that exist at start-up are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_at_start_up_and_described_from_the_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock");
    let fake = fake::Fake {
        with_events: true,
        ..Default::default()
    };
    fake.add(C1, "nginx:1.25", S1, "web-1");
    let server = fake.serve(&path);
    let runtime = CriRuntime::new(&path, Duration::from_secs(2));
    let watcher = tokio::spawn(runtime.clone().watch(RuntimeMetrics::new(), || {}));
    let calls = || fake.status_calls.load(std::sync::atomic::Ordering::SeqCst);
    eventually("C1 listed", || calls() >= 1).await;
    eventually("the event stream opened", || {
        !fake.state.lock().unwrap().events.is_empty()
    })
    .await;
    let c1 = runtime.describe(C1).await.unwrap().unwrap();
    assert_eq!(c1.k8s_pod.as_deref(), Some("web-1"));
    assert_eq!(c1.init_pid, Some(4242));
    assert_eq!(calls(), 1, "C1 came from the listing's cache");

    fake.add(C2, "redis:7", S1, "web-1");
    fake.created(C2).await;
    eventually("C2 described from its event", || calls() >= 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c2 = runtime.describe(C2).await.unwrap().unwrap();
    assert_eq!(c2.image_ref.key().as_str(), "docker.io/library/redis:7");
    assert_eq!(c2.k8s_namespace.as_deref(), Some("ns"));
    assert_eq!(c2.k8s_pod_uid.as_deref(), Some("uid-web-1"));
    assert_eq!(
        c2.k8s_pod_labels.iter().collect::<Vec<_>>(),
        [(&"app".to_string(), &"web-1".to_string())]
    );
    assert_eq!(calls(), 2, "no lookup when the first event of C2 asks");
    // The sandbox itself is recognised.
    assert!(runtime.describe(S1).await.unwrap().unwrap().pod_sandbox);
    assert_eq!(runtime.describe(&"f".repeat(64)).await.unwrap(), None);
    watcher.abort();
    server.abort();
}

/// A runtime without an event stream that restarts: its failure is counted and logged once,
/// and once it is back the watcher lists it again and says so (the resolver then asks again
/// for the containers that were waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_runtime_is_listed_again_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock");
    let fake = fake::Fake::default();
    fake.add(C1, "nginx:1.25", S1, "web-1");
    let server = fake.serve(&path);
    let metrics = RuntimeMetrics::new();
    let recovered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flag = Arc::clone(&recovered);
    let runtime = CriRuntime::new(&path, Duration::from_millis(500));
    let watcher = tokio::spawn(runtime.clone().watch(metrics.clone(), move || {
        flag.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let calls = || fake.status_calls.load(std::sync::atomic::Ordering::SeqCst);
    eventually("C1 listed", || calls() >= 1).await;

    // The runtime goes away (its socket with it), and comes back knowing a new container.
    server.abort();
    let _ = std::fs::remove_file(&path);
    let errors = || {
        metrics
            .errors
            .with_label_values(&["containerd", "absent"])
            .get()
    };
    eventually("the outage noticed", || errors() >= 1).await;
    fake.add(C2, "redis:7", S1, "web-1");
    let server = fake.serve(&path);
    eventually("back and listed again", || {
        recovered.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let before = calls();
    let c2 = runtime.describe(C2).await.unwrap().unwrap();
    assert_eq!(c2.image_ref.key().as_str(), "docker.io/library/redis:7");
    assert_eq!(calls(), before, "C2 came from the new listing");
    watcher.abort();
    server.abort();
}

/// Through the resolver: a container whose runtime is down stays pending (its runtime is not
/// asked while backing off); when the runtime is back, the supervisor notices, and the
/// container is described at its next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_describes_waiting_containers_when_the_runtime_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock");
    let tree = tempfile::tempdir().unwrap();
    let cgroup_dir = format!("kubepods/cri-containerd-{C1}.scope");
    std::fs::create_dir_all(tree.path().join(&cgroup_dir)).unwrap();
    let cgroup = std::fs::metadata(tree.path().join(&cgroup_dir))
        .unwrap()
        .ino();
    let metrics = RuntimeMetrics::new();
    let resolver = Arc::new(WorkloadResolver::with_metrics(
        CgroupIndex::with_limits(tree.path(), IndexLimits::default()),
        vec![Box::new(CriRuntime::new(&path, Duration::from_millis(500)))],
        ResolverConfig::default(),
        metrics.clone(),
    ));
    tokio::spawn(Arc::clone(&resolver).supervise());

    // Down: pending, counted, the runtime marked down.
    assert!(matches!(
        resolver.resolve_now(cgroup, None).await,
        Resolution::Pending(_)
    ));
    eventually("marked down", || {
        metrics.up.with_label_values(&["containerd"]).get() == 0
    })
    .await;
    assert!(
        metrics
            .errors
            .with_label_values(&["containerd", "absent"])
            .get()
            >= 1
    );

    // Back: the supervisor notices within its back-off, and the next event is described.
    let fake = fake::Fake::default();
    fake.add(C1, "nginx:1.25", S1, "web-1");
    let server = fake.serve(&path);
    let back = Instant::now();
    eventually("marked up", || {
        metrics.up.with_label_values(&["containerd"]).get() == 1
    })
    .await;
    let mut described = None;
    while described.is_none() {
        if let Resolution::Ready(w) = resolver.resolve_now(cgroup, None).await {
            described = Some(w);
        }
        assert!(back.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let w = described.unwrap();
    assert_eq!(w.key.as_str(), "docker.io/library/nginx:1.25");
    assert_eq!(
        w.container.as_ref().unwrap().k8s_pod.as_deref(),
        Some("web-1")
    );
    println!("described {:?} after the runtime came back", back.elapsed());
    server.abort();
}
