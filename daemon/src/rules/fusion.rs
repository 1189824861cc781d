//! Fusion of static rule hits with the learned baseline: the false-positive cut.
//!
//! - A rule hit on a stable workload whose behaviour is in its baseline is *suppressed*
//!   (counted, logged at debug, sent only with `--alerts-include-suppressed`, marked
//!   `habitd.suppressed=true`), unless the rule is tagged `habitd.always`.
//! - A rule hit on behaviour that is also novel is escalated one priority level and carries
//!   the anomaly explanation.
//! - Novel behaviour without a rule hit is an alert of rule `habitd anomaly` when its score
//!   reaches the dimension's calibrated threshold (the false-alarm rate of the baseline).
//! - While a workload learns, rule hits alert as they are (and their items are held, see
//!   [`crate::learning::Engine::hold`]); an unstable workload alerts on rules only.

use std::sync::Arc;
use std::time::SystemTime;

use habit_models::calibrate;
use habit_models::priority::Priority;
use habit_models::rate::{RateDirection, RateScore};
use habit_models::rules::{Rule, RuleSet};
use habit_profiles::store::WorkloadState;
use serde_json::{Map, Value};

use crate::alerts::alert::Alert;
use crate::falco::fields::RuleEvent;
use crate::learning::Finding;
use crate::metrics::Metrics;
use crate::sequences::SequenceFinding;

/// The tags that steer fusion (defined with the built-in rules that carry them).
pub use habit_models::rules::{ALWAYS_TAG, NEVER_LEARN_TAG};

pub struct Fusion {
    pub rules: RuleSet,
    include_suppressed: bool,
    /// Send rate anomalies that are only a drop of activity (`learning.rate_drop_alerts`).
    rate_drops: bool,
    hostname: String,
    metrics: Arc<Metrics>,
}

/// The rule name of [`Fusion::unstable_alert`].
pub const UNSTABLE_RULE: &str = "habitd workload unstable";

/// One level more severe (Emergency stays Emergency).
pub fn escalate(p: Priority) -> Priority {
    let i = Priority::ALL.iter().position(|x| *x == p).unwrap_or(0);
    Priority::ALL[(i + 1).min(Priority::ALL.len() - 1)]
}

impl Fusion {
    pub fn new(
        rules: RuleSet,
        include_suppressed: bool,
        hostname: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.init_rules(rules.rules().iter().map(|r| r.name()));
        Self {
            rules,
            include_suppressed,
            rate_drops: false,
            hostname,
            metrics,
        }
    }

    /// Also alert on rate anomalies that are only a drop of activity (at `Informational`).
    pub fn with_rate_drops(mut self, rate_drops: bool) -> Self {
        self.rate_drops = rate_drops;
        self
    }

    /// Whether a rate anomaly becomes an alert: a drop of activity only when asked for
    /// (logged at debug otherwise).
    pub fn alerts_on_rate(&self, workload: &str, score: &RateScore) -> bool {
        let alert = score.direction != RateDirection::Drop || self.rate_drops;
        if !alert {
            tracing::debug!(
                message = "Rate drop not alerted (learning.rate_drop_alerts = false).",
                workload,
                explanation = %score.explain()
            );
        }
        alert
    }

    /// The anomaly alert of a novel item without a rule hit.
    pub fn novelty_alert(
        &self,
        f: &Finding,
        fields: Map<String, Value>,
        time: SystemTime,
    ) -> Alert {
        let dimension = f.dimension.alert_dimension().to_string();
        Alert::novelty(
            time,
            f.workload.as_str(),
            f.baseline_state.name(),
            &dimension,
            &f.item,
            f.score,
            f.priority,
            fields,
            &self.hostname,
        )
    }

    /// The alert of a learning workload that became unstable: a limit was hit (a flood of
    /// distinct paths, destinations, syscall orders…), so from now on it learns nothing new and
    /// only rules match it. Said once per workload, because a workload flooding while it learns
    /// would otherwise stay blind to novelty without a word in the alert stream.
    pub fn unstable_alert(&self, workload: &str, reason: &str, time: SystemTime) -> Alert {
        Alert::new(
            time,
            UNSTABLE_RULE,
            Priority::Warning,
            format!(
                "Workload {workload} became unstable while learning: {reason}; it learns nothing \
                 new and is matched by rules only (a flood of new behaviour, or a workload too \
                 varied for a baseline)"
            ),
            workload,
            WorkloadState::Unstable.name(),
            &self.hostname,
        )
        .with_tags(["habitd", "unstable"])
        .with_novel("limit", reason)
    }

    /// The anomaly alert of an interval whose rates the baseline's rate model finds anomalous;
    /// the novel item names the most deviating feature with its normal and observed value.
    /// Its priority follows its direction ([`rate_priority`]).
    pub fn rate_alert(&self, workload: &str, score: &RateScore, time: SystemTime) -> Alert {
        let item = score
            .top
            .first()
            .map_or_else(|| "rates".to_string(), |d| d.explain());
        Alert::new(
            time,
            crate::alerts::alert::ANOMALY_RULE,
            rate_priority(score),
            format!(
                "Rate anomaly in {workload} (baseline stable): {}",
                score.explain()
            ),
            workload,
            WorkloadState::Stable.name(),
            &self.hostname,
        )
        .with_tags(["habitd", "anomaly", "rate", score.direction.name()])
        .with_score(score.score)
        .with_novel("rate", item)
    }

    /// The anomaly alert of a thread whose syscall order the workload's sequence model finds
    /// anomalous: names the process (in `fields`), the window and the unknown sequences.
    pub fn sequence_alert(
        &self,
        f: &SequenceFinding,
        mut fields: Map<String, Value>,
        time: SystemTime,
    ) -> Alert {
        let score = 1.0 - f.exceedance;
        let item = f.examples.first().cloned().unwrap_or_else(|| {
            "syscall order (its unknown 6-grams were first sent by another thread)".to_string()
        });
        let mut output = format!(
            "Unusual syscall sequence in {} (baseline stable, score {:.2}): thread {} of process \
             {}, mean surprise {:.2} nats/syscall over its last {} syscalls (threshold {:.2}), \
             {} of {} syscall 6-grams never seen while learning; e.g. {}",
            f.workload,
            score,
            f.tid,
            f.tgid,
            f.statistic,
            f.grams.min(2048),
            f.threshold,
            f.unknown,
            f.grams,
            f.examples.join(" | ")
        );
        crate::alerts::alert::append_field_details(&mut output, &fields);
        fields.insert("habitd.sequence.statistic".into(), f.statistic.into());
        fields.insert("habitd.sequence.threshold".into(), f.threshold.into());
        fields.insert("habitd.sequence.grams".into(), f.grams.into());
        fields.insert("habitd.sequence.unknown".into(), f.unknown.into());
        fields.insert("habitd.sequence.examples".into(), f.examples.clone().into());
        fields.insert("thread.tid".into(), f.tid.into());
        Alert::new(
            time,
            crate::alerts::alert::ANOMALY_RULE,
            calibrate::priority_for(score),
            output,
            f.workload.as_str(),
            WorkloadState::Stable.name(),
            &self.hostname,
        )
        .with_output_fields(fields)
        .with_tags(["habitd", "anomaly", "sequence"])
        .with_score(score)
        .with_novel("sequence", item)
    }

    /// Decides the alerts of one event: `hits` are the rules it matched, `findings` its novel
    /// items (scored only for stable workloads), `observed` whether it had any behaviour the
    /// baseline could explain.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        hits: &[&Rule],
        event: &RuleEvent<'_>,
        findings: &[Finding],
        observed: bool,
        state: WorkloadState,
        workload: &str,
        out: &mut Vec<Alert>,
    ) {
        let time = event.attributed.time;
        if hits.is_empty() {
            // Alone, novelty alerts only at its dimension's calibrated threshold.
            if findings.iter().any(|f| f.alert) {
                let fields = event.output_fields();
                for f in findings.iter().filter(|f| f.alert) {
                    out.push(self.novelty_alert(f, fields.clone(), time));
                }
            }
            return;
        }
        let stable = state == WorkloadState::Stable;
        let explained = stable && observed && findings.is_empty();
        // The one view of the event, rendered once for all its alerts.
        let mut view = None;
        for rule in hits {
            self.metrics
                .rule_hits
                .with_label_values(&[rule.name()])
                .inc();
            let suppressed = explained && !rule.has_tag(ALWAYS_TAG);
            if suppressed {
                self.metrics
                    .alerts_suppressed
                    .with_label_values(&[rule.name()])
                    .inc();
                tracing::debug!(
                    message = "Rule hit explained by the baseline: suppressed.",
                    rule = rule.name(),
                    workload
                );
                if !self.include_suppressed {
                    continue;
                }
            }
            let novel = stable && !findings.is_empty();
            let priority = if novel {
                escalate(rule.priority())
            } else {
                rule.priority()
            };
            let fields = rule_output_fields(
                rule,
                event,
                view.get_or_insert_with(|| event.output_fields()),
            );
            let mut alert = Alert::new(
                time,
                rule.name(),
                priority,
                rule.render_output(event),
                workload,
                state.name(),
                &self.hostname,
            )
            .with_output_fields(fields)
            .with_tags(rule.tags().iter().cloned())
            .with_suppressed(suppressed);
            if novel {
                let score = findings.iter().map(|f| f.score).fold(0.0, f64::max);
                alert = alert.with_score(score);
                for f in findings {
                    alert = alert.with_novel(f.dimension.alert_dimension().to_string(), &f.item);
                }
            }
            out.push(alert);
        }
    }
}

/// The priority of a rate anomaly. A rate says "more (or less) of the same", never which
/// item: a rise or a change of mix is at most a `Warning` (the calibrated priority of its
/// score, which with the rate model's 0.1 % target would otherwise always be `Critical`);
/// what names an attack (a rule, a novel executable or destination) rises above it. A drop
/// of activity is not an intrusion: `Informational` at most, and sent only when
/// `learning.rate_drop_alerts` asks for it.
pub fn rate_priority(score: &RateScore) -> Priority {
    let calibrated = calibrate::priority_for(score.score);
    let cap = match score.direction {
        RateDirection::Drop => Priority::Informational,
        RateDirection::Rise | RateDirection::Mix => Priority::Warning,
    };
    calibrated.min(cap)
}

/// A rule alert's `output_fields`: the event's one view, plus each field the rule's output
/// names that the view does not list (`proc.aname[2]`, or `null` for a field the event lacks),
/// read the same way. Nothing the view has is rendered twice, so nothing can disagree.
fn rule_output_fields(
    rule: &Rule,
    event: &RuleEvent<'_>,
    view: &Map<String, Value>,
) -> Map<String, Value> {
    let mut fields = view.clone();
    for (name, field) in rule.output().fields() {
        if !fields.contains_key(name) {
            fields.insert(name.to_owned(), event.field_json(field));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: "syscall rate 387× below baseline" was Critical. A drop is informational at
    /// most; a rise keeps a calibrated priority up to Warning.
    #[test]
    fn rate_alerts_have_a_priority_that_fits_their_direction() {
        let score = |direction, score| RateScore {
            score,
            anomalous: true,
            statistic: 900.0,
            threshold: 30.0,
            direction,
            top: Vec::new(),
        };
        assert_eq!(
            rate_priority(&score(RateDirection::Drop, 0.99999)),
            Priority::Informational
        );
        assert_eq!(
            rate_priority(&score(RateDirection::Rise, 0.99999)),
            Priority::Warning
        );
        assert_eq!(
            rate_priority(&score(RateDirection::Mix, 0.9)),
            Priority::Notice
        );
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let fusion = Fusion::new(RuleSet::default(), false, "node".into(), metrics);
        let alert = fusion.rate_alert(
            "w",
            &score(RateDirection::Drop, 0.99999),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(alert.priority, Priority::Informational);
        assert!(alert.tags.iter().any(|t| t == "drop"));
        // By default a drop is not an alert; a rise is.
        assert!(!fusion.alerts_on_rate("w", &score(RateDirection::Drop, 0.99999)));
        assert!(fusion.alerts_on_rate("w", &score(RateDirection::Rise, 0.99999)));
        let fusion = fusion.with_rate_drops(true);
        assert!(fusion.alerts_on_rate("w", &score(RateDirection::Drop, 0.99999)));
    }

    #[test]
    fn escalation_is_one_level_and_saturates() {
        assert_eq!(escalate(Priority::Warning), Priority::Error);
        assert_eq!(escalate(Priority::Notice), Priority::Warning);
        assert_eq!(escalate(Priority::Emergency), Priority::Emergency);
    }

    /// The priority of a rate anomaly. A rate says "more (or less) of the same", never which
    /// item: a rise or a change of mix is at most a `Warning` (the calibrated priority of its
    /// score, which with the rate model's 0.1 % target would otherwise always be `Critical`);
    /// what names an attack (a rule, a novel executable or destination) rises above it. A drop
    /// of activity is not an intrusion: `Informational` at most, and sent only when
    /// `learning.rate_drop_alerts` asks for it.
    pub fn rate_priority(score: &RateScore) -> Priority {
        let calibrated = calibrate::priority_for(score.score);
        let cap = match score.direction {
            RateDirection::Drop => Priority::Informational,
            RateDirection::Rise | RateDirection::Mix => Priority::Warning,
        };
        calibrated.min(cap)
    }

    /// A rule alert's `output_fields` are the event's one view (no field of it rendered
    /// another way), plus the fields the rule's output names that the view does not list,
    /// read through the same mapping.
    #[test]
    fn a_rule_alerts_output_fields_are_the_one_view() {
        use crate::falco::fixture::{Fixture, kind};
        let (rules, report) = RuleSet::load_str(
            "test.yaml",
            "- rule: Any event of nc\n  desc: d\n  condition: proc.name = nc\n  \
             output: nc %proc.name exe=%proc.exe path=%proc.exepath conn=%fd.name \
             pid=%proc.pid gp=%proc.aname[2] app=%container.label[app] \
             client=%fd.cip mode=%evt.arg.mode\n  priority: WARNING\n",
        );
        // (It warns that the condition takes every event type: that is the point here.)
        assert_eq!(report.errors().count(), 0, "{report}");
        assert_eq!(report.rules_loaded(), 1, "{report}");
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let fusion = Fusion::new(rules, true, "node".into(), metrics);
        let fx = Fixture::new();
        fx.each(|ev, view| {
            let k = kind(&ev.body);
            let mut hits = Vec::new();
            fusion.rules.matching_rules(view, &mut hits);
            assert_eq!(hits.len(), 1, "{k}");
            let mut alerts = Vec::new();
            let state = WorkloadState::Learning;
            fusion.decide(&hits, view, &[], false, state, "w", &mut alerts);
            assert_eq!(alerts.len(), 1, "{k}");
            let fields = &alerts[0].output_fields;
            let one = view.output_fields();
            for (key, value) in &one {
                assert_eq!(fields.get(key), Some(value), "{k}: {key}");
            }
            for (name, field) in hits[0].output().fields() {
                assert_eq!(
                    fields.get(name),
                    Some(&view.field_json(field)),
                    "{k}: {name}"
                );
            }
            let extra = fields.keys().filter(|key| !one.contains_key(*key));
            for key in extra {
                assert!(
                    hits[0].output().fields().any(|(name, _)| name == key),
                    "{k}: {key} is neither the view's nor the rule's"
                );
            }
            assert_eq!(fields["proc.exe"], "nc", "{k}");
            assert_eq!(fields["proc.aname[2]"], "httpd", "{k}");
            assert_eq!(fields["container.label.app"], "web", "{k}");
            assert_eq!(
                fields["fd.cip"].is_null(),
                !matches!(k, "accept" | "dup"),
                "{k}"
            );
        });
    }
}
