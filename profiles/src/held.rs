//! Items a static rule flagged while their workload was learning ("never learn an attack").
//!
//! A flagged item is not learned on first sight: it is held here with its provenance, and
//! learned only once it proves *habitual* — seen in several distinct learning intervals, or in
//! several containers of the image — the way an entrypoint's shell or a health check recurs
//! and a one-off intrusion does not ([`HabitCriterion`]). Items of rules tagged
//! `habitd.never_learn` are never learned by themselves. An operator can approve or discard
//! any held item.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::observation::Dimension;
use crate::profile::UnixMillis;

/// When a held item counts as habitual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HabitCriterion {
    /// Distinct learning intervals the item must be seen in (default 3).
    pub min_intervals: u32,
    /// Or: distinct containers of the workload it must be seen in (default 2).
    pub min_containers: u32,
}

impl Default for HabitCriterion {
    fn default() -> Self {
        Self {
            min_intervals: 3,
            min_containers: 2,
        }
    }
}

/// Most containers remembered per held item (enough for the criterion and for review).
const MAX_CONTAINERS: usize = 8;
/// Most items held per workload: past it, new flagged items are counted but not held.
pub const MAX_HELD: usize = 1024;

/// One held item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldItem {
    pub dimension: Dimension,
    /// The generalised item.
    pub item: String,
    /// The rules that flagged it.
    pub rules: Vec<String>,
    /// A rule tagged `habitd.never_learn` flagged it: only an operator can approve it.
    pub never_learn: bool,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub count: u64,
    /// Distinct learning intervals it was seen in.
    pub intervals: u64,
    last_interval: u64,
    /// Containers it was seen in (bounded).
    pub containers: Vec<String>,
    /// The node it was first seen on.
    pub node: String,
}

/// Whether a held item was learned, or is still held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Still held.
    Held,
    /// Proved habitual: learn it with its history (it has been removed from the held set;
    /// `Profile::learn_held`).
    Habitual(Box<HeldItem>),
    /// The held set is full; the item was not recorded.
    Full,
}

/// The held items of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldItems {
    items: BTreeMap<String, HeldItem>,
    /// Flagged items refused because the set was full.
    #[serde(default)]
    pub overflow: u64,
}

fn key(dimension: Dimension, item: &str) -> String {
    format!("{}\u{0}{item}", dimension.name())
}

impl HeldItems {
    /// Records a sighting of a flagged item (`item` generalised) in learning interval
    /// `interval`, in `container` (if any).
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &mut self,
        dimension: Dimension,
        item: &str,
        rule: &str,
        never_learn: bool,
        now: UnixMillis,
        interval: u64,
        container: Option<&str>,
        node: &str,
        criterion: HabitCriterion,
    ) -> HoldOutcome {
        let k = key(dimension, item);
        if !self.items.contains_key(&k) && self.items.len() >= MAX_HELD {
            self.overflow += 1;
            return HoldOutcome::Full;
        }
        let held = self.items.entry(k.clone()).or_insert_with(|| HeldItem {
            dimension,
            item: item.to_owned(),
            rules: Vec::new(),
            never_learn: false,
            first_seen: now,
            last_seen: now,
            count: 0,
            intervals: 0,
            last_interval: u64::MAX,
            containers: Vec::new(),
            node: node.to_owned(),
        });
        held.count += 1;
        held.last_seen = held.last_seen.max(now);
        held.never_learn |= never_learn;
        if !held.rules.iter().any(|r| r == rule) {
            held.rules.push(rule.to_owned());
        }
        if held.last_interval != interval {
            held.intervals += 1;
            held.last_interval = interval;
        }
        if let Some(c) = container
            && held.containers.len() < MAX_CONTAINERS
            && !held.containers.iter().any(|x| x == c)
        {
            held.containers.push(c.to_owned());
        }
        let habitual = held.intervals >= u64::from(criterion.min_intervals)
            || held.containers.len() >= criterion.min_containers as usize;
        if habitual && !held.never_learn {
            match self.items.remove(&k) {
                Some(held) => HoldOutcome::Habitual(Box::new(held)),
                None => HoldOutcome::Held,
            }
        } else {
            HoldOutcome::Held
        }
    }

    /// Removes an item (approved or discarded by an operator); returns it.
    pub fn take(&mut self, dimension: Dimension, item: &str) -> Option<HeldItem> {
        self.items.remove(&key(dimension, item))
    }

    /// Every held item.
    pub fn iter(&self) -> impl Iterator<Item = &HeldItem> {
        self.items.values()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: HabitCriterion = HabitCriterion {
        min_intervals: 3,
        min_containers: 2,
    };

    #[test]
    fn recurring_across_intervals_is_habitual() {
        let mut h = HeldItems::default();
        let hold = |h: &mut HeldItems, interval| {
            h.hold(
                Dimension::Exec,
                "/bin/sh",
                "shell",
                false,
                1,
                interval,
                Some("c1"),
                "n",
                C,
            )
        };
        assert_eq!(hold(&mut h, 1), HoldOutcome::Held);
        assert_eq!(
            hold(&mut h, 1),
            HoldOutcome::Held,
            "same interval counts once"
        );
        assert_eq!(hold(&mut h, 2), HoldOutcome::Held);
        assert!(matches!(hold(&mut h, 5), HoldOutcome::Habitual(held) if held.intervals == 3));
        assert!(h.is_empty());
    }

    #[test]
    fn several_containers_are_habitual() {
        let mut h = HeldItems::default();
        let r = h.hold(
            Dimension::Exec,
            "/bin/sh",
            "shell",
            false,
            1,
            1,
            Some("a"),
            "n",
            C,
        );
        assert_eq!(r, HoldOutcome::Held);
        let r = h.hold(
            Dimension::Exec,
            "/bin/sh",
            "shell",
            false,
            1,
            1,
            Some("b"),
            "n",
            C,
        );
        assert!(matches!(r, HoldOutcome::Habitual(held) if held.count == 2));
    }

    #[test]
    fn never_learn_stays_held_until_an_operator_decides() {
        let mut h = HeldItems::default();
        for i in 0..10 {
            let r = h.hold(
                Dimension::Privileged,
                "init_module",
                "module",
                true,
                1,
                i,
                None,
                "n",
                C,
            );
            assert_eq!(r, HoldOutcome::Held);
        }
        let item = h
            .take(Dimension::Privileged, "init_module")
            .unwrap_or_else(|| panic!("held"));
        assert_eq!(item.intervals, 10);
        assert!(item.never_learn);
    }

    #[test]
    fn bounded() {
        let mut h = HeldItems::default();
        for i in 0..MAX_HELD + 5 {
            h.hold(
                Dimension::File,
                &format!("r /x{i}"),
                "r",
                false,
                1,
                1,
                None,
                "n",
                C,
            );
        }
        assert_eq!(h.len(), MAX_HELD);
        assert_eq!(h.overflow, 5);
    }
}
