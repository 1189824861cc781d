//! Enforcement artifacts made from a baseline: an OCI/Docker seccomp profile and a Kubernetes
//! NetworkPolicy. Both are plain JSON values (a NetworkPolicy in JSON is valid YAML too), so
//! this crate needs no YAML or Kubernetes types.
//!
//! # Seccomp ([`seccomp_profile`])
//!
//! `defaultAction` is `SCMP_ACT_ERRNO` with `defaultErrnoRet` 1 (`EPERM`): a syscall the
//! workload never made in learning fails with "Operation not permitted" instead of killing
//! the process, so a missed rare path degrades rather than crashes. One rule allows every
//! learned syscall by name (the `syscall` dimension; names the daemon could not resolve,
//! `sys_<nr>`, cannot be named in a profile and are listed in the rule's comment instead).
//!
//! **Safety margin** ([`RUNTIME_MARGIN`], a second, separately commented rule): the syscalls
//! the container runtime itself makes *inside* the filter. runc installs the filter before it
//! drops capabilities and changes user (unless `no-new-privileges` is set) and then `execve`s
//! the workload; its Go runtime needs threads, signals and memory until then, and `docker
//! exec` goes through the same path. Those calls are not the workload's behaviour and may not
//! have been attributed to it while learning (they happen while the process is still the
//! runtime's), so they are always allowed. `clone3` is answered with `ENOSYS` when it was not
//! learned, as Docker's default profile does: glibc then falls back to `clone`, which a
//! workload that starts threads or processes has learned. `--no-margin` in `habitctl`
//! leaves the margin out (for workloads started by another runtime, review first).
//!
//! # NetworkPolicy ([`network_policy`])
//!
//! `networking.k8s.io/v1`, `policyTypes: [Ingress, Egress]`, so everything not learned is
//! denied both ways:
//!
//! * **ingress**: one rule per learned listening port (`listen`), from the learned peers of
//!   that port (`inbound`: `/32` or `/128`, or the collapsed `/24` or `/64`); a port that was
//!   listened on but never reached by a learned peer gets no rule (nothing to allow). With
//!   [`NetpolOptions::any_peer`] every listening port is open to any peer (pod IPs change when
//!   pods are rescheduled: learned peer addresses are exact only for stable peers).
//! * **egress**: one rule per learned destination (`outbound`), as an `ipBlock` and a port. A
//!   destination learned as another container's workload (`docker.io/shop/backend:2
//!   8000/tcp`: habitd names a container peer by its image, whichever replica answered) cannot
//!   be an `ipBlock`, and a NetworkPolicy selects pods by label, not by image: its port is
//!   allowed to any destination and the workloads are listed in the
//!   `habitd.io/egress-workloads` annotation, for the reviewer to turn into a `podSelector`.
//! * Loopback peers and destinations are left out (NetworkPolicy does not filter loopback),
//!   and so are protocols other than TCP, UDP and SCTP.
//! * **podSelector**: `matchLabels` from the labels every learned container's pod carried
//!   ([`BaselineMetadata::labels`](crate::baseline::BaselineMetadata), recorded by habitd
//!   from the CRI runtime's pod sandbox while learning), without the per-pod ones
//!   (`pod-template-hash`, `controller-revision-hash`, `io.kubernetes.*`), or those given
//!   explicitly ([`NetpolOptions::selector`], `--selector`, which overrides the learned ones).
//!   With none, export fails with [`ExportError::NoSelector`]: an empty selector would select
//!   every pod of the namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::baseline::Baseline;
use crate::observation::Dimension;

/// The errno of a syscall that is not allowed (`EPERM`).
pub const SECCOMP_ERRNO: u32 = 1;

/// Syscalls the container runtime (runc) makes inside the filter before and while it starts
/// the workload, allowed whether learned or not (see the module documentation).
pub const RUNTIME_MARGIN: &[&str] = &[
    // Starting the workload.
    "execve",
    "execveat",
    // Dropping privileges after the filter is installed (no-new-privileges off).
    "capget",
    "capset",
    "prctl",
    "setgroups",
    "setresuid",
    "setresgid",
    "setuid",
    "setgid",
    "chdir",
    "fchdir",
    "getcwd",
    // The exec FIFO handshake and the Go runtime of `runc init`.
    "openat",
    "read",
    "write",
    "close",
    "fcntl",
    "fstat",
    "newfstatat",
    "futex",
    "nanosleep",
    "sched_yield",
    "getpid",
    "gettid",
    "getppid",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "brk",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_create1",
    "pipe2",
    "clock_gettime",
    "exit",
    "exit_group",
];

/// Options of [`seccomp_profile`].
#[derive(Debug, Clone, Copy)]
pub struct SeccompOptions {
    /// Add the [`RUNTIME_MARGIN`] rule.
    pub runtime_margin: bool,
}

impl Default for SeccompOptions {
    fn default() -> Self {
        Self {
            runtime_margin: true,
        }
    }
}

/// Why an artifact cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The baseline learned no syscall: the profile would block everything.
    #[error(
        "the baseline of {0} has no learned syscalls: a seccomp profile would block everything"
    )]
    NoSyscalls(String),
    /// No pod selector: neither learned labels nor given ones.
    #[error(
        "the baseline of {0} has no learned pod labels to select its pods by (it was not \
         learned from Kubernetes pods, or they had only per-pod labels in common): pass the pod \
         selector with --selector KEY=VALUE"
    )]
    NoSelector(String),
}

fn is_nameable(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("sys_")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The OCI/Docker seccomp profile of a baseline (see the module documentation).
pub fn seccomp_profile(baseline: &Baseline, options: SeccompOptions) -> Result<Value, ExportError> {
    let learned: BTreeSet<&str> = baseline
        .items(Dimension::Syscall)
        .map(|(name, _)| name)
        .collect();
    let (names, unnamed): (Vec<&str>, Vec<&str>) =
        learned.iter().copied().partition(|n| is_nameable(n));
    if names.is_empty() {
        return Err(ExportError::NoSyscalls(baseline.workload.to_string()));
    }
    let mut comment = format!(
        "learned by habitd from {} ({} syscalls)",
        baseline.workload,
        names.len()
    );
    if !unnamed.is_empty() {
        comment.push_str(&format!(
            "; not nameable, so not allowed: {}",
            unnamed.join(", ")
        ));
    }
    let mut syscalls = vec![json!({
        "names": names,
        "action": "SCMP_ACT_ALLOW",
        "comment": comment,
    })];
    if options.runtime_margin {
        let margin: Vec<&str> = RUNTIME_MARGIN
            .iter()
            .copied()
            .filter(|n| !learned.contains(n))
            .collect();
        if !margin.is_empty() {
            syscalls.push(json!({
                "names": margin,
                "action": "SCMP_ACT_ALLOW",
                "comment": "safety margin: syscalls the container runtime (runc) makes inside \
                            the filter to start the workload; not learned behaviour",
            }));
        }
        if !learned.contains("clone3") {
            syscalls.push(json!({
                "names": ["clone3"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 38,
                "comment": "ENOSYS, as Docker's default profile: libc falls back to clone",
            }));
        }
    }
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": SECCOMP_ERRNO,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }))
}

/// Options of [`network_policy`].
#[derive(Debug, Clone, Default)]
pub struct NetpolOptions {
    /// The policy's name (default: `habitd-` and the image's last path segment).
    pub name: Option<String>,
    /// Its namespace (default: the learned one, if any).
    pub namespace: Option<String>,
    /// The pod selector's labels (default: the learned ones).
    pub selector: BTreeMap<String, String>,
    /// Open every learned listening port to any peer instead of the learned peers only.
    pub any_peer: bool,
}

/// Labels that differ between pods of one workload, never part of a selector.
fn is_per_pod_label(key: &str) -> bool {
    key == "pod-template-hash"
        || key == "controller-revision-hash"
        || key == "statefulset.kubernetes.io/pod-name"
        || key.starts_with("io.kubernetes.")
        || key.starts_with("io.cri-containerd.")
}

/// `port/proto` → (port, Kubernetes protocol name), for TCP, UDP and SCTP.
fn port_proto(text: &str) -> Option<(u16, &'static str)> {
    let (port, proto) = text.split_once('/')?;
    let proto = match proto {
        "tcp" => "TCP",
        "udp" => "UDP",
        "sctp" => "SCTP",
        _ => return None,
    };
    Some((port.parse().ok()?, proto))
}

/// An address or a collapsed network → a CIDR; `None` for loopback.
fn cidr(address: &str) -> Option<String> {
    let (ip, prefix) = match address.split_once('/') {
        Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?)),
        None => (address.parse::<IpAddr>().ok()?, None),
    };
    if ip.is_loopback() {
        return None;
    }
    let full = if ip.is_ipv4() { 32 } else { 128 };
    Some(format!("{ip}/{}", prefix.unwrap_or(full)))
}

/// Whether an outbound item's destination is a peer workload's key (an image reference),
/// not an address or network.
fn is_workload_key(destination: &str) -> bool {
    let host = destination.split_once('/').map_or(destination, |(h, _)| h);
    host.parse::<IpAddr>().is_err()
}

/// A DNS-1123 name from the image repository's last segment.
fn default_name(baseline: &Baseline) -> String {
    let key = baseline.workload.as_str();
    let key = key.split('@').next().unwrap_or(key);
    let repository = match key.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => key,
    };
    let last = repository.rsplit('/').next().unwrap_or(repository);
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        name = "workload".to_owned();
    }
    let mut name = format!("habitd-{name}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// The Kubernetes NetworkPolicy of a baseline (see the module documentation).
pub fn network_policy(baseline: &Baseline, options: &NetpolOptions) -> Result<Value, ExportError> {
    let selector: BTreeMap<String, String> = if options.selector.is_empty() {
        baseline
            .metadata
            .labels
            .iter()
            .filter(|(k, _)| !is_per_pod_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    } else {
        options.selector.clone()
    };
    if selector.is_empty() {
        return Err(ExportError::NoSelector(baseline.workload.to_string()));
    }

    // Ingress: learned peers per listening port.
    let mut peers: BTreeMap<(u16, &str), BTreeSet<String>> = BTreeMap::new();
    for (item, _) in baseline.items(Dimension::Inbound) {
        let Some((peer, local)) = item.split_once(" -> ") else {
            continue;
        };
        let address = peer.split(' ').next().unwrap_or(peer);
        if let (Some(port), Some(block)) = (port_proto(local), cidr(address)) {
            peers.entry(port).or_default().insert(block);
        }
    }
    let mut ingress = Vec::new();
    for (item, _) in baseline.items(Dimension::Listen) {
        let Some(port) = port_proto(item) else {
            continue;
        };
        let ports = json!([{ "port": port.0, "protocol": port.1 }]);
        if options.any_peer {
            ingress.push(json!({ "ports": ports }));
        } else if let Some(blocks) = peers.get(&port) {
            let from: Vec<Value> = blocks
                .iter()
                .map(|b| json!({ "ipBlock": { "cidr": b } }))
                .collect();
            ingress.push(json!({ "from": from, "ports": ports }));
        }
    }

    // Egress: learned destinations, grouped by port.
    let mut destinations: BTreeMap<(u16, &str), BTreeSet<String>> = BTreeMap::new();
    // Ports learned towards a peer workload (any destination), and those workloads.
    let mut workload_ports: BTreeSet<(u16, &str)> = BTreeSet::new();
    let mut workloads: BTreeSet<String> = BTreeSet::new();
    for (item, _) in baseline.items(Dimension::Outbound) {
        let Some((address, port)) = item.split_once(' ') else {
            continue;
        };
        let Some(port_proto) = port_proto(port) else {
            continue;
        };
        if let Some(block) = cidr(address) {
            destinations.entry(port_proto).or_default().insert(block);
        } else if is_workload_key(address) {
            workload_ports.insert(port_proto);
            workloads.insert(item.to_owned());
        }
    }
    let mut egress: Vec<Value> = destinations
        .iter()
        .filter(|(port, _)| !workload_ports.contains(port))
        .map(|((port, proto), blocks)| {
            let to: Vec<Value> = blocks
                .iter()
                .map(|b| json!({ "ipBlock": { "cidr": b } }))
                .collect();
            json!({ "to": to, "ports": [{ "port": port, "protocol": proto }] })
        })
        .collect();
    egress.extend(
        workload_ports
            .iter()
            .map(|(port, proto)| json!({ "ports": [{ "port": port, "protocol": proto }] })),
    );

    let mut metadata = json!({
        "name": options.name.clone().unwrap_or_else(|| default_name(baseline)),
        "annotations": {
            "habitd.io/workload": baseline.workload.as_str(),
            "habitd.io/generated-from": "habitd baseline (learned listening ports, inbound peers, egress destinations)",
        },
    });
    if !workloads.is_empty() {
        metadata["annotations"]["habitd.io/egress-workloads"] =
            json!(workloads.into_iter().collect::<Vec<_>>().join(", "));
    }
    if let Some(namespace) = options
        .namespace
        .clone()
        .or_else(|| baseline.metadata.namespace.clone())
    {
        metadata["namespace"] = json!(namespace);
    }
    Ok(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": { "matchLabels": selector },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::observation::{Observation, Proto};
    use crate::profile::{Profile, ProfileConfig, Provenance};
    use crate::workload::WorkloadKey;

    fn baseline() -> Baseline {
        let mut p = Profile::new(
            WorkloadKey::from_raw("docker.io/library/nginx:1.25"),
            "n",
            0,
            ProfileConfig::default(),
        );
        let here = Provenance::new("n", Some("c1"));
        let observations = [
            Observation::syscall("read"),
            Observation::syscall("accept4"),
            Observation::syscall("sys_999"),
            Observation::listen(8080, Proto::Tcp),
            Observation::listen(9090, Proto::Tcp),
            Observation::inbound("10.0.0.5".parse().unwrap(), 43122, 8080, Proto::Tcp),
            Observation::inbound("127.0.0.1".parse().unwrap(), 43122, 8080, Proto::Tcp),
            Observation::outbound("10.1.2.3".parse().unwrap(), 5432, Proto::Tcp),
            Observation::outbound("10.1.2.4".parse().unwrap(), 5432, Proto::Tcp),
            Observation::outbound("10.96.0.10".parse().unwrap(), 53, Proto::Udp),
            Observation::outbound("::1".parse().unwrap(), 53, Proto::Udp),
        ];
        for o in &observations {
            let _ = p.observe(o, 0, &here);
        }
        let mut b = Baseline::freeze(&p, 1, false);
        b.metadata.labels = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("pod-template-hash".to_owned(), "abc".to_owned()),
        ]);
        b.metadata.namespace = Some("shop".to_owned());
        b
    }

    #[test]
    fn seccomp_allows_learned_names_and_the_margin() {
        let p = seccomp_profile(&baseline(), SeccompOptions::default()).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(p["syscalls"][0]["names"], json!(["accept4", "read"]));
        assert!(
            p["syscalls"][0]["comment"]
                .as_str()
                .unwrap()
                .contains("sys_999")
        );
        let margin = p["syscalls"][1]["names"].as_array().unwrap();
        assert!(margin.contains(&json!("execve")));
        assert!(!margin.contains(&json!("read")), "learned is not repeated");
        assert_eq!(p["syscalls"][2]["names"], json!(["clone3"]));
        let bare = seccomp_profile(
            &baseline(),
            SeccompOptions {
                runtime_margin: false,
            },
        )
        .unwrap();
        assert_eq!(bare["syscalls"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn netpol_allows_the_port_of_a_peer_workload_and_names_it() {
        let mut b = baseline();
        let mut p = Profile::new(b.workload.clone(), "n", 0, ProfileConfig::default());
        let here = Provenance::new("n", Some("c1"));
        for o in [
            Observation::outbound("10.1.2.3".parse().unwrap(), 5432, Proto::Tcp),
            Observation::outbound_workload("docker.io/shop/backend:2", 8000, Proto::Tcp),
        ] {
            let _ = p.observe(&o, 0, &here);
        }
        let labels = b.metadata.labels.clone();
        b = Baseline::freeze(&p, 1, false);
        b.metadata.labels = labels;
        let policy = network_policy(&b, &NetpolOptions::default()).unwrap();
        assert_eq!(
            policy["spec"]["egress"],
            json!([
                { "to": [{ "ipBlock": { "cidr": "10.1.2.3/32" } }],
                  "ports": [{ "port": 5432, "protocol": "TCP" }] },
                { "ports": [{ "port": 8000, "protocol": "TCP" }] },
            ])
        );
        assert_eq!(
            policy["metadata"]["annotations"]["habitd.io/egress-workloads"],
            "docker.io/shop/backend:2 8000/tcp"
        );
    }

    #[test]
    fn netpol_from_learned_network() {
        let p = network_policy(&baseline(), &NetpolOptions::default()).unwrap();
        assert_eq!(p["metadata"]["name"], "habitd-nginx");
        assert_eq!(p["metadata"]["namespace"], "shop");
        assert_eq!(
            p["spec"]["podSelector"]["matchLabels"],
            json!({"app": "web"})
        );
        assert_eq!(
            p["spec"]["ingress"],
            json!([{ "from": [{ "ipBlock": { "cidr": "10.0.0.5/32" } }],
                     "ports": [{ "port": 8080, "protocol": "TCP" }] }])
        );
        assert_eq!(
            p["spec"]["egress"],
            json!([
                { "to": [{ "ipBlock": { "cidr": "10.96.0.10/32" } }],
                  "ports": [{ "port": 53, "protocol": "UDP" }] },
                { "to": [{ "ipBlock": { "cidr": "10.1.2.3/32" } }, { "ipBlock": { "cidr": "10.1.2.4/32" } }],
                  "ports": [{ "port": 5432, "protocol": "TCP" }] },
            ])
        );
        let open = network_policy(
            &baseline(),
            &NetpolOptions {
                any_peer: true,
                ..NetpolOptions::default()
            },
        )
        .unwrap();
        assert_eq!(open["spec"]["ingress"].as_array().unwrap().len(), 2);
        let mut unlabelled = baseline();
        unlabelled.metadata.labels.clear();
        assert!(matches!(
            network_policy(&unlabelled, &NetpolOptions::default()),
            Err(ExportError::NoSelector(_))
        ));
    }

    #[test]
    fn default_names_are_dns_labels() {
        let mut b = baseline();
        b.workload = WorkloadKey::from_raw("registry:5000/team/My_App@sha256:abc");
        assert_eq!(default_name(&b), "habitd-my-app");
        b.workload = WorkloadKey::from_raw("host:nginx.service");
        assert_eq!(default_name(&b), "habitd-host");
    }
}
