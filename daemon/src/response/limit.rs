//! The per-workload rate limit of the response: at most `max` actions per workload in any
//! sliding `window`, so that a flood of alerts (an attacker looping, a rule misfiring on a
//! new release) turns into a few actions and then alerts only, never a flood of kills.
//!
//! Pure (the caller gives the time), bounded (at most [`MAX_WORKLOADS`] workloads tracked; when
//! full, the workloads whose windows are empty are forgotten first, then all).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most workloads tracked at once.
pub const MAX_WORKLOADS: usize = 4096;

/// What the limit says about one more action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Act.
    Allowed,
    /// Over the limit: alert only. `first` for the first refusal since the workload's last
    /// allowed action (the one worth an alert of its own; the rest are counted).
    Limited { first: bool },
}

#[derive(Debug, Default)]
struct Window {
    /// Times of the allowed actions within the window, oldest first.
    actions: VecDeque<Instant>,
    /// A refusal was reported since the last allowed action.
    refused: bool,
}

#[derive(Debug)]
pub struct RateLimit {
    max: usize,
    window: Duration,
    workloads: HashMap<String, Window>,
}

impl RateLimit {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            workloads: HashMap::new(),
        }
    }

    /// Records one more action of `workload` at `now` if the limit allows it.
    pub fn admit(&mut self, workload: &str, now: Instant) -> Admission {
        if !self.workloads.contains_key(workload) && self.workloads.len() >= MAX_WORKLOADS {
            self.forget_idle(now);
        }
        let window = self.window;
        let w = self.workloads.entry(workload.to_owned()).or_default();
        while w
            .actions
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            w.actions.pop_front();
        }
        if w.actions.len() < self.max {
            w.actions.push_back(now);
            w.refused = false;
            Admission::Allowed
        } else {
            let first = !w.refused;
            w.refused = true;
            Admission::Limited { first }
        }
    }

    /// Drops the workloads with no action in their window (all of them if none is idle).
    fn forget_idle(&mut self, now: Instant) {
        let window = self.window;
        self.workloads.retain(|_, w| {
            w.actions
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        if self.workloads.len() >= MAX_WORKLOADS {
            self.workloads.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_actions_per_window_then_limited_with_one_first_refusal() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(2, Duration::from_secs(60));
        assert_eq!(l.admit("a", t0), Admission::Allowed);
        assert_eq!(l.admit("a", t0), Admission::Allowed);
        assert_eq!(l.admit("a", t0), Admission::Limited { first: true });
        for s in 1..59 {
            assert_eq!(
                l.admit("a", t0 + Duration::from_secs(s)),
                Admission::Limited { first: false }
            );
        }
        // Another workload has its own budget.
        assert_eq!(l.admit("b", t0), Admission::Allowed);
        // The window slides: the first two actions leave it after 60 s.
        assert_eq!(
            l.admit("a", t0 + Duration::from_secs(60)),
            Admission::Allowed
        );
        assert_eq!(
            l.admit("a", t0 + Duration::from_secs(61)),
            Admission::Allowed
        );
        assert_eq!(
            l.admit("a", t0 + Duration::from_secs(61)),
            Admission::Limited { first: true }
        );
    }

    #[test]
    fn the_number_of_workloads_tracked_is_bounded() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(1, Duration::from_secs(1));
        for i in 0..MAX_WORKLOADS {
            l.admit(&format!("w{i}"), t0);
        }
        assert_eq!(l.workloads.len(), MAX_WORKLOADS);
        // All are busy: a new one clears them (they get their budget back, a bounded loss).
        l.admit("new", t0);
        assert_eq!(l.workloads.len(), 1);
        for i in 0..MAX_WORKLOADS - 1 {
            l.admit(&format!("w{i}"), t0);
        }
        // Idle ones are forgotten first.
        assert_eq!(
            l.admit("later", t0 + Duration::from_secs(2)),
            Admission::Allowed
        );
        assert_eq!(l.workloads.len(), 1);
    }
}
