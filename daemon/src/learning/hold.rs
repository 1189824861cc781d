//! Never learn an attack: what a static rule flagged while a workload learns is held, not
//! learned, until it proves habitual or an operator decides (see `commands`).
//!
//! Apart from observation (`score`) because a flagged event takes a different path: its items
//! wait in the workload's [`HeldItems`](habit_profiles::held::HeldItems), persisted with the
//! profile at checkpoints.

use habit_profiles::held::HoldOutcome;
use habit_profiles::observation::Observation;
use habit_profiles::profile::{Provenance, UnixMillis};
use habit_profiles::workload::WorkloadKey;

use super::{Engine, Phase};

/// A static rule that flagged an event, as learning needs it.
#[derive(Debug, Clone, Copy)]
pub struct Flag<'a> {
    pub rule: &'a str,
    /// Tagged `habitd.never_learn`: only an operator can approve what it flagged.
    pub never_learn: bool,
}

impl Engine {
    /// Never learn an attack: the observations of an event a rule flagged while the workload
    /// learns are held, not learned, unless they are known already or prove habitual.
    pub fn hold(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        observations: &[Observation],
        flags: &[Flag<'_>],
        now: UnixMillis,
    ) {
        if observations.is_empty() || flags.is_empty() {
            return;
        }
        self.ensure(key, now);
        let provenance = Provenance::new(self.node.clone(), container_id);
        let interval = now / self.profile_config.interval_ms.max(1);
        let never_learn = flags.iter().any(|f| f.never_learn);
        let criterion = self.config.habit();
        let node = self.node.clone();
        let Some(entry) = self.workloads.get_mut(key) else {
            return;
        };
        let Phase::Learning { profile, .. } = &mut entry.phase else {
            return;
        };
        entry
            .events_since
            .get_or_insert_with(|| super::unix_ms(std::time::SystemTime::now()));
        for obs in observations {
            let item = obs.generalised();
            if profile.item(obs.dimension, &item).is_some() {
                continue; // already part of the profile (it proved habitual before)
            }
            let outcome = entry.held.hold(
                obs.dimension,
                &item,
                flags[0].rule,
                never_learn,
                now,
                interval,
                container_id,
                &node,
                criterion,
            );
            if let HoldOutcome::Habitual(held) = outcome {
                tracing::info!(
                    message = "A flagged item proved habitual: learned.",
                    workload = %key,
                    dimension = obs.dimension.name(),
                    item = %item
                );
                let _ = profile.learn_held(&held, now, &provenance);
            }
            entry.dirty = true;
        }
    }
}
