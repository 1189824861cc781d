//! What a container runtime tells about a container, behind a trait that assumes no particular
//! runtime: Docker (Engine API) and CRI (containerd, CRI-O) implement it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use habit_profiles::workload::ImageRef;
use serde::Serialize;

use super::ResolveError;

/// Label the kubelet puts on every container with its pod's namespace.
pub const K8S_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label the kubelet puts on every container with its pod's name.
pub const K8S_POD_LABEL: &str = "io.kubernetes.pod.name";
/// Label the kubelet puts on every container with the container's name in the pod spec.
pub const K8S_CONTAINER_LABEL: &str = "io.kubernetes.container.name";
/// Label the kubelet puts on every container and pod sandbox with its pod's uid.
pub const K8S_POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The future [`ContainerRuntime::inspect`] returns: boxed so the trait stays object-safe
/// (`Box<dyn ContainerRuntime>`) without an `async_trait` dependency.
pub type InspectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ContainerInfo>, ResolveError>> + Send + 'a>>;

/// A source of container descriptions (Docker Engine, containerd, CRI …).
pub trait ContainerRuntime: Send + Sync {
    /// A short name for logs and metrics, e.g. `docker`.
    fn name(&self) -> &str;

    /// Describes the container with this full id. `Ok(None)` means the runtime does not know
    /// it (another runtime's container, or one not yet registered); `Err` means the runtime
    /// could not be asked or answered nonsense.
    fn inspect<'a>(&'a self, id: &'a str) -> InspectFuture<'a>;
}

/// A container as its runtime describes it; the fields alerts report (`container.*`, `k8s.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// The full container id (64 hex).
    pub id: String,
    /// The runtime's name for it, without Docker's leading `/`.
    pub name: String,
    /// The image as configured when the container was created (`nginx:1.25`, maybe an id).
    pub image: String,
    /// The runtime's content-addressed image id (`sha256:…`), if it reports one.
    pub image_id: Option<String>,
    /// The image reference, normalised like Docker; gives the workload key.
    pub image_ref: ImageRef,
    /// The repository digest of the image (`sha256:…`), recorded beside the key.
    pub image_digest: Option<String>,
    /// Kubernetes namespace, from the `io.kubernetes.pod.namespace` label.
    pub k8s_namespace: Option<String>,
    /// Kubernetes pod name, from the `io.kubernetes.pod.name` label.
    pub k8s_pod: Option<String>,
    /// Container name in the pod spec, from the `io.kubernetes.container.name` label.
    pub k8s_container: Option<String>,
    /// Kubernetes pod uid, from the pod sandbox or the `io.kubernetes.pod.uid` label.
    pub k8s_pod_uid: Option<String>,
    /// The pod's own labels (`app=web`…), without the kubelet's `io.kubernetes.*` ones.
    pub k8s_pod_labels: BTreeMap<String, String>,
    /// All labels of the container.
    pub labels: BTreeMap<String, String>,
    /// This is a pod's sandbox ("pause") container: infrastructure, never a workload.
    pub pod_sandbox: bool,
    /// The host pid of the container's init process (its entrypoint), if the runtime said.
    pub init_pid: Option<u32>,
    /// The container's own network addresses (Docker's networks, the pod sandbox's IPs);
    /// empty for a container in the host's network namespace. Other workloads' connections to
    /// these addresses name this container's workload instead of the address
    /// ([`super::peers`]).
    pub addresses: Vec<std::net::IpAddr>,
}

impl ContainerInfo {
    /// A description whose Kubernetes fields are read from the labels and whose digest is the
    /// one the reference pins, if any; runtimes fill `image_id` and a better digest after.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        image: impl Into<String>,
        image_ref: ImageRef,
        labels: BTreeMap<String, String>,
    ) -> Self {
        let label = |key: &str| labels.get(key).cloned();
        Self {
            id: id.into(),
            name: name.into(),
            image: image.into(),
            image_id: None,
            image_digest: image_ref.digest.clone(),
            image_ref,
            k8s_namespace: label(K8S_NAMESPACE_LABEL),
            k8s_pod: label(K8S_POD_LABEL),
            k8s_container: label(K8S_CONTAINER_LABEL),
            k8s_pod_uid: label(K8S_POD_UID_LABEL),
            k8s_pod_labels: BTreeMap::new(),
            labels,
            pod_sandbox: false,
            init_pid: None,
            addresses: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_fields_come_from_labels() {
        let labels = BTreeMap::from([
            (K8S_NAMESPACE_LABEL.to_owned(), "prod".to_owned()),
            (K8S_POD_LABEL.to_owned(), "web-1".to_owned()),
            (K8S_CONTAINER_LABEL.to_owned(), "nginx".to_owned()),
            ("other".to_owned(), "x".to_owned()),
        ]);
        let image_ref = ImageRef::parse_normalized("nginx:1.25").unwrap();
        let info = ContainerInfo::new("abc", "web", "nginx:1.25", image_ref, labels);
        assert_eq!(info.k8s_namespace.as_deref(), Some("prod"));
        assert_eq!(info.k8s_pod.as_deref(), Some("web-1"));
        assert_eq!(info.k8s_container.as_deref(), Some("nginx"));
        assert_eq!(info.labels.len(), 4);
        assert_eq!(info.image_digest, None);
    }

    #[test]
    fn no_labels_no_kubernetes() {
        let image_ref = ImageRef::parse_normalized("busybox").unwrap();
        let info = ContainerInfo::new("abc", "x", "busybox", image_ref, BTreeMap::new());
        assert_eq!(info.k8s_namespace, None);
        assert_eq!(info.k8s_pod, None);
        assert_eq!(info.k8s_container, None);
    }
}
