//! From CRI answers to a [`ContainerInfo`]: which image names the workload (the image as
//! configured, else the runtimes' image-name annotations when it is only an id or digest, else
//! the image's tags), its digest, and the pod's name, namespace, uid and labels.

use std::collections::{BTreeMap, HashMap};

use habit_profiles::workload::ImageRef;
use serde_json::Value;

use super::proto;
use crate::attribution::ResolveError;
use crate::attribution::runtime::{
    ContainerInfo, K8S_CONTAINER_LABEL, K8S_NAMESPACE_LABEL, K8S_POD_LABEL, K8S_POD_UID_LABEL,
};

/// containerd's annotation with the image name a container was created from.
pub const CONTAINERD_IMAGE_ANNOTATION: &str = "io.kubernetes.cri.image-name";
/// CRI-O's annotation with the image name a container was created from.
pub const CRIO_IMAGE_ANNOTATION: &str = "io.kubernetes.cri-o.Image";
/// CRI-O's annotation with the image name as the user wrote it.
const CRIO_IMAGE_NAME_ANNOTATION: &str = "io.kubernetes.cri-o.ImageName";
/// The pause image assumed for a sandbox whose runtime does not say which one it runs.
const DEFAULT_PAUSE_IMAGE: &str = "registry.k8s.io/pause";

/// What the image service says about an image (`ImageStatus`): its tags and digests.
#[derive(Debug, Default, Clone)]
pub struct ImageNames {
    /// `repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `repo@sha256:…` names.
    pub repo_digests: Vec<String>,
}

/// The `info` JSON of a verbose status (containerd and CRI-O put one JSON document under the
/// key `info`); `Value::Null` when absent or not JSON.
pub fn verbose_info(info: &HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// The pod sandbox id a verbose container status names (`sandboxID`).
pub fn sandbox_id_of(info: &Value) -> Option<String> {
    info.get("sandboxID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Whether an image string is an image id rather than a name: `sha256:<hex>` or 64 hex.
fn is_image_id(image: &str) -> bool {
    let bare = image.strip_prefix("sha256:").unwrap_or(image);
    bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Describes a container from its status, its verbose info, its pod sandbox and (when the
/// status names no image) the image service's names for its image.
pub fn describe_container(
    status: &proto::ContainerStatus,
    info: &Value,
    sandbox: Option<&proto::PodSandboxStatus>,
    image_names: &ImageNames,
) -> Result<ContainerInfo, ResolveError> {
    let configured = status
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let image_ref = image_ref_of(status, info, image_names)?;
    let labels: BTreeMap<String, String> = status
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = status
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| labels.get(K8S_CONTAINER_LABEL).cloned())
        .unwrap_or_default();
    let shown_image = if configured.is_empty() || is_image_id(&configured) {
        image_ref.to_string()
    } else {
        configured
    };
    let mut out = ContainerInfo::new(
        status.id.clone(),
        name.clone(),
        shown_image,
        image_ref,
        labels,
    );
    if !name.is_empty() {
        out.k8s_container = Some(name);
    }
    let (image_id, digest) = ids_of(status, image_names, &out.image_ref);
    out.image_id = image_id;
    out.image_digest = out.image_ref.digest.clone().or(digest);
    out.init_pid = info
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p != 0);
    if let Some(sandbox) = sandbox {
        apply_pod(&mut out, sandbox);
    }
    Ok(out)
}

/// Describes a pod's sandbox (pause) container: recognised, never learned.
pub fn describe_sandbox(status: &proto::PodSandboxStatus, info: &Value) -> ContainerInfo {
    let image = info
        .get("image")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_PAUSE_IMAGE);
    let image_ref = ImageRef::parse_normalized(image)
        .or_else(|_| ImageRef::parse_normalized(DEFAULT_PAUSE_IMAGE));
    let labels: BTreeMap<String, String> = status
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = match image_ref {
        Ok(r) => ContainerInfo::new(status.id.clone(), "POD", image, r, labels),
        // The default parses; keep the compiler happy without a panic path.
        Err(_) => unreachable_pause(status),
    };
    out.pod_sandbox = true;
    apply_pod(&mut out, status);
    out
}

/// A sandbox description when even the default pause image does not parse (it does).
fn unreachable_pause(status: &proto::PodSandboxStatus) -> ContainerInfo {
    let r = ImageRef {
        repository: DEFAULT_PAUSE_IMAGE.to_owned(),
        tag: Some("latest".to_owned()),
        digest: None,
    };
    ContainerInfo::new(
        status.id.clone(),
        "POD",
        DEFAULT_PAUSE_IMAGE,
        r,
        BTreeMap::new(),
    )
}

/// Fills the Kubernetes fields from the pod sandbox: metadata first, labels as fallback.
fn apply_pod(out: &mut ContainerInfo, sandbox: &proto::PodSandboxStatus) {
    let label = |k: &str| sandbox.labels.get(k).filter(|v| !v.is_empty()).cloned();
    let meta = sandbox.metadata.as_ref();
    let nonempty = |s: Option<&String>| s.filter(|v| !v.is_empty()).cloned();
    out.k8s_namespace = nonempty(meta.map(|m| &m.namespace))
        .or_else(|| label(K8S_NAMESPACE_LABEL))
        .or(out.k8s_namespace.take());
    out.k8s_pod = nonempty(meta.map(|m| &m.name))
        .or_else(|| label(K8S_POD_LABEL))
        .or(out.k8s_pod.take());
    out.k8s_pod_uid = nonempty(meta.map(|m| &m.uid))
        .or_else(|| label(K8S_POD_UID_LABEL))
        .or(out.k8s_pod_uid.take());
    out.k8s_pod_labels = sandbox
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("io.kubernetes."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.addresses = pod_addresses(sandbox);
}

/// The pod's own IPs (`network.ip` and `additional_ips`); none for a pod in the node's network
/// namespace, whose address is the node's and names no one workload.
pub fn pod_addresses(sandbox: &proto::PodSandboxStatus) -> Vec<std::net::IpAddr> {
    let host_network = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == proto::NamespaceMode::Node as i32);
    let Some(network) = sandbox.network.as_ref().filter(|_| !host_network) else {
        return Vec::new();
    };
    let mut out: Vec<std::net::IpAddr> = std::iter::once(&network.ip)
        .chain(network.additional_ips.iter().map(|p| &p.ip))
        .filter_map(|a| a.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The image reference that keys the workload. Candidates, best first: the image the user
/// specified, the configured image when it is a name, the runtimes' image-name annotations
/// (on the container or in its OCI spec), the image's tags, its digests, the image_ref when
/// it is `repo@digest`. A tagged candidate beats one with a digest only.
fn image_ref_of(
    status: &proto::ContainerStatus,
    info: &Value,
    image_names: &ImageNames,
) -> Result<ImageRef, ResolveError> {
    let spec = status.image.as_ref();
    let spec_annotations = spec.map(|s| &s.annotations);
    let oci_annotations = info.pointer("/runtimeSpec/annotations");
    let annotation = |key: &str| -> Option<String> {
        status
            .annotations
            .get(key)
            .or_else(|| spec_annotations.and_then(|a| a.get(key)))
            .cloned()
            .or_else(|| {
                oci_annotations
                    .and_then(|a| a.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
    };
    let mut candidates: Vec<String> = Vec::new();
    if let Some(spec) = spec {
        candidates.push(spec.user_specified_image.clone());
        candidates.push(spec.image.clone());
    }
    for key in [
        CONTAINERD_IMAGE_ANNOTATION,
        CRIO_IMAGE_NAME_ANNOTATION,
        CRIO_IMAGE_ANNOTATION,
    ] {
        candidates.extend(annotation(key));
    }
    if let Some(image) = info.pointer("/config/image/image").and_then(Value::as_str) {
        candidates.push(image.to_owned());
    }
    candidates.extend(image_names.repo_tags.iter().cloned());
    candidates.extend(image_names.repo_digests.iter().cloned());
    candidates.push(status.image_ref.clone());
    let parsed: Vec<ImageRef> = candidates
        .iter()
        .filter(|c| !c.is_empty() && !is_image_id(c))
        .filter_map(|c| ImageRef::parse_normalized(c).ok())
        .collect();
    if let Some(tagged) = parsed.iter().find(|r| r.tag.is_some()) {
        return Ok(tagged.clone());
    }
    if let Some(first) = parsed.into_iter().next() {
        return Ok(first);
    }
    let image = spec.map(|s| s.image.clone()).unwrap_or_default();
    if is_image_id(&image) || image.is_empty() {
        return Err(ResolveError::UnnamedImage {
            container: status.id.clone(),
            image_id: if image.is_empty() {
                status.image_ref.clone()
            } else {
                image
            },
        });
    }
    ImageRef::parse_normalized(&image).map_err(|source| ResolveError::ImageRef {
        container: status.id.clone(),
        image,
        source,
    })
}

/// `(image id, repository digest)`: the id from `image_id` (CRI ≥ 1.31) or an `image_ref`
/// that is an id; the digest from an `image_ref` of the form `repo@sha256:…`, else the image's
/// digest in the same repository, else its first digest.
fn ids_of(
    status: &proto::ContainerStatus,
    image_names: &ImageNames,
    image_ref: &ImageRef,
) -> (Option<String>, Option<String>) {
    let mut image_id = Some(status.image_id.clone()).filter(|s| !s.is_empty());
    let mut digest = None;
    let image_ref_text = status.image_ref.as_str();
    if let Some((_, d)) = image_ref_text.split_once('@') {
        digest = Some(d.to_owned());
    } else if is_image_id(image_ref_text) {
        let id = if image_ref_text.starts_with("sha256:") {
            image_ref_text.to_owned()
        } else {
            format!("sha256:{image_ref_text}")
        };
        image_id.get_or_insert(id);
    }
    if digest.is_none() {
        let parsed: Vec<ImageRef> = image_names
            .repo_digests
            .iter()
            .filter_map(|d| ImageRef::parse_normalized(d).ok())
            .collect();
        digest = parsed
            .iter()
            .find(|d| d.repository == image_ref.repository)
            .or(parsed.first())
            .and_then(|d| d.digest.clone());
    }
    (image_id, digest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn status(image: &str, image_ref: &str) -> proto::ContainerStatus {
        proto::ContainerStatus {
            id: "c".repeat(64),
            metadata: Some(proto::ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            image_ref: image_ref.into(),
            labels: HashMap::from([(K8S_NAMESPACE_LABEL.into(), "label-ns".into())]),
            ..Default::default()
        }
    }

    fn sandbox() -> proto::PodSandboxStatus {
        proto::PodSandboxStatus {
            id: "s".repeat(64),
            metadata: Some(proto::PodSandboxMetadata {
                name: "web-7d9f".into(),
                uid: "uid-1".into(),
                namespace: "prod".into(),
                attempt: 0,
            }),
            labels: HashMap::from([
                ("app".into(), "web".into()),
                ("io.kubernetes.pod.name".into(), "web-7d9f".into()),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn named_image_with_digest_image_ref_and_pod_fields() {
        let s = status("nginx:1.25", &format!("docker.io/library/nginx@{DIGEST}"));
        let info =
            describe_container(&s, &Value::Null, Some(&sandbox()), &ImageNames::default()).unwrap();
        assert_eq!(
            info.image_ref.key().as_str(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(info.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(info.name, "web");
        assert_eq!(info.k8s_container.as_deref(), Some("web"));
        assert_eq!(info.k8s_namespace.as_deref(), Some("prod"));
        assert_eq!(info.k8s_pod.as_deref(), Some("web-7d9f"));
        assert_eq!(info.k8s_pod_uid.as_deref(), Some("uid-1"));
        assert_eq!(
            info.k8s_pod_labels.get("app").map(String::as_str),
            Some("web")
        );
        assert!(!info.pod_sandbox);
    }

    #[test]
    fn image_id_falls_back_to_the_image_name_annotations() {
        let mut s = status(ID, ID);
        s.annotations
            .insert(CONTAINERD_IMAGE_ANNOTATION.into(), "quay.io/a/b:3".into());
        let info = describe_container(&s, &Value::Null, None, &ImageNames::default()).unwrap();
        assert_eq!(info.image_ref.key().as_str(), "quay.io/a/b:3");
        assert_eq!(info.image_id.as_deref(), Some(ID));
        assert_eq!(info.image, "quay.io/a/b:3");
        assert_eq!(info.k8s_namespace.as_deref(), Some("label-ns"));

        let s = status(ID, ID);
        let oci = serde_json::json!({
            "sandboxID": "abc",
            "pid": 4242,
            "runtimeSpec": {"annotations": {CRIO_IMAGE_ANNOTATION: "registry.local/x:1"}}
        });
        let info = describe_container(&s, &oci, None, &ImageNames::default()).unwrap();
        assert_eq!(info.image_ref.key().as_str(), "registry.local/x:1");
        assert_eq!(info.init_pid, Some(4242));
        assert_eq!(sandbox_id_of(&oci).as_deref(), Some("abc"));
    }

    #[test]
    fn digest_only_image_prefers_a_tag_from_the_image_service() {
        let s = status(&format!("nginx@{DIGEST}"), ID);
        let names = ImageNames {
            repo_tags: vec!["nginx:1.27".into()],
            repo_digests: vec![format!("nginx@{DIGEST}")],
        };
        let info = describe_container(&s, &Value::Null, None, &names).unwrap();
        assert_eq!(
            info.image_ref.key().as_str(),
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(info.image_digest.as_deref(), Some(DIGEST));
        let alone = describe_container(&s, &Value::Null, None, &ImageNames::default()).unwrap();
        assert_eq!(
            alone.image_ref.key().as_str(),
            format!("docker.io/library/nginx@{DIGEST}")
        );
    }

    #[test]
    fn an_image_id_nothing_names_is_an_unnamed_image() {
        let err = describe_container(&status(ID, ID), &Value::Null, None, &ImageNames::default())
            .unwrap_err();
        assert!(matches!(err, ResolveError::UnnamedImage { .. }), "{err}");
    }

    #[test]
    fn sandboxes_are_recognised() {
        let info = describe_sandbox(
            &sandbox(),
            &serde_json::json!({"image": "registry.k8s.io/pause:3.6"}),
        );
        assert!(info.pod_sandbox);
        assert_eq!(info.image_ref.key().as_str(), "registry.k8s.io/pause:3.6");
        assert_eq!(info.k8s_pod.as_deref(), Some("web-7d9f"));
        let bare = describe_sandbox(&sandbox(), &Value::Null);
        assert_eq!(
            bare.image_ref.key().as_str(),
            "registry.k8s.io/pause:latest"
        );
    }

    #[test]
    fn a_pod_has_its_sandbox_ips_unless_it_is_in_the_node_network() {
        let mut pod = sandbox();
        pod.network = Some(proto::PodSandboxNetworkStatus {
            ip: "10.244.1.7".into(),
            additional_ips: vec![proto::PodIp {
                ip: "fd00:10:244::7".into(),
            }],
        });
        let s = status("nginx:1.25", "");
        let info =
            describe_container(&s, &Value::Null, Some(&pod), &ImageNames::default()).unwrap();
        let want: Vec<std::net::IpAddr> = vec![
            "10.244.1.7".parse().unwrap(),
            "fd00:10:244::7".parse().unwrap(),
        ];
        assert_eq!(info.addresses, want);
        pod.linux = Some(proto::LinuxPodSandboxStatus {
            namespaces: Some(proto::Namespace {
                options: Some(proto::NamespaceOption {
                    network: proto::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
            }),
        });
        assert!(pod_addresses(&pod).is_empty());
    }
}
