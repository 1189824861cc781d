//! What the container runtime says about a learning workload's containers — its image's
//! repository digest and id, its pod's namespace and labels — recorded in the profile, so
//! that the frozen baseline's `metadata` names them (`digests`, `image_ids`, `namespace`,
//! `labels`; the labels are the NetworkPolicy's pod selector of `habitctl export netpol`).
//!
//! Apart from observation because it is per container, not per event: each container is
//! recorded once (a set of the ids seen, in memory; the profile's record of them is
//! checkpointed with it, and recording a container again after a restart changes nothing).

use habit_profiles::profile::{ContainerOrigin, UnixMillis};
use habit_profiles::workload::WorkloadKey;

use super::{Engine, Phase};

/// Most container ids remembered per workload as recorded; beyond it, containers are recorded
/// again on each event (harmless, only slower), and the set starts over.
const MAX_DESCRIBED: usize = 4096;

impl Engine {
    /// Records what the runtime says about container `id` of `key`, if the workload is
    /// learning and the container was not recorded yet.
    pub fn note_container(
        &mut self,
        key: &WorkloadKey,
        id: &str,
        origin: &ContainerOrigin<'_>,
        now: UnixMillis,
    ) {
        self.ensure(key, now);
        let Some(entry) = self.workloads.get_mut(key) else {
            return;
        };
        let Phase::Learning { profile, .. } = &mut entry.phase else {
            return;
        };
        if entry.described.contains(id) {
            return;
        }
        if entry.described.len() >= MAX_DESCRIBED {
            entry.described.clear();
        }
        entry.described.insert(id.to_owned());
        if profile.note_container(origin) {
            entry.dirty = true;
            tracing::debug!(
                message = "Container description recorded for the baseline.",
                workload = %key,
                container = id
            );
        }
    }
}
