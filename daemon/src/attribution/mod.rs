//! Workload attribution: maps a kernel event's cgroup to the workload it belongs to.
//!
//! The kernel gives each event the cgroup v2 id of its task (`bpf_get_current_cgroup_id()`, the
//! inode of the task's directory in the unified hierarchy) and, where containers have no v2
//! cgroup of their own, the name of the task's v1 memory cgroup (the 64-hex container id).
//! [`WorkloadResolver::resolve`] turns that into a [`Workload`]:
//!
//! 1. cgroup id → cgroup path, through a [`CgroupIndex`] of the unified hierarchy;
//! 2. path → container id ([`container_id_from_path`]), or else the v1 name hint → container id;
//! 3. container id → [`ContainerInfo`] through the configured [`ContainerRuntime`]s, whose image
//!    gives the workload key;
//! 4. no container → the innermost systemd service of the path (`host:ssh.service`) or `host`.
//!
//! Everything is cached and bounded, so the per-event cost after the first event of a cgroup is
//! one or two hash lookups.

pub mod cgroup;
pub mod cri;
pub mod docker;
pub mod health;
pub mod peers;
pub mod runtime;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use habit_profiles::workload::{WorkloadError, WorkloadKey};
use tokio::sync::OnceCell;

pub use cgroup::{CgroupIndex, container_id_from_path, systemd_unit_from_path};
pub use health::RuntimeMetrics;
pub use runtime::{ContainerInfo, ContainerRuntime};

use health::{RuntimeHealth, Transition};

/// Why attribution (or one of its sources: cgroupfs, procfs, a container runtime) failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No cgroup2 file system is mounted, so cgroup ids cannot be mapped to paths.
    #[error("no cgroup2 (unified) hierarchy is mounted: no fstype cgroup2 in {mountinfo}")]
    NoUnifiedHierarchy {
        /// The mount table that was searched.
        mountinfo: PathBuf,
    },
    /// A file or directory of cgroupfs or procfs could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The Docker Engine socket could not be connected to.
    #[error("Docker not reachable at {socket}: {source} (is dockerd running?)")]
    DockerUnreachable {
        /// The unix socket of the Docker Engine API.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// An HTTP exchange with a runtime failed (handshake, request, or reading the body).
    #[error("{endpoint}: {what} failed: {source}")]
    Http {
        /// The runtime and its address, e.g. `Docker at /var/run/docker.sock`.
        endpoint: String,
        /// The request, e.g. `GET /containers/…/json`.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A runtime did not answer within the timeout.
    #[error("{endpoint}: {what} timed out after {after:?}")]
    Timeout {
        /// The runtime and its address.
        endpoint: String,
        /// The request.
        what: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// A runtime answered with an unexpected HTTP status.
    #[error("{endpoint}: {what} answered HTTP {status}: {message}")]
    Status {
        /// The runtime and its address.
        endpoint: String,
        /// The request.
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (Docker puts its error message there).
        message: String,
    },
    /// A runtime's answer was not the JSON expected.
    #[error("{endpoint}: {what}: unexpected JSON: {source}")]
    Json {
        /// The runtime and its address.
        endpoint: String,
        /// The request.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The image a container was created from is not a valid image reference.
    #[error("container {container}: image {image:?}: {source}")]
    ImageRef {
        /// The container id.
        container: String,
        /// The image as configured.
        image: String,
        /// Why the reference is invalid.
        #[source]
        source: WorkloadError,
    },
    /// The container was created from an image id whose image has no tag and no digest, so no
    /// workload key can be formed for it.
    #[error("container {container} runs image {image_id}, which has no tag and no digest")]
    UnnamedImage {
        /// The container id.
        container: String,
        /// The image id (`sha256:…`).
        image_id: String,
    },
    /// A runtime's unix socket does not exist (the runtime is not installed, not started yet,
    /// or the host directory holding it is not mounted).
    #[error("{endpoint}: socket {socket} does not exist")]
    SocketMissing {
        /// The runtime and its address.
        endpoint: String,
        /// The missing socket.
        socket: PathBuf,
    },
    /// A gRPC call to a CRI runtime failed (connection refused or reset, an answer that is not
    /// gRPC, or an error status).
    #[error("{endpoint}: {what} failed: {code:?}: {message}")]
    Grpc {
        /// The runtime and its address, e.g. `CRI containerd at /run/containerd/containerd.sock`.
        endpoint: String,
        /// The call, e.g. `ContainerStatus`.
        what: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message (with its source chain).
        message: String,
    },
    /// A container id given to a runtime contains characters no runtime uses.
    #[error("invalid container id {id:?}: expected letters, digits, '_', '.' or '-'")]
    InvalidContainerId {
        /// The rejected id.
        id: String,
    },
}

impl ResolveError {
    /// The `reason` label of `habitd_runtime_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SocketMissing { .. } => "absent",
            Self::DockerUnreachable { .. } => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::Grpc { code, .. } => match code {
                tonic::Code::Unavailable => "unavailable",
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
                // Something answers gRPC there, but not CRI v1 (e.g. containerd with its CRI
                // plugin disabled, as Docker hosts often run it).
                tonic::Code::Unimplemented => "unimplemented",
                _ => "protocol",
            },
            Self::Http { .. } | Self::Status { .. } => "protocol",
            Self::Json { .. }
            | Self::ImageRef { .. }
            | Self::UnnamedImage { .. }
            | Self::InvalidContainerId { .. } => "bad_answer",
            Self::NoUnifiedHierarchy { .. } | Self::Io { .. } => "io",
        }
    }

    /// Whether the error says the runtime itself is unusable (absent, refusing, hanging,
    /// speaking garbage) rather than that one container's description is unusable.
    pub fn is_runtime_failure(&self) -> bool {
        !matches!(self.reason(), "bad_answer" | "io")
    }
}

/// What a cgroup is attributed to: the key plus the context that alerts report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The key profiles and baselines are filed under.
    pub key: WorkloadKey,
    /// The container, once its runtime has described it.
    pub container: Option<ContainerInfo>,
    /// The container id, set as soon as one is known, even before the runtime answers (then
    /// `key` is the provisional `container:<id12>` and `container` is `None`).
    pub container_id: Option<String>,
    /// The systemd service of a host process, if it runs in one.
    pub host_unit: Option<String>,
}

impl Workload {
    /// A host workload, in a systemd service or not.
    pub fn host(unit: Option<String>) -> Self {
        let key = unit
            .as_deref()
            .map_or_else(WorkloadKey::host, WorkloadKey::host_unit);
        Self {
            key,
            container: None,
            container_id: None,
            host_unit: unit,
        }
    }

    /// A container described by its runtime, keyed by its image.
    pub fn container(info: ContainerInfo) -> Self {
        Self {
            key: WorkloadKey::image(&info.image_ref),
            container_id: Some(info.id.clone()),
            container: Some(info),
            host_unit: None,
        }
    }

    /// A container no runtime could describe (yet), under a provisional key.
    pub fn unresolved_container(id: &str) -> Self {
        Self {
            key: WorkloadKey::unresolved_container(id),
            container: None,
            container_id: Some(id.to_owned()),
            host_unit: None,
        }
    }

    /// Whether this is a container still waiting for its runtime; the pipeline should not learn
    /// from such events, since they may belong to any image.
    pub fn is_unresolved(&self) -> bool {
        (self.container_id.is_some() && self.container.is_none()) || self.key.is_provisional()
    }

    /// Whether this is a pod's sandbox (pause) container: infrastructure, never learned.
    pub fn is_pod_sandbox(&self) -> bool {
        self.container.as_ref().is_some_and(|c| c.pod_sandbox)
    }

    /// A cgroup missing from the cgroup index (created after the last walk): provisional, so
    /// that its events are neither learned nor merged into `host` (see
    /// [`WorkloadKey::unresolved_cgroup`]).
    pub fn unresolved_cgroup(cgroup_id: u64) -> Self {
        Self {
            key: WorkloadKey::unresolved_cgroup(cgroup_id),
            container: None,
            container_id: None,
            host_unit: None,
        }
    }
}

/// Bounds and retry delays of a [`WorkloadResolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Most cgroup ids whose classification is cached; over it the cache is cleared (it refills
    /// from the cgroup index without I/O).
    pub max_cgroups: usize,
    /// Most containers cached; over it, unresolved entries go first, then everything.
    pub max_containers: usize,
    /// How long a container that no runtime knows keeps its provisional key before the next
    /// event asks again. Short, because this is normally a race with container creation.
    pub retry_unknown: Duration,
    /// How long after a runtime error (unreachable, timeout, bad answer) to ask again. Longer,
    /// so that a dead runtime is not hammered once per event.
    pub retry_failed: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            // A busy node has a few thousand cgroups; this leaves ample head-room.
            max_cgroups: 65_536,
            // Far more containers than a node runs at once, including recently exited ones.
            max_containers: 16_384,
            // The container usually appears in the runtime within milliseconds of its cgroup
            // (a CRI container is described once started, a few ms after its first events).
            retry_unknown: Duration::from_millis(250),
            // Long enough to keep a down runtime quiet, short enough to recover quickly.
            retry_failed: Duration::from_secs(5),
        }
    }
}

/// How a cgroup path classifies, cached per cgroup id (a cgroup's path does not change).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathClass {
    /// The path names a container.
    Container(String),
    /// A host cgroup, in a systemd service or not.
    Host(Option<String>),
}

impl PathClass {
    /// Classifies a path of the unified hierarchy.
    fn of(path: &str) -> Self {
        match container_id_from_path(path) {
            Some(id) => Self::Container(id),
            None => Self::Host(systemd_unit_from_path(path)),
        }
    }
}

/// The outcome of asking the runtimes about one container.
#[derive(Debug)]
struct Outcome {
    /// The workload to attribute events to.
    workload: Arc<Workload>,
    /// When to ask again; `None` once a runtime has described the container.
    retry_at: Option<Instant>,
}

/// One container's cache entry. The `OnceCell` makes inspection single-flight: events that
/// arrive while the runtime is being asked wait for that answer instead of asking again.
#[derive(Debug, Default)]
struct ContainerSlot {
    outcome: OnceCell<Outcome>,
    /// A background inspection was started ([`WorkloadResolver::resolve_now`]).
    started: std::sync::atomic::AtomicBool,
}

/// A runtime with its health (up, or down and backing off).
struct Supervised {
    runtime: Box<dyn ContainerRuntime>,
    health: RuntimeHealth,
}

/// What [`WorkloadResolver::resolve_now`] knows at once.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Final: a host workload, a described container, or an unknown cgroup.
    Ready(Arc<Workload>),
    /// A container not described yet (being asked, or unknown to the runtimes so far): its
    /// provisional workload.
    Pending(Arc<Workload>),
}

impl ContainerSlot {
    /// Whether the slot holds a provisional answer whose retry time has come.
    fn is_due(&self, now: Instant) -> bool {
        self.outcome
            .get()
            .and_then(|o| o.retry_at)
            .is_some_and(|t| t <= now)
    }

    /// Whether a runtime has described the container (the answer is final).
    fn is_resolved(&self) -> bool {
        self.outcome.get().is_some_and(|o| o.retry_at.is_none())
    }
}

/// Most remembered missing cgroup ids (cleared when full).
const MAX_MISSING: usize = 4096;

/// Attributes kernel events to workloads; share it as `Arc<WorkloadResolver>` across tasks.
///
/// The caches are std mutexes held only for map operations, never across an `.await`; only
/// the walk gate, a tokio mutex, is held while the hierarchy is walked.
pub struct WorkloadResolver {
    index: Arc<CgroupIndex>,
    runtimes: Vec<Supervised>,
    config: ResolverConfig,
    cgroups: Mutex<HashMap<u64, PathClass>>,
    containers: Mutex<HashMap<String, Arc<ContainerSlot>>>,
    hosts: Mutex<HashMap<Option<String>, Arc<Workload>>>,
    /// Serialises index walks triggered by misses (held across the walk's `.await`).
    walk_gate: tokio::sync::Mutex<()>,
    /// cgroup ids a walk did not find, and when: answered without walking for a while.
    missing: Mutex<HashMap<u64, Instant>>,
    /// Described containers' addresses → their workload (connections to another container).
    peers: Mutex<peers::PeerIndex>,
}

impl WorkloadResolver {
    /// A resolver with default bounds. Runtimes are asked in order; the first that knows a
    /// container wins (a node may run Docker and containerd side by side).
    #[cfg(test)]
    pub fn new(index: CgroupIndex, runtimes: Vec<Box<dyn ContainerRuntime>>) -> Self {
        Self::with_config(index, runtimes, ResolverConfig::default())
    }

    /// A resolver with explicit bounds and retry delays.
    #[cfg(test)]
    pub fn with_config(
        index: CgroupIndex,
        runtimes: Vec<Box<dyn ContainerRuntime>>,
        config: ResolverConfig,
    ) -> Self {
        Self::with_metrics(index, runtimes, config, RuntimeMetrics::new())
    }

    /// A resolver counting runtime errors in `metrics` (registered by the caller).
    pub fn with_metrics(
        index: CgroupIndex,
        runtimes: Vec<Box<dyn ContainerRuntime>>,
        config: ResolverConfig,
        metrics: RuntimeMetrics,
    ) -> Self {
        let runtimes = runtimes
            .into_iter()
            .map(|runtime| Supervised {
                health: RuntimeHealth::new(runtime.name(), metrics.clone()),
                runtime,
            })
            .collect();
        Self {
            index: Arc::new(index),
            runtimes,
            config,
            cgroups: Mutex::default(),
            containers: Mutex::default(),
            hosts: Mutex::default(),
            walk_gate: tokio::sync::Mutex::new(()),
            missing: Mutex::default(),
            peers: Mutex::default(),
        }
    }

    /// The cgroup index the resolver uses.
    pub fn index(&self) -> &CgroupIndex {
        &self.index
    }

    /// The workload of an event from cgroup `cgroup_id`, with the task's v1 memory-cgroup name
    /// if the probe read one. Never fails: a cgroup missing from the index even after a
    /// (rate-limited) re-walk gets the provisional `cgroup:<id>`, and a container its runtime
    /// does not describe (yet) `container:<id12>` (see [`Workload::unresolved_container`]);
    /// both are retried on a later event.
    #[cfg(test)]
    pub async fn resolve(&self, cgroup_id: u64, v1_name_hint: Option<&str>) -> Arc<Workload> {
        let class = self.classify(cgroup_id).await;
        let hinted = || v1_name_hint.and_then(container_id_from_path);
        match class {
            Some(PathClass::Container(id)) => self.container_workload(&id).await,
            Some(PathClass::Host(unit)) => match hinted() {
                Some(id) => self.container_workload(&id).await,
                None => self.host_workload(unit),
            },
            None => match hinted() {
                Some(id) => self.container_workload(&id).await,
                None => Arc::new(Workload::unresolved_cgroup(cgroup_id)),
            },
        }
    }

    /// Like [`Self::resolve`], but never waits for a container runtime: a container not
    /// described yet is asked about in a background task and reported [`Resolution::Pending`]
    /// (with its provisional workload) until the answer is in. Only the local cgroup index may
    /// be awaited (a rate-limited walk of cgroupfs).
    pub async fn resolve_now(
        self: &Arc<Self>,
        cgroup_id: u64,
        v1_name_hint: Option<&str>,
    ) -> Resolution {
        let class = self.classify(cgroup_id).await;
        let hinted = || v1_name_hint.and_then(container_id_from_path);
        let id = match class {
            Some(PathClass::Container(id)) => id,
            Some(PathClass::Host(unit)) => match hinted() {
                Some(id) => id,
                None => return Resolution::Ready(self.host_workload(unit)),
            },
            None => match hinted() {
                Some(id) => id,
                None => {
                    return Resolution::Ready(Arc::new(Workload::unresolved_cgroup(cgroup_id)));
                }
            },
        };
        let slot = self.container_slot(&id);
        if let Some(outcome) = slot.outcome.get() {
            return if outcome.retry_at.is_none() {
                Resolution::Ready(Arc::clone(&outcome.workload))
            } else {
                Resolution::Pending(Arc::clone(&outcome.workload))
            };
        }
        let provisional = Arc::new(Workload::unresolved_container(&id));
        if !slot.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let resolver = Arc::clone(self);
            tokio::spawn(async move {
                slot.outcome.get_or_init(|| resolver.inspect_all(&id)).await;
            });
        }
        Resolution::Pending(provisional)
    }

    /// Whether cgroup `cgroup_id` is a host cgroup (not a container's, not unknown): events of
    /// it that a v1 hint names a container for must not be held by cgroup.
    pub async fn is_host_cgroup(&self, cgroup_id: u64) -> bool {
        matches!(self.classify(cgroup_id).await, Some(PathClass::Host(_)))
    }

    /// Drops the provisional answers cached for containers, so that their next event asks the
    /// runtimes again at once (after a runtime came back).
    pub fn forget_unresolved(&self) {
        lock(&self.containers).retain(|_, slot| slot.is_resolved() || slot.outcome.get().is_none());
    }

    /// Runs for the daemon's life: asks each runtime that is down again once its back-off has
    /// passed (with a container id no runtime has), so that a runtime coming back is noticed
    /// even when no event needs it, and the containers waiting for it are asked again.
    pub async fn supervise(self: Arc<Self>) {
        const PROBE_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            for supervised in &self.runtimes {
                if !supervised.health.is_down() || !supervised.health.ready(Instant::now()) {
                    continue;
                }
                let answer = supervised.runtime.inspect(PROBE_ID).await;
                let transition = match answer {
                    Ok(_) => supervised.health.succeeded(),
                    Err(error) => supervised.health.failed(&error),
                };
                if transition == Transition::Recovered {
                    self.forget_unresolved();
                }
            }
        }
    }

    /// Drops what is cached about a cgroup (call it when the cgroup is removed), and about its
    /// container, so that a later cgroup reusing nothing of it starts afresh.
    pub fn forget(&self, cgroup_id: u64) {
        let class = lock(&self.cgroups).remove(&cgroup_id);
        self.index.remove(cgroup_id);
        if let Some(PathClass::Container(id)) = class {
            self.forget_container(&id);
        }
    }

    /// Drops what is cached about a container (call it when the runtime reports it gone).
    pub fn forget_container(&self, container_id: &str) {
        lock(&self.containers).remove(container_id);
        lock(&self.peers).remove(container_id, Instant::now());
    }

    /// The workload of the described container(s) that have `address`, if one workload's do
    /// (or did, until a few minutes ago): a connection there is to that workload, whichever
    /// replica answers ([`peers`]).
    pub fn workload_at(&self, address: std::net::IpAddr) -> Option<WorkloadKey> {
        lock(&self.peers)
            .workload_at(address, Instant::now())
            .cloned()
    }

    /// How many cgroup ids are cached (for metrics and tests).
    pub fn cached_cgroups(&self) -> usize {
        lock(&self.cgroups).len()
    }

    /// How many containers are cached, resolved or not (for tests).
    #[cfg(test)]
    pub fn cached_containers(&self) -> usize {
        lock(&self.containers).len()
    }

    /// The classification of a cgroup id, from the cache or the index; `None` if the id is not
    /// in the hierarchy even after a (rate-limited) re-walk, e.g. a cgroup already removed.
    /// Unknown ids are not cached, so a storm of them cannot fill the cache.
    async fn classify(&self, cgroup_id: u64) -> Option<PathClass> {
        if let Some(class) = lock(&self.cgroups).get(&cgroup_id) {
            return Some(class.clone());
        }
        let path = self.lookup_or_walk(cgroup_id).await?;
        let class = PathClass::of(&path);
        let mut cgroups = lock(&self.cgroups);
        if cgroups.len() >= self.config.max_cgroups {
            cgroups.clear();
        }
        cgroups.insert(cgroup_id, class.clone());
        Some(class)
    }

    /// The path of a cgroup id, re-walking the hierarchy on a miss if the rate limit allows.
    /// Misses queue behind the gate, so events that race a walk see its result instead of
    /// finding the walk already claimed and giving up.
    ///
    /// An unknown id was almost always created after the last walk, so a miss waits for the
    /// rate limit (at most `min_refresh_interval`) rather than giving up; an id still missing
    /// after a walk is remembered for `retry_unknown` and answered at once meanwhile, so a
    /// vanished cgroup's late events cannot stall the pipeline.
    async fn lookup_or_walk(&self, cgroup_id: u64) -> Option<String> {
        if let Some(path) = self.index.lookup(cgroup_id) {
            return Some(path);
        }
        if self.recently_missing(cgroup_id) {
            return None;
        }
        let _gate = self.walk_gate.lock().await;
        if let Some(path) = self.index.lookup(cgroup_id) {
            return Some(path);
        }
        let wait = self.index.until_due();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.refresh_index().await;
        let found = self.index.lookup(cgroup_id);
        if found.is_none() {
            let mut missing = lock(&self.missing);
            if missing.len() >= MAX_MISSING {
                missing.clear();
            }
            missing.insert(cgroup_id, Instant::now());
        }
        found
    }

    /// Whether a walk recently failed to find this id.
    fn recently_missing(&self, cgroup_id: u64) -> bool {
        lock(&self.missing)
            .get(&cgroup_id)
            .is_some_and(|t| t.elapsed() < self.config.retry_unknown)
    }

    /// Re-walks the hierarchy on a blocking thread if the index's rate limit allows it.
    async fn refresh_index(&self) {
        if !self.index.refresh_due() {
            return;
        }
        let index = Arc::clone(&self.index);
        match tokio::task::spawn_blocking(move || index.refresh_if_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(message = "Failed to walk the cgroup hierarchy.", %error)
            }
            Err(error) => tracing::warn!(message = "Cgroup walk task failed.", %error),
        }
    }

    /// The workload of a container, asking the runtimes at most once at a time per container
    /// and at most once per retry delay while they do not know it.
    #[cfg(test)]
    async fn container_workload(&self, id: &str) -> Arc<Workload> {
        let slot = self.container_slot(id);
        let outcome = slot.outcome.get_or_init(|| self.inspect_all(id)).await;
        Arc::clone(&outcome.workload)
    }

    /// The cache slot of a container: the current one, or a fresh one if there is none or its
    /// provisional answer is due for a retry.
    fn container_slot(&self, id: &str) -> Arc<ContainerSlot> {
        let mut containers = lock(&self.containers);
        if let Some(slot) = containers.get(id)
            && !slot.is_due(Instant::now())
        {
            return Arc::clone(slot);
        }
        if containers.len() >= self.config.max_containers {
            containers.retain(|_, slot| slot.is_resolved());
            if containers.len() >= self.config.max_containers {
                containers.clear();
            }
        }
        let slot = Arc::new(ContainerSlot::default());
        containers.insert(id.to_owned(), Arc::clone(&slot));
        slot
    }

    /// Asks each runtime in turn; the first description wins. Otherwise the container gets its
    /// provisional key, with a short retry delay if the runtimes merely did not know it and a
    /// longer one if any of them failed.
    async fn inspect_all(&self, id: &str) -> Outcome {
        let mut failed = false;
        for Supervised { runtime, health } in &self.runtimes {
            if !health.ready(Instant::now()) {
                // Down and backing off: not asked, so a dead runtime costs nothing per event.
                failed = true;
                continue;
            }
            match runtime.inspect(id).await {
                Ok(answer) => {
                    if health.succeeded() == Transition::Recovered {
                        self.forget_unresolved();
                    }
                    if let Some(info) = answer {
                        let workload = Workload::container(info);
                        if let Some(info) = workload.container.as_ref().filter(|i| !i.pod_sandbox) {
                            lock(&self.peers).insert(&info.id, &workload.key, &info.addresses);
                        }
                        return Outcome {
                            workload: Arc::new(workload),
                            retry_at: None,
                        };
                    }
                }
                Err(error) => {
                    failed = true;
                    health.failed(&error);
                    tracing::debug!(
                        message = "Container runtime failed to describe a container.",
                        runtime = runtime.name(),
                        container = id,
                        %error
                    );
                }
            }
        }
        let delay = if failed {
            self.config.retry_failed
        } else {
            self.config.retry_unknown
        };
        Outcome {
            workload: Arc::new(Workload::unresolved_container(id)),
            retry_at: Some(Instant::now() + delay),
        }
    }

    /// The shared workload of host processes in `unit` (or in no service).
    fn host_workload(&self, unit: Option<String>) -> Arc<Workload> {
        let mut hosts = lock(&self.hosts);
        if let Some(workload) = hosts.get(&unit) {
            return Arc::clone(workload);
        }
        if hosts.len() >= self.config.max_cgroups {
            hosts.clear();
        }
        let workload = Arc::new(Workload::host(unit.clone()));
        hosts.insert(unit, Arc::clone(&workload));
        workload
    }
}

/// Locks a cache, recovering it if a panicking thread poisoned it: the maps hold plain values
/// that are never left half-updated, so the data is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::cgroup::{IndexLimits, find_unified_mount};
    use super::docker::DockerRuntime;
    use super::runtime::InspectFuture;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use habit_profiles::workload::ImageRef;

    use super::docker::DEFAULT_DOCKER_SOCKET;
    use super::*;

    const ID_A: &str = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000001";
    const ID_B: &str = "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000002";

    /// A runtime that knows what the test tells it: the resolver's caching is what is tested.
    #[derive(Default)]
    struct FakeRuntime {
        known: Mutex<HashMap<String, ContainerInfo>>,
        fail: Mutex<bool>,
        calls: AtomicUsize,
        /// How long an answer takes, to let concurrent events overlap an inspection.
        delay: Duration,
    }

    impl FakeRuntime {
        fn add(&self, id: &str, image: &str) {
            let image_ref = ImageRef::parse_normalized(image).unwrap();
            let info = ContainerInfo::new(id, "n", image, image_ref, BTreeMap::new());
            lock(&self.known).insert(id.to_owned(), info);
        }
    }

    impl ContainerRuntime for Arc<FakeRuntime> {
        fn name(&self) -> &str {
            "fake"
        }

        fn inspect<'a>(&'a self, id: &'a str) -> InspectFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = if *lock(&self.fail) {
                Err(ResolveError::InvalidContainerId { id: id.to_owned() })
            } else {
                Ok(lock(&self.known).get(id).cloned())
            };
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
            })
        }
    }

    struct Tree {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Tree {
        fn new(dirs: &[&str]) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            for dir in dirs {
                fs::create_dir_all(root.join(dir)).unwrap();
            }
            Self { _tmp: tmp, root }
        }

        fn id(&self, dir: &str) -> u64 {
            fs::metadata(self.root.join(dir)).unwrap().ino()
        }
    }

    fn resolver(tree: &Tree, fake: &Arc<FakeRuntime>, config: ResolverConfig) -> WorkloadResolver {
        let limits = IndexLimits {
            min_refresh_interval: Duration::from_millis(20),
            ..IndexLimits::default()
        };
        let index = CgroupIndex::with_limits(&tree.root, limits);
        WorkloadResolver::with_config(index, vec![Box::new(Arc::clone(fake))], config)
    }

    fn fast_retry() -> ResolverConfig {
        ResolverConfig {
            retry_unknown: Duration::from_millis(50),
            retry_failed: Duration::from_millis(50),
            ..ResolverConfig::default()
        }
    }

    #[tokio::test]
    async fn host_cgroups_resolve_to_host_or_their_service() {
        let tree = Tree::new(&["system.slice/ssh.service/sub", "user.slice"]);
        let fake = Arc::new(FakeRuntime::default());
        let r = resolver(&tree, &fake, fast_retry());
        assert_eq!(r.resolve(tree.id(""), None).await.key.as_str(), "host");
        assert_eq!(
            r.resolve(tree.id("user.slice"), None).await.key.as_str(),
            "host"
        );
        let ssh = r
            .resolve(tree.id("system.slice/ssh.service/sub"), None)
            .await;
        assert_eq!(ssh.key.as_str(), "host:ssh.service");
        assert_eq!(ssh.host_unit.as_deref(), Some("ssh.service"));
        let again = r.resolve(tree.id("system.slice/ssh.service"), None).await;
        assert!(Arc::ptr_eq(&ssh, &again), "host workloads are shared");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert!(r.is_host_cgroup(tree.id("")).await);
        assert!(!r.is_host_cgroup(987_654_321).await, "unknown is not host");
    }

    /// A host cgroup whose exec names a container through its v1 hint: that event is the
    /// container's (provisional until described), the cgroup stays the host's, so the
    /// pipeline must not hold the host's events behind it.
    #[tokio::test]
    async fn a_hint_names_a_container_in_a_host_cgroup_without_making_the_cgroup_its() {
        let tree = Tree::new(&["user.slice"]);
        let fake = Arc::new(FakeRuntime::default());
        let r = resolver(&tree, &fake, fast_retry());
        let host = tree.id("user.slice");
        let hinted = r.resolve(host, Some(&format!("/docker/{ID_A}"))).await;
        assert_eq!(hinted.container_id.as_deref(), Some(ID_A));
        assert!(r.is_host_cgroup(host).await);
        assert_eq!(r.resolve(host, None).await.key.as_str(), "host");
    }

    #[tokio::test]
    async fn unknown_container_is_provisional_then_resolved_after_the_retry_delay() {
        let dir = format!("docker/{ID_A}");
        let tree = Tree::new(&[&dir]);
        let fake = Arc::new(FakeRuntime::default());
        let r = resolver(&tree, &fake, fast_retry());
        let id = tree.id(&dir);

        let first = r.resolve(id, None).await;
        assert_eq!(first.key.as_str(), "container:aaaaaaaaaaaa");
        assert!(first.is_unresolved());
        assert_eq!(first.container_id.as_deref(), Some(ID_A));
        fake.add(ID_A, "nginx:1.25");
        let cached = r.resolve(id, None).await;
        assert!(
            cached.is_unresolved(),
            "negative cache holds until the retry delay"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);

        tokio::time::sleep(Duration::from_millis(60)).await;
        let resolved = r.resolve(id, None).await;
        assert_eq!(resolved.key.as_str(), "docker.io/library/nginx:1.25");
        assert!(!resolved.is_unresolved());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(60)).await;
        r.resolve(id, None).await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "a resolved container is final"
        );
    }

    #[tokio::test]
    async fn runtime_errors_give_the_provisional_key() {
        let dir = format!("docker/{ID_A}");
        let tree = Tree::new(&[&dir]);
        let fake = Arc::new(FakeRuntime::default());
        fake.add(ID_A, "nginx");
        *lock(&fake.fail) = true;
        let r = resolver(&tree, &fake, fast_retry());
        assert!(r.resolve(tree.id(&dir), None).await.is_unresolved());
        *lock(&fake.fail) = false;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let w = r.resolve(tree.id(&dir), None).await;
        assert_eq!(w.key.as_str(), "docker.io/library/nginx:latest");
    }

    #[tokio::test]
    async fn v1_hint_names_the_container_when_the_path_does_not() {
        let tree = Tree::new(&["system.slice"]);
        let fake = Arc::new(FakeRuntime::default());
        fake.add(ID_B, "quay.io/x/y:2");
        let r = resolver(&tree, &fake, fast_retry());
        let root = tree.id("");
        assert_eq!(
            r.resolve(root, Some(ID_B)).await.key.as_str(),
            "quay.io/x/y:2"
        );
        let scope = format!("docker-{ID_B}.scope");
        assert_eq!(
            r.resolve(root, Some(&scope)).await.key.as_str(),
            "quay.io/x/y:2"
        );
        assert_eq!(
            r.resolve(root, Some("not-a-container")).await.key.as_str(),
            "host"
        );
        assert_eq!(r.resolve(root, None).await.key.as_str(), "host");
        // An id the hierarchy does not have is still attributed by its hint.
        assert_eq!(
            r.resolve(u64::MAX, Some(ID_B)).await.key.as_str(),
            "quay.io/x/y:2"
        );
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "one inspect per container"
        );
    }

    #[tokio::test]
    async fn a_described_containers_addresses_name_its_workload_also_just_after_it_went() {
        let tree = Tree::new(&[&format!("docker/{ID_A}"), &format!("docker/{ID_B}")]);
        let fake = Arc::new(FakeRuntime::default());
        fake.add(ID_A, "shop/backend:2");
        fake.add(ID_B, "shop/backend:2");
        let replica_a: std::net::IpAddr = "172.24.0.3".parse().unwrap();
        let replica_b: std::net::IpAddr = "172.24.0.7".parse().unwrap();
        for (id, ip) in [(ID_A, replica_a), (ID_B, replica_b)] {
            lock(&fake.known).get_mut(id).unwrap().addresses = vec![ip];
        }
        let r = resolver(&tree, &fake, fast_retry());
        assert_eq!(r.workload_at(replica_a), None, "not described yet");
        let a = tree.id(&format!("docker/{ID_A}"));
        let b = tree.id(&format!("docker/{ID_B}"));
        r.resolve(a, None).await;
        r.resolve(b, None).await;
        let backend = "docker.io/shop/backend:2";
        assert_eq!(r.workload_at(replica_a).unwrap().as_str(), backend);
        assert_eq!(r.workload_at(replica_b).unwrap().as_str(), backend);
        r.forget(b);
        assert_eq!(
            r.workload_at(replica_b).unwrap().as_str(),
            backend,
            "a replica removed a moment ago (peers::GONE_GRACE)"
        );
        assert_eq!(r.workload_at(replica_a).unwrap().as_str(), backend);
    }

    #[tokio::test]
    async fn new_cgroups_are_found_by_a_rate_limited_rewalk_and_forgotten() {
        let tree = Tree::new(&[]);
        let fake = Arc::new(FakeRuntime::default());
        fake.add(ID_A, "nginx:1");
        let r = resolver(&tree, &fake, fast_retry());
        let unknown = r.resolve(12_345, None).await;
        assert_eq!(unknown.key.as_str(), "cgroup:12345");
        assert!(
            unknown.is_unresolved(),
            "an unknown cgroup is never merged into host"
        );
        assert_eq!(r.cached_cgroups(), 0, "unknown ids are not cached");
        let dir = format!("docker/{ID_A}");
        fs::create_dir_all(tree.root.join(&dir)).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = tree.id(&dir);
        assert_eq!(
            r.resolve(id, None).await.key.as_str(),
            "docker.io/library/nginx:1"
        );
        assert_eq!((r.cached_cgroups(), r.cached_containers()), (1, 1));
        r.forget(id);
        assert_eq!((r.cached_cgroups(), r.cached_containers()), (0, 0));
        assert_eq!(r.index().lookup(id), None);
    }

    #[tokio::test]
    async fn caches_stay_within_their_bounds() {
        let dirs: Vec<String> = (0..10).map(|i| format!("docker/{i:064x}")).collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let tree = Tree::new(&refs);
        let fake = Arc::new(FakeRuntime::default());
        let config = ResolverConfig {
            max_cgroups: 4,
            max_containers: 3,
            ..fast_retry()
        };
        let r = resolver(&tree, &fake, config);
        for dir in &dirs {
            r.resolve(tree.id(dir), None).await;
            assert!(r.cached_cgroups() <= 4);
            assert!(r.cached_containers() <= 3);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_events_of_one_container_inspect_once() {
        let dir = format!("docker/{ID_A}");
        let tree = Tree::new(&[&dir]);
        let fake = Arc::new(FakeRuntime {
            delay: Duration::from_millis(50),
            ..FakeRuntime::default()
        });
        fake.add(ID_A, "nginx");
        let r = Arc::new(resolver(&tree, &fake, ResolverConfig::default()));
        let id = tree.id(&dir);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move { r.resolve(id, None).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(
                task.await.unwrap().key.as_str(),
                "docker.io/library/nginx:latest"
            );
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    /// A container of a throw-away image made from the host's static busybox; removed (with the
    /// image) on drop, also when the test fails.
    struct DockerFixture {
        image: String,
        container: Option<String>,
        _tmp: tempfile::TempDir,
    }

    impl DockerFixture {
        fn start() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let rootfs = tmp.path().join("rootfs");
            fs::create_dir_all(rootfs.join("bin")).unwrap();
            fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
                .expect("/bin/busybox (apt-get install busybox-static)");
            let tar = tmp.path().join("rootfs.tar");
            run(Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg("."));
            let image = format!("habitd-resolve-test:t{}", std::process::id());
            let mut fixture = Self {
                image: image.clone(),
                container: None,
                _tmp: tmp,
            };
            run(Command::new("docker").arg("import").arg(&tar).arg(&image));
            let id = run(Command::new("docker").args([
                "run",
                "-d",
                "--label",
                "io.kubernetes.pod.name=p1",
                "--label",
                "io.kubernetes.pod.namespace=ns1",
                &image,
                "/bin/busybox",
                "sleep",
                "30",
            ]));
            fixture.container = Some(id);
            fixture
        }

        fn id(&self) -> &str {
            self.container.as_deref().unwrap()
        }

        fn pid(&self) -> u32 {
            let out =
                run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", self.id()]));
            out.parse().unwrap()
        }
    }

    impl Drop for DockerFixture {
        fn drop(&mut self) {
            if let Some(id) = &self.container {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
            let _ = Command::new("docker")
                .args(["rmi", "-f", &self.image])
                .output();
        }
    }

    /// Runs a command, panicking with its stderr if it fails; returns trimmed stdout.
    fn run(command: &mut Command) -> String {
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert!(
            out.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[tokio::test]
    async fn real_docker_container_resolves_to_its_image() {
        assert!(
            Path::new(DEFAULT_DOCKER_SOCKET).exists(),
            "{DEFAULT_DOCKER_SOCKET} is missing: this test needs a real Docker Engine \
             (apt-get install docker.io, then start dockerd)"
        );
        let fixture = DockerFixture::start();
        let expected_key = format!("docker.io/library/{}", fixture.image);

        let docker = DockerRuntime::default();
        let info = docker
            .inspect_container(fixture.id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.id, fixture.id());
        assert_eq!(info.image, fixture.image);
        assert_eq!(info.image_ref.key().as_str(), expected_key);
        assert_eq!(info.k8s_pod.as_deref(), Some("p1"));
        assert_eq!(info.k8s_namespace.as_deref(), Some("ns1"));
        assert_eq!(
            info.labels
                .get("io.kubernetes.pod.name")
                .map(String::as_str),
            Some("p1")
        );
        assert!(
            info.image_id
                .as_deref()
                .is_some_and(|i| i.starts_with("sha256:"))
        );
        assert_eq!(
            info.image_digest, None,
            "an imported image has no repository digest"
        );
        assert_eq!(
            docker.inspect_container(&"0".repeat(64)).await.unwrap(),
            None
        );

        let index = CgroupIndex::discover().unwrap();
        let cgroup_id = index.cgroup_id_of_pid(fixture.pid()).unwrap().unwrap();
        let docker_dir = index.root().join("docker").join(fixture.id());
        if docker_dir.exists() {
            assert_eq!(fs::metadata(&docker_dir).unwrap().ino(), cgroup_id);
        }
        let resolver = WorkloadResolver::new(index, vec![Box::new(docker)]);
        let workload = resolver.resolve(cgroup_id, None).await;
        assert_eq!(workload.key.as_str(), expected_key);
        assert_eq!(
            workload.container.as_ref().unwrap().k8s_pod.as_deref(),
            Some("p1")
        );
        let host = resolver.resolve(index_root_id(), None).await;
        assert!(host.key.is_host(), "{}", host.key);
    }

    /// The id of the root of this host's unified hierarchy.
    fn index_root_id() -> u64 {
        fs::metadata(find_unified_mount().unwrap()).unwrap().ino()
    }
}
