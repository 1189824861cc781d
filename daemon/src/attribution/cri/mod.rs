//! [`ContainerRuntime`] for Kubernetes nodes: the CRI v1 gRPC API that containerd and CRI-O
//! serve on a unix socket (the one the kubelet uses).
//!
//! A container is described by `ContainerStatus(verbose)` (image, image_ref, labels,
//! annotations, and in the verbose info its pod sandbox and OCI annotations) and
//! `PodSandboxStatus` of its sandbox (pod name, namespace, uid, labels); `ImageStatus` names an
//! image that was run by id only. An id that is a pod's sandbox is described as one, so that
//! pause containers are recognised and never learned.
//!
//! [`CriRuntime::watch`] runs beside the pipeline: `ListContainers` at start-up (and after
//! every reconnection) fills a cache, and `GetContainerEvents` (containerd ≥ 1.7, CRI-O ≥
//! 1.26) describes a container as soon as it is created. Where the runtime has no event stream
//! (containerd 1.6), containers are described on demand when their first event arrives. Every
//! call has a timeout: a hung runtime delays a description, never the event path.

mod describe;
mod proto;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use self::describe::{
    ImageNames, describe_container, describe_sandbox, sandbox_id_of, verbose_info,
};
use self::proto::image_service_client::ImageServiceClient;
use self::proto::runtime_service_client::RuntimeServiceClient;
use super::health::{RuntimeMetrics, backoff};
use super::runtime::{ContainerInfo, ContainerRuntime, InspectFuture};
use super::{ResolveError, lock};

/// The CRI sockets looked for when none is configured: containerd, CRI-O, k3s's containerd.
pub const WELL_KNOWN_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];
/// Most container and sandbox descriptions cached (a node runs a few hundred pods at most).
const MAX_CACHED: usize = 16_384;
/// Largest gRPC answer accepted (a verbose status with a full OCI spec is tens of kB; a
/// ListContainers of a busy node a few MB).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The sockets to use: the configured ones, else the well-known ones that exist under `root`
/// (`/`, or the mount point of the host's root file system when habitd runs in a pod).
pub fn sockets(configured: &[PathBuf], root: &Path) -> Vec<PathBuf> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    WELL_KNOWN_SOCKETS
        .iter()
        .map(|s| root.join(s.trim_start_matches('/')))
        .filter(|p| p.exists())
        .collect()
}

/// The short runtime name of a socket, for logs and metric labels.
pub fn runtime_name(socket: &Path) -> &'static str {
    let text = socket.to_string_lossy();
    if text.contains("crio") {
        "crio"
    } else if text.contains("containerd") {
        "containerd"
    } else {
        "cri"
    }
}

/// A CRI runtime on a unix socket; clones share the connection and the cache.
#[derive(Clone)]
pub struct CriRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    name: &'static str,
    endpoint: String,
    timeout: Duration,
    channel: Channel,
    cache: Mutex<Cache>,
}

/// Descriptions learnt from listings and events, and pod sandboxes already asked about.
#[derive(Default)]
struct Cache {
    containers: HashMap<String, ContainerInfo>,
    sandboxes: HashMap<String, Arc<proto::PodSandboxStatus>>,
}

impl Cache {
    fn put_container(&mut self, info: ContainerInfo) {
        if self.containers.len() >= MAX_CACHED {
            self.containers.clear();
        }
        self.containers.insert(info.id.clone(), info);
    }

    fn put_sandbox(&mut self, status: Arc<proto::PodSandboxStatus>) {
        if self.sandboxes.len() >= MAX_CACHED {
            self.sandboxes.clear();
        }
        self.sandboxes.insert(status.id.clone(), status);
    }
}

impl CriRuntime {
    /// A client of the CRI runtime listening on `socket`. Nothing is connected until asked; a
    /// lost connection is re-established by the next call.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        let socket = socket.into();
        let name = runtime_name(&socket);
        let connect_to = socket.clone();
        // The URI is required by the HTTP/2 layer but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = connect_to.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }));
        Self {
            inner: Arc::new(Inner {
                endpoint: format!("CRI {name} at {}", socket.display()),
                socket,
                name,
                timeout,
                channel,
                cache: Mutex::default(),
            }),
        }
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.inner.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.inner.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one call with the timeout; `Ok(None)` when the runtime answers NotFound.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<Option<T>, ResolveError> {
        if !self.inner.socket.exists() {
            return Err(ResolveError::SocketMissing {
                endpoint: self.inner.endpoint.clone(),
                socket: self.inner.socket.clone(),
            });
        }
        match tokio::time::timeout(self.inner.timeout, call).await {
            Err(_) => Err(ResolveError::Timeout {
                endpoint: self.inner.endpoint.clone(),
                what: what.to_owned(),
                after: self.inner.timeout,
            }),
            Ok(Ok(response)) => Ok(Some(response.into_inner())),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Ok(None),
            Ok(Err(status)) => Err(self.grpc_error(what, &status)),
        }
    }

    fn grpc_error(&self, what: &str, status: &tonic::Status) -> ResolveError {
        let mut message = status.message().to_owned();
        let mut source = std::error::Error::source(status);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ResolveError::Grpc {
            endpoint: self.inner.endpoint.clone(),
            what: what.to_owned(),
            code: status.code(),
            message,
        }
    }

    /// The runtime's name and version (`Version`), e.g. `containerd v1.6.20`.
    pub async fn version(&self) -> Result<String, ResolveError> {
        let mut client = self.runtime();
        let request = proto::VersionRequest {
            version: "v1".to_owned(),
        };
        let answer = self.call("Version", client.version(request)).await?;
        Ok(answer
            .map(|v| format!("{} {}", v.runtime_name, v.runtime_version))
            .unwrap_or_default())
    }

    /// Describes a container (or a pod sandbox); `Ok(None)` if the runtime knows neither.
    pub async fn describe(&self, id: &str) -> Result<Option<ContainerInfo>, ResolveError> {
        if let Some(info) = lock(&self.inner.cache).containers.get(id) {
            return Ok(Some(info.clone()));
        }
        let info = match self.describe_container(id, None).await? {
            Some(info) => Some(info),
            None => self.describe_sandbox(id).await?,
        };
        if let Some(info) = &info {
            lock(&self.inner.cache).put_container(info.clone());
        }
        Ok(info)
    }

    /// `ContainerStatus(verbose)`, its sandbox, and the image's names when needed.
    async fn describe_container(
        &self,
        id: &str,
        sandbox_hint: Option<&str>,
    ) -> Result<Option<ContainerInfo>, ResolveError> {
        let mut client = self.runtime();
        let request = proto::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: true,
        };
        let Some(answer) = self
            .call("ContainerStatus", client.container_status(request))
            .await?
        else {
            return Ok(None);
        };
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.state == proto::ContainerState::ContainerCreated as i32 {
            // Created, not started: its init process (the entrypoint's pid) is not known yet,
            // so the description would be stale at once. Asked again shortly (its first events
            // are held meanwhile).
            return Ok(None);
        }
        let info = verbose_info(&answer.info);
        let sandbox_id = match sandbox_id_of(&info).or_else(|| sandbox_hint.map(str::to_owned)) {
            Some(s) => Some(s),
            None => self.sandbox_of(id).await?,
        };
        let sandbox = match sandbox_id {
            Some(s) => self.sandbox_status(&s).await?.map(|(s, _)| s),
            None => None,
        };
        let needs_names = status
            .image
            .as_ref()
            .is_none_or(|i| i.image.is_empty() || i.image.starts_with("sha256:"));
        let names = if needs_names {
            self.image_names(&status).await
        } else {
            ImageNames::default()
        };
        describe_container(&status, &info, sandbox.as_deref(), &names).map(Some)
    }

    /// The pod sandbox of a container, from `ListContainers` filtered by id (for runtimes
    /// whose verbose status does not name it).
    async fn sandbox_of(&self, id: &str) -> Result<Option<String>, ResolveError> {
        let mut client = self.runtime();
        let request = proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                id: id.to_owned(),
                ..Default::default()
            }),
        };
        let answer = self
            .call("ListContainers", client.list_containers(request))
            .await?;
        Ok(answer
            .and_then(|a| a.containers.into_iter().next())
            .map(|c| c.pod_sandbox_id)
            .filter(|s| !s.is_empty()))
    }

    /// `PodSandboxStatus`, cached per sandbox (a pod's metadata does not change).
    async fn sandbox_status(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<proto::PodSandboxStatus>, Value)>, ResolveError> {
        if let Some(s) = lock(&self.inner.cache).sandboxes.get(id) {
            return Ok(Some((Arc::clone(s), Value::Null)));
        }
        let mut client = self.runtime();
        let request = proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: true,
        };
        let Some(answer) = self
            .call("PodSandboxStatus", client.pod_sandbox_status(request))
            .await?
        else {
            return Ok(None);
        };
        let Some(status) = answer.status else {
            return Ok(None);
        };
        let status = Arc::new(status);
        lock(&self.inner.cache).put_sandbox(Arc::clone(&status));
        Ok(Some((status, verbose_info(&answer.info))))
    }

    /// Describes `id` as a pod sandbox, if it is one.
    async fn describe_sandbox(&self, id: &str) -> Result<Option<ContainerInfo>, ResolveError> {
        Ok(self
            .sandbox_status(id)
            .await?
            .map(|(status, info)| describe_sandbox(&status, &info)))
    }

    /// The tags and digests of a container's image (`ImageStatus`); empty on any failure, as
    /// they only improve a description.
    async fn image_names(&self, status: &proto::ContainerStatus) -> ImageNames {
        let image = Some(status.image_id.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| status.image.as_ref().map(|i| i.image.as_str()))
            .filter(|s| !s.is_empty())
            .unwrap_or(&status.image_ref);
        let mut client = self.images();
        let request = proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        match self.call("ImageStatus", client.image_status(request)).await {
            Ok(Some(proto::ImageStatusResponse {
                image: Some(image), ..
            })) => ImageNames {
                repo_tags: image.repo_tags,
                repo_digests: image.repo_digests,
            },
            _ => ImageNames::default(),
        }
    }

    /// `StopContainer` (the response's "stop"): the runtime sends SIGTERM, then SIGKILL after
    /// `grace`. `Ok(false)` when the runtime does not know the container. The client's
    /// timeout must exceed `grace` (the response builds its own client for that).
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<bool, ResolveError> {
        let mut client = self.runtime();
        let request = proto::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace.as_secs() as i64,
        };
        let answer = self
            .call("StopContainer", client.stop_container(request))
            .await?;
        Ok(answer.is_some())
    }

    /// `ListContainers`, every container described and cached; returns how many.
    pub async fn list(&self) -> Result<usize, ResolveError> {
        let mut client = self.runtime();
        let request = proto::ListContainersRequest { filter: None };
        let containers = self
            .call("ListContainers", client.list_containers(request))
            .await?
            .map(|a| a.containers)
            .unwrap_or_default();
        let mut described = 0;
        for c in &containers {
            match self
                .describe_container(&c.id, Some(&c.pod_sandbox_id))
                .await
            {
                Ok(Some(info)) => {
                    lock(&self.inner.cache).put_container(info);
                    described += 1;
                }
                Ok(None) => {}
                Err(e) if e.is_runtime_failure() => return Err(e),
                Err(e) => {
                    tracing::warn!(message = "Cannot describe a container.", container = %c.id, %e)
                }
            }
        }
        Ok(described)
    }

    /// Follows `GetContainerEvents` until the stream ends or fails: created and started
    /// containers are described at once, deleted ones forgotten. `Ok(false)` when the runtime
    /// has no event stream (containerd 1.6): on-demand lookups then do the work.
    async fn follow_events(&self) -> Result<bool, ResolveError> {
        if !self.inner.socket.exists() {
            return Err(ResolveError::SocketMissing {
                endpoint: self.inner.endpoint.clone(),
                socket: self.inner.socket.clone(),
            });
        }
        // No timeout on the stream itself, only on opening it.
        let mut client = RuntimeServiceClient::new(self.inner.channel.clone());
        let opened = tokio::time::timeout(
            self.inner.timeout,
            client.get_container_events(proto::GetEventsRequest {}),
        )
        .await;
        let mut stream = match opened {
            Err(_) => {
                return Err(ResolveError::Timeout {
                    endpoint: self.inner.endpoint.clone(),
                    what: "GetContainerEvents".into(),
                    after: self.inner.timeout,
                });
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => return Ok(false),
            Ok(Err(status)) => return Err(self.grpc_error("GetContainerEvents", &status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        loop {
            match stream.message().await {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) => return Ok(true),
                Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(false),
                Err(status) => return Err(self.grpc_error("GetContainerEvents", &status)),
            }
        }
    }

    async fn on_event(&self, event: proto::ContainerEventResponse) {
        use proto::ContainerEventType as T;
        let id = event.container_id;
        match T::try_from(event.container_event_type) {
            Ok(T::ContainerDeletedEvent) => {
                lock(&self.inner.cache).containers.remove(&id);
            }
            Ok(T::ContainerCreatedEvent | T::ContainerStartedEvent) => {
                if lock(&self.inner.cache).containers.contains_key(&id) {
                    return;
                }
                let hint = event.pod_sandbox_status.as_ref().map(|s| s.id.clone());
                if let Some(s) = event.pod_sandbox_status {
                    lock(&self.inner.cache).put_sandbox(Arc::new(s));
                }
                match self.describe_container(&id, hint.as_deref()).await {
                    Ok(Some(info)) => lock(&self.inner.cache).put_container(info),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(message = "Cannot describe a new container.", container = %id, %e)
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs for the daemon's life: lists the containers at start-up and after each
    /// reconnection, then follows the event stream if there is one. Failures are counted,
    /// logged once per change of state, and retried with back-off.
    pub async fn watch(self, metrics: RuntimeMetrics, on_recovered: impl Fn() + Send + Sync) {
        let name = self.inner.name;
        let mut failures = 0u32;
        let mut last_reason: Option<&'static str> = None;
        let mut events_supported = true;
        loop {
            let step = async {
                let started = Instant::now();
                let described = self.list().await?;
                let version = self.version().await.unwrap_or_default();
                tracing::info!(
                    message = "CRI runtime listed.",
                    runtime = name,
                    socket = %self.inner.socket.display(),
                    version,
                    containers = described,
                    took_ms = started.elapsed().as_millis() as u64
                );
                Ok::<(), ResolveError>(())
            };
            match step.await {
                Ok(()) => {
                    if last_reason.take().is_some() {
                        on_recovered();
                    }
                    failures = 0;
                }
                Err(e) => {
                    metrics.count(name, &e);
                    failures += 1;
                    if last_reason != Some(e.reason()) {
                        tracing::warn!(message = "CRI runtime unavailable: retrying with back-off.", runtime = name, reason = e.reason(), error = %e);
                        last_reason = Some(e.reason());
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
            if events_supported {
                match self.follow_events().await {
                    Ok(true) => {
                        // The runtime ended the stream (it is restarting?): list again, after
                        // a pause so that a runtime ending it at once is not spun on.
                        tokio::time::sleep(backoff(1)).await;
                        continue;
                    }
                    Ok(false) => {
                        events_supported = false;
                        tracing::info!(
                            message = "CRI runtime has no GetContainerEvents: containers are \
                                       described on demand when their first event arrives.",
                            runtime = name
                        );
                    }
                    Err(e) => {
                        metrics.count(name, &e);
                        failures += 1;
                        last_reason = Some(e.reason());
                        tracing::warn!(message = "CRI event stream lost: re-listing after back-off.", runtime = name, reason = e.reason(), error = %e);
                        tokio::time::sleep(backoff(failures)).await;
                        continue;
                    }
                }
            }
            // No event stream: wait until the runtime restarts (Version fails), then re-list.
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = self.version().await {
                    metrics.count(name, &e);
                    failures = 1;
                    last_reason = Some(e.reason());
                    tracing::warn!(message = "CRI runtime unavailable: retrying with back-off.", runtime = name, reason = e.reason(), error = %e);
                    tokio::time::sleep(backoff(failures)).await;
                    break;
                }
            }
        }
    }
}

impl ContainerRuntime for CriRuntime {
    fn name(&self) -> &str {
        self.inner.name
    }

    fn inspect<'a>(&'a self, id: &'a str) -> InspectFuture<'a> {
        Box::pin(self.describe(id))
    }
}

#[cfg(test)]
mod tests;
