//! Which workload a container's address belongs to, so that a connection to another container
//! is learned as "connects to workload W on port P" rather than to the address of one of its
//! replicas.
//!
//! Why: a web tier that talks to a backend learns the backend's address. When the backend
//! scales from 1 to 3 replicas, or restarts with a new address, the new replicas' addresses
//! were new outbound destinations (decisive for the anomaly score): a benign scale-up alerted
//! on every client of the backend. A new replica of a peer the workload already talks to is
//! not a new peer; a new workload (or an address no container has) still is.
//!
//! The index is filled from the runtime's descriptions ([`super::ContainerInfo::addresses`]:
//! Docker's networks, the CRI pod sandbox's IPs), so a container is known as a peer once
//! habitd has attributed one event of it (a replica's own start does that). An address shared
//! by containers of two different workloads (a pod with a sidecar) is ambiguous and stays an
//! address. An address handed to a new container is re-pointed when that container is
//! described.
//!
//! A removed container's address still names its workload for [`GONE_GRACE`] while no other
//! container has it: clients hold a backend's addresses in DNS caches and connection pools
//! after a scale-down, and a last request to a replica that just went away is not a new
//! destination (issue 11's evaluation: nginx's last connect to a backend replica as it was
//! removed was an "anomaly network" alert).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use habit_profiles::workload::WorkloadKey;

/// Most addresses remembered (far more containers than a node runs); over it the index is
/// cleared and refills as containers are described again.
const MAX_ADDRESSES: usize = 65_536;

/// How long a removed container's address still names its workload: clients re-resolve a
/// backend's name after seconds to minutes (nginx's `resolver valid=`, connection pools), so
/// a few minutes covers a scale-down's drain. An address a new container takes is re-pointed
/// at once, whatever the grace.
pub const GONE_GRACE: Duration = Duration::from_secs(300);

/// Containers at one address: usually one; a pod's containers share their sandbox's IPs.
#[derive(Debug, Clone, Default)]
struct AtAddress {
    /// (container id, workload key) of each container with this address.
    containers: Vec<(String, WorkloadKey)>,
    /// The workloads of containers removed from here, with when: answered while no container
    /// has the address, for [`GONE_GRACE`].
    gone: Vec<(WorkloadKey, Instant)>,
}

impl AtAddress {
    /// The one workload of every container here, or `None` when they disagree; with none
    /// here, the one workload of those that went in the last [`GONE_GRACE`].
    fn workload(&self, now: Instant) -> Option<&WorkloadKey> {
        if !self.containers.is_empty() {
            return agreed(self.containers.iter().map(|(_, k)| k));
        }
        agreed(
            self.gone
                .iter()
                .filter(|(_, at)| now.duration_since(*at) < GONE_GRACE)
                .map(|(k, _)| k),
        )
    }
}

/// The one key all of `keys` are, `None` if they differ or there is none.
fn agreed<'a>(mut keys: impl Iterator<Item = &'a WorkloadKey>) -> Option<&'a WorkloadKey> {
    let first = keys.next()?;
    keys.all(|k| k == first).then_some(first)
}

/// Address → the workload of the containers that have it.
#[derive(Debug, Default)]
pub struct PeerIndex {
    by_address: HashMap<IpAddr, AtAddress>,
}

impl PeerIndex {
    /// Records that `container` of workload `key` has `addresses` (again: described anew, its
    /// entries are replaced). An address still held by a container not yet forgotten with
    /// another workload is ambiguous until that one is removed.
    pub fn insert(&mut self, container: &str, key: &WorkloadKey, addresses: &[IpAddr]) {
        if addresses.is_empty() {
            return;
        }
        if self.by_address.len() + addresses.len() > MAX_ADDRESSES {
            self.by_address.clear();
        }
        for address in addresses {
            let at = self.by_address.entry(*address).or_default();
            at.containers.retain(|(id, _)| id != container);
            at.containers.push((container.to_owned(), key.clone()));
        }
    }

    /// A container is gone at `now`: its addresses name its workload for [`GONE_GRACE`] more,
    /// unless another container has them. Addresses whose grace ended are dropped.
    pub fn remove(&mut self, container: &str, now: Instant) {
        self.by_address.retain(|_, at| {
            at.gone.retain(|(_, t)| now.duration_since(*t) < GONE_GRACE);
            if let Some(i) = at.containers.iter().position(|(id, _)| id == container) {
                let (_, key) = at.containers.remove(i);
                at.gone.push((key, now));
            }
            !(at.containers.is_empty() && at.gone.is_empty())
        });
    }

    /// The workload at `address`, if exactly one workload's containers have it (or, with no
    /// container there, had it in the last [`GONE_GRACE`]).
    pub fn workload_at(&self, address: IpAddr, now: Instant) -> Option<&WorkloadKey> {
        self.by_address
            .get(&address)
            .and_then(|at| at.workload(now))
    }

    /// How many addresses are known (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_profiles::workload::ImageRef;

    fn key(image: &str) -> WorkloadKey {
        WorkloadKey::image(&ImageRef::parse_normalized(image).unwrap())
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn replicas_of_one_workload_name_it() {
        let mut peers = PeerIndex::default();
        let backend = key("shop/backend:2");
        peers.insert("a", &backend, &[ip("172.24.0.3")]);
        peers.insert("b", &backend, &[ip("172.24.0.7")]);
        let t = Instant::now();
        assert_eq!(peers.workload_at(ip("172.24.0.3"), t), Some(&backend));
        assert_eq!(peers.workload_at(ip("172.24.0.7"), t), Some(&backend));
        assert_eq!(peers.workload_at(ip("172.24.0.9"), t), None);
        let now = Instant::now();
        peers.remove("b", now);
        assert_eq!(
            peers.workload_at(ip("172.24.0.7"), now + Duration::from_secs(2)),
            Some(&backend),
            "a replica that just went is still the backend"
        );
        assert_eq!(peers.workload_at(ip("172.24.0.7"), now + GONE_GRACE), None);
        peers.remove("nothing", now + GONE_GRACE);
        assert_eq!(peers.len(), 1, "an address whose grace ended is dropped");
    }

    #[test]
    fn an_address_shared_by_two_workloads_is_ambiguous() {
        let mut peers = PeerIndex::default();
        peers.insert("app", &key("shop/backend:2"), &[ip("10.244.1.7")]);
        peers.insert("sidecar", &key("envoy:1.30"), &[ip("10.244.1.7")]);
        let t = Instant::now();
        assert_eq!(peers.workload_at(ip("10.244.1.7"), t), None);
        peers.remove("sidecar", t);
        assert_eq!(
            peers.workload_at(ip("10.244.1.7"), t),
            Some(&key("shop/backend:2")),
            "the container still there answers, not the one gone"
        );
        peers.remove("app", t);
        assert_eq!(
            peers.workload_at(ip("10.244.1.7"), t),
            None,
            "a pod gone whole: its two workloads disagree"
        );
    }

    #[test]
    fn an_address_reused_by_a_new_container_names_the_new_workload_once_the_old_is_gone() {
        let mut peers = PeerIndex::default();
        peers.insert("old", &key("shop/backend:2"), &[ip("172.24.0.3")]);
        let t = Instant::now();
        peers.remove("old", t);
        peers.insert("new", &key("redis:7"), &[ip("172.24.0.3")]);
        assert_eq!(
            peers.workload_at(ip("172.24.0.3"), t),
            Some(&key("redis:7")),
            "within the old one's grace, the new container answers"
        );
    }
}
