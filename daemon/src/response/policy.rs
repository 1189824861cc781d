//! Which alerts the response acts on: the `[response]` table compiled once (globs parsed,
//! priority read), then a pure decision per alert, so that every rule of the policy is a unit
//! test and nothing here touches a process.
//!
//! An alert is selected when it is *certain* (fused: a rule hit on behaviour the baseline does
//! not know; or at least `min_priority`), its rule is one of `rules`, and its workload is in
//! scope. Host workloads are never in scope through a catch-all glob: only a glob that starts
//! with `host` names them, so that `workloads = ["*"]` cannot kill sshd.

use anyhow::{Context, Result, bail};
use glob::Pattern;
use habit_models::priority::Priority;

use crate::alerts::alert::{ANOMALY_RULE, Alert};
use crate::config::Response;

/// The rule name of every response alert; such alerts are never acted on.
pub const RESPONSE_RULE: &str = "habitd response";

/// Why an alert was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A rule hit on novel behaviour of a stable workload.
    Fused,
    /// The alert's priority is at least `min_priority`.
    Priority,
}

impl Trigger {
    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Fused => "fused",
            Trigger::Priority => "priority",
        }
    }
}

/// The compiled `[response]` selection.
#[derive(Debug, Clone)]
pub struct Policy {
    fused: bool,
    min_priority: Option<Priority>,
    /// Globs over container workload keys (empty: every container workload).
    workloads: Vec<Pattern>,
    /// Globs that name host workloads (those of `workloads` starting with `host`).
    host_workloads: Vec<Pattern>,
    /// Globs over rule names (empty: every rule).
    rules: Vec<Pattern>,
}

impl Policy {
    /// Compiles the table; an invalid glob or priority is an error naming its key (and index).
    pub fn from_config(r: &Response) -> Result<Policy> {
        let min_priority = match r.min_priority.trim() {
            "" => None,
            p => Some(
                p.parse::<Priority>()
                    .with_context(|| format!("response.min_priority = {p:?}"))?,
            ),
        };
        let workloads = globs("response.workloads", &r.workloads)?;
        let (host_workloads, workloads): (Vec<_>, Vec<_>) = workloads
            .into_iter()
            .partition(|p| p.as_str().starts_with("host"));
        let rules = globs("response.rules", &r.rules)?;
        Ok(Policy {
            fused: r.fused,
            min_priority,
            workloads,
            host_workloads,
            rules,
        })
    }

    /// Whether the response acts on `alert`, and why; `None` for every alert it must leave
    /// alone (its own alerts, suppressed hits, summaries, out-of-scope workloads or rules).
    pub fn select(&self, alert: &Alert) -> Option<Trigger> {
        let h = &alert.habitd;
        if alert.rule == RESPONSE_RULE || h.suppressed || h.count.is_some() {
            return None;
        }
        if !self.rules.is_empty() && !self.rules.iter().any(|p| p.matches(&alert.rule)) {
            return None;
        }
        if !self.in_scope(&h.workload) {
            return None;
        }
        let fused =
            alert.rule != ANOMALY_RULE && !h.novel.is_empty() && h.baseline_state == "stable";
        if self.fused && fused {
            return Some(Trigger::Fused);
        }
        match self.min_priority {
            Some(p) if alert.priority >= p => Some(Trigger::Priority),
            _ => None,
        }
    }

    /// Whether a workload may be acted on: a host workload only when a `host…` glob names
    /// it; a container workload when `workloads` lists none or one of them matches.
    pub fn in_scope(&self, workload: &str) -> bool {
        if is_host(workload) {
            return self.host_workloads.iter().any(|p| p.matches(workload));
        }
        self.workloads.is_empty() || self.workloads.iter().any(|p| p.matches(workload))
    }
}

/// Host workload keys: `host` and `host:<unit>`.
pub fn is_host(workload: &str) -> bool {
    workload == "host" || workload.starts_with("host:")
}

fn globs(key: &str, patterns: &[String]) -> Result<Vec<Pattern>> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.trim().is_empty() {
                bail!("{key}[{i}] is empty");
            }
            Pattern::new(p).with_context(|| format!("{key}[{i}] = {p:?} is not a valid glob"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    const NGINX: &str = "docker.io/library/nginx:1.25";

    fn policy(edit: impl FnOnce(&mut Response)) -> Policy {
        let mut r = Response {
            enabled: true,
            ..Response::default()
        };
        edit(&mut r);
        Policy::from_config(&r).unwrap()
    }

    fn rule_hit(rule: &str, priority: Priority, workload: &str, state: &str) -> Alert {
        Alert::new(
            SystemTime::UNIX_EPOCH,
            rule,
            priority,
            "o",
            workload,
            state,
            "h",
        )
    }

    fn fused(rule: &str, workload: &str) -> Alert {
        rule_hit(rule, Priority::Critical, workload, "stable").with_novel("exec", "/bin/nc")
    }

    #[test]
    fn by_default_fused_alerts_of_containers_are_selected_and_nothing_else() {
        let p = policy(|_| ());
        assert_eq!(
            p.select(&fused("Reverse shell or netcat with exec", NGINX)),
            Some(Trigger::Fused)
        );
        // A rule hit without novelty, however severe, is not fused.
        let hit = rule_hit("Reverse shell", Priority::Emergency, NGINX, "stable");
        assert_eq!(p.select(&hit), None);
        // An anomaly alone (no rule) is not fused.
        let anomaly = Alert::new(
            SystemTime::UNIX_EPOCH,
            ANOMALY_RULE,
            Priority::Critical,
            "o",
            NGINX,
            "stable",
            "h",
        )
        .with_novel("exec", "/bin/nc");
        assert_eq!(p.select(&anomaly), None);
        // Novel items of a workload that is still learning: not certain.
        let learning = rule_hit("R", Priority::Error, NGINX, "learning").with_novel("exec", "/x");
        assert_eq!(p.select(&learning), None);
    }

    #[test]
    fn suppressed_hits_summaries_and_our_own_alerts_are_never_selected() {
        let p = policy(|r| r.min_priority = "debug".into());
        assert_eq!(p.select(&fused("R", NGINX).with_suppressed(true)), None);
        let mut summary = fused("R", NGINX);
        summary.habitd.count = Some(3);
        assert_eq!(p.select(&summary), None);
        assert_eq!(p.select(&fused(RESPONSE_RULE, NGINX)), None);
    }

    #[test]
    fn min_priority_selects_alerts_at_or_above_it() {
        let p = policy(|r| {
            r.fused = false;
            r.min_priority = "critical".into();
        });
        assert_eq!(
            p.select(&rule_hit("R", Priority::Critical, NGINX, "learning")),
            Some(Trigger::Priority)
        );
        assert_eq!(
            p.select(&rule_hit("R", Priority::Alert, NGINX, "stable")),
            Some(Trigger::Priority)
        );
        assert_eq!(
            p.select(&rule_hit("R", Priority::Error, NGINX, "stable")),
            None
        );
        // fused = false: a fused Error alert is below the priority, so not selected.
        let f = rule_hit("R", Priority::Error, NGINX, "stable").with_novel("exec", "/x");
        assert_eq!(p.select(&f), None);
    }

    #[test]
    fn workload_and_rule_globs_restrict_the_scope() {
        let p = policy(|r| {
            r.workloads = vec!["docker.io/library/nginx:*".into()];
            r.rules = vec!["Reverse shell*".into(), "Read sensitive file".into()];
        });
        assert!(
            p.select(&fused("Reverse shell or netcat with exec", NGINX))
                .is_some()
        );
        assert!(p.select(&fused("Read sensitive file", NGINX)).is_some());
        assert!(
            p.select(&fused("Shell spawned in container", NGINX))
                .is_none()
        );
        assert!(
            p.select(&fused("Read sensitive file", "docker.io/library/redis:7"))
                .is_none()
        );
    }

    #[test]
    fn host_workloads_only_when_named_by_a_host_glob() {
        let any = policy(|r| r.workloads = vec!["*".into()]);
        assert!(!any.in_scope("host"));
        assert!(!any.in_scope("host:sshd.service"));
        assert!(any.in_scope(NGINX));
        let default = policy(|_| ());
        assert!(!default.in_scope("host"));
        assert!(default.in_scope(NGINX));
        assert_eq!(default.select(&fused("R", "host")), None);
        let named = policy(|r| r.workloads = vec!["host:cron.service".into()]);
        assert!(named.in_scope("host:cron.service"));
        assert!(!named.in_scope("host:sshd.service"));
        assert!(!named.in_scope("host"));
        // Naming a host workload does not take the containers out of scope... unless
        // container globs are listed too.
        assert!(named.in_scope(NGINX));
        let both = policy(|r| r.workloads = vec!["host".into(), "docker.io/x/*".into()]);
        assert!(both.in_scope("host"));
        assert!(!both.in_scope(NGINX));
        assert!(both.in_scope("docker.io/x/app:1"));
    }

    #[test]
    fn bad_globs_and_priorities_name_their_key() {
        let mut r = Response {
            workloads: vec!["ok".into(), "[".into()],
            ..Response::default()
        };
        let err = format!("{:#}", Policy::from_config(&r).unwrap_err());
        assert!(err.contains("response.workloads[1]"), "{err}");
        r.workloads.clear();
        r.rules = vec![" ".into()];
        let err = format!("{:#}", Policy::from_config(&r).unwrap_err());
        assert!(err.contains("response.rules[0] is empty"), "{err}");
        r.rules.clear();
        r.min_priority = "severe".into();
        let err = format!("{:#}", Policy::from_config(&r).unwrap_err());
        assert!(
            err.contains("response.min_priority") && err.contains("severe"),
            "{err}"
        );
    }
}
