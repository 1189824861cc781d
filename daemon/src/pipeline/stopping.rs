//! Sequence alerts wait about one counters interval before they are raised, so that a
//! container's shutdown is not reported as an intrusion.
//!
//! A container that stops (`docker stop`, a restart, a scale-down) runs its shutdown path:
//! postgres's postmaster signals its children and writes a checkpoint, a server closes its
//! connections. Learning watches a workload start and serve; it seldom sees one stop, so a
//! stopping thread's last syscalls score as unknown sequences (the application evaluation's
//! postgres raised them at every restart and scale-down). An alert whose container's cgroup is
//! gone when the alert is due was its shutdown: it is set aside (counted in
//! `habitd_sequence_findings_set_aside_total{reason="stopping"}`), not raised. Only sequence
//! alerts wait: a new program, file or connection is not part of a shutdown, and an attacker
//! gains nothing by stopping the container they are in (it ends their foothold; every other
//! dimension has alerted already).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::alerts::alert::Alert;

/// Most alerts waiting at once; past it the oldest is raised at once (bounded memory).
const MAX_WAITING: usize = 1024;

struct Waiting {
    alert: Alert,
    cgroup_id: u64,
    due: SystemTime,
}

/// Sequence alerts waiting to see whether their container stops.
pub struct StoppingCheck {
    waiting: VecDeque<Waiting>,
    wait: Duration,
}

impl StoppingCheck {
    /// Alerts wait `wait` (the counters interval: the check runs on that tick, after the
    /// cgroups are refreshed) before they are raised or set aside.
    pub fn new(wait: Duration) -> Self {
        Self {
            waiting: VecDeque::new(),
            wait,
        }
    }

    /// Makes the alert of a thread of cgroup `cgroup_id` wait from `now`. When too many are
    /// waiting, the oldest goes to `out` at once.
    pub fn wait(&mut self, alert: Alert, cgroup_id: u64, now: SystemTime, out: &mut Vec<Alert>) {
        if self.waiting.len() >= MAX_WAITING
            && let Some(oldest) = self.waiting.pop_front()
        {
            out.push(oldest.alert);
        }
        self.waiting.push_back(Waiting {
            alert,
            cgroup_id,
            due: now + self.wait,
        });
    }

    /// The alerts due at `now`: raised into `out` unless their cgroup is gone (`exists`
    /// answers from the cgroup index just refreshed). Returns how many were set aside.
    pub fn release(
        &mut self,
        now: SystemTime,
        exists: impl Fn(u64) -> bool,
        out: &mut Vec<Alert>,
    ) -> u64 {
        let mut set_aside = 0;
        while self.waiting.front().is_some_and(|w| w.due <= now) {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            if exists(w.cgroup_id) {
                out.push(w.alert);
            } else {
                set_aside += 1;
            }
        }
        set_aside
    }

    /// Every waiting alert, raised (habitd is stopping: nothing is lost).
    pub fn release_all(&mut self, out: &mut Vec<Alert>) {
        out.extend(self.waiting.drain(..).map(|w| w.alert));
    }

    /// How many alerts are waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use habit_models::priority::Priority;

    fn alert(n: u64) -> Alert {
        let rule = format!("sequence {n}");
        Alert::new(
            SystemTime::UNIX_EPOCH,
            rule,
            Priority::Warning,
            "",
            "w",
            "stable",
            "h",
        )
    }

    #[test]
    fn an_alert_of_a_container_that_stopped_is_set_aside() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut check = StoppingCheck::new(Duration::from_secs(10));
        let mut out = Vec::new();
        check.wait(alert(1), 7, t0, &mut out);
        check.wait(alert(2), 8, t0 + Duration::from_secs(1), &mut out);
        assert!(out.is_empty());
        // Not due yet.
        assert_eq!(
            check.release(t0 + Duration::from_secs(5), |_| true, &mut out),
            0
        );
        assert!(out.is_empty());
        // cgroup 7 is gone (the container stopped), 8 is still there.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(check.release(later, |id| id == 8, &mut out), 1);
        assert_eq!(out.len(), 1);
        assert!(out[0].rule.contains("sequence 2"), "{}", out[0].rule);
        assert_eq!(check.len(), 0);
    }

    #[test]
    fn waiting_is_bounded_and_nothing_is_lost_at_shutdown() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut check = StoppingCheck::new(Duration::from_secs(10));
        let mut out = Vec::new();
        for n in 0..(MAX_WAITING as u64 + 3) {
            check.wait(alert(n), n, t0, &mut out);
        }
        assert_eq!(out.len(), 3, "the oldest raised at once");
        assert_eq!(check.len(), MAX_WAITING);
        check.release_all(&mut out);
        assert_eq!(out.len(), MAX_WAITING + 3);
        assert_eq!(check.len(), 0);
    }
}
