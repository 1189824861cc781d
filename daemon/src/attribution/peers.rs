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
//! address. Entries leave with their container ([`super::WorkloadResolver::forget_container`]);
//! an address handed to a new container is re-pointed when that container is described.

use std::collections::HashMap;
use std::net::IpAddr;

use habit_profiles::workload::WorkloadKey;

/// Most addresses remembered (far more containers than a node runs); over it the index is
/// cleared and refills as containers are described again.
const MAX_ADDRESSES: usize = 65_536;

/// Containers at one address: usually one; a pod's containers share their sandbox's IPs.
#[derive(Debug, Clone, Default)]
struct AtAddress {
    /// (container id, workload key) of each container with this address.
    containers: Vec<(String, WorkloadKey)>,
}

impl AtAddress {
    /// The one workload of every container here, or `None` when they disagree.
    fn workload(&self) -> Option<&WorkloadKey> {
        let (_, first) = self.containers.first()?;
        self.containers
            .iter()
            .all(|(_, k)| k == first)
            .then_some(first)
    }
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

    /// Drops a container's addresses (it is gone).
    pub fn remove(&mut self, container: &str) {
        self.by_address.retain(|_, at| {
            at.containers.retain(|(id, _)| id != container);
            !at.containers.is_empty()
        });
    }

    /// The workload at `address`, if exactly one workload's containers have it.
    pub fn workload_at(&self, address: IpAddr) -> Option<&WorkloadKey> {
        self.by_address.get(&address).and_then(AtAddress::workload)
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
        assert_eq!(peers.workload_at(ip("172.24.0.3")), Some(&backend));
        assert_eq!(peers.workload_at(ip("172.24.0.7")), Some(&backend));
        assert_eq!(peers.workload_at(ip("172.24.0.9")), None);
        peers.remove("b");
        assert_eq!(peers.workload_at(ip("172.24.0.7")), None);
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn an_address_shared_by_two_workloads_is_ambiguous() {
        let mut peers = PeerIndex::default();
        peers.insert("app", &key("shop/backend:2"), &[ip("10.244.1.7")]);
        peers.insert("sidecar", &key("envoy:1.30"), &[ip("10.244.1.7")]);
        assert_eq!(peers.workload_at(ip("10.244.1.7")), None);
        peers.remove("sidecar");
        assert_eq!(
            peers.workload_at(ip("10.244.1.7")),
            Some(&key("shop/backend:2"))
        );
    }

    #[test]
    fn an_address_reused_by_a_new_container_names_the_new_workload_once_the_old_is_gone() {
        let mut peers = PeerIndex::default();
        peers.insert("old", &key("shop/backend:2"), &[ip("172.24.0.3")]);
        peers.remove("old");
        peers.insert("new", &key("redis:7"), &[ip("172.24.0.3")]);
        assert_eq!(peers.workload_at(ip("172.24.0.3")), Some(&key("redis:7")));
    }
}
