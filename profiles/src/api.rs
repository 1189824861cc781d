//! The HTTP API's wire types, shared by habitd (which serves them) and habitctl (which reads
//! and sends them), so that the two cannot drift apart.
//!
//! The JSON is what `GET /api/v1/workloads` has always served: one [`WorkloadView`] per
//! workload with its key, state, learning progress and profile sizes. Reading is lenient where
//! a daemon of another version may differ: fields other than `key`, `state` and `learning` may
//! be missing (they default), unknown fields are ignored, and `unstable_reason` may be the
//! sentence habitd serves or the store's structured [`UnstableReason`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::observation::Dimension;
use crate::profile::{UnixMillis, UnstableReason};
use crate::store::{ForcedMode, WorkloadState};
use crate::workload::WorkloadKey;

/// What an operator can ask of a workload (`POST /api/v1/workloads/{key}/mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keep learning (from a stable baseline: learn more, merged in at the next freeze).
    Learn,
    /// Detect now (a baseline frozen before convergence is `partial`).
    Detect,
    /// Forget the baseline and learn from scratch.
    Relearn,
}

impl Mode {
    /// Every mode, in the order they are documented.
    pub const ALL: [Mode; 3] = [Mode::Learn, Mode::Detect, Mode::Relearn];

    /// The name on the wire (and on habitctl's command line).
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Detect => "detect",
            Mode::Relearn => "relearn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode {s:?}: expected learn, detect or relearn"))
    }
}

/// The body of `POST /api/v1/workloads/{key}/mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeRequest {
    /// The mode to force.
    pub mode: Mode,
}

/// What an operator decides about a held item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldAction {
    /// Learn it (the workload must be learning).
    Approve,
    /// Forget it.
    Discard,
}

/// The body of `POST /api/v1/workloads/{key}/held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDecision {
    /// Approve or discard.
    pub action: HeldAction,
    /// The held item's dimension.
    pub dimension: Dimension,
    /// The held item, as listed by `GET /api/v1/workloads/{key}/held`.
    pub item: String,
}

/// The body of every API error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for an operator.
    pub error: String,
}

/// A workload as `GET /api/v1/workloads` lists it (and as the mode and held calls return it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// The workload key.
    pub key: WorkloadKey,
    /// Where it is in its lifecycle.
    pub state: WorkloadState,
    /// Its baseline was frozen before learning converged.
    #[serde(default)]
    pub partial: bool,
    /// The mode an operator forced, if any.
    #[serde(default)]
    pub mode_forced: Option<ForcedMode>,
    /// Learning progress.
    pub learning: LearningView,
    /// Items learned over all dimensions.
    #[serde(default)]
    pub items: u64,
    /// Items learned per dimension, by the dimension's name.
    #[serde(default)]
    pub profile_sizes: BTreeMap<String, usize>,
    /// Anomaly alerts raised.
    #[serde(default)]
    pub alerts: u64,
    /// Why it is unstable, as a sentence.
    #[serde(default, deserialize_with = "unstable_reason_text")]
    pub unstable_reason: Option<String>,
    /// When its baseline was frozen.
    #[serde(default)]
    pub baseline_created: Option<UnixMillis>,
    /// Items a rule flagged during learning, waiting to prove habitual or for an operator.
    #[serde(default)]
    pub held: usize,
    /// Rollout inheritance: the earlier version of its repository whose baseline this
    /// workload started from, while it learns only what changed (shorter windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inheriting_from: Option<WorkloadKey>,
    /// The lineage of its baseline (`metadata.inherited_from`): the versions it was built on,
    /// oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_from: Vec<String>,
}

/// The `learning` object of a [`WorkloadView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearningView {
    /// When learning started.
    pub started_at: UnixMillis,
    /// Seconds spent learning.
    pub elapsed_secs: f64,
    /// When a new item was last learned.
    #[serde(default)]
    pub last_new_item_at: Option<UnixMillis>,
    /// Seconds since a new item was last learned.
    #[serde(default)]
    pub secs_since_new_item: Option<f64>,
    /// 0..=1: how far the workload is towards stable (1 once stable).
    pub progress: f64,
    /// What the rate and sequence models have to learn from so far (learning workloads only;
    /// checkpointed with the profile, so a restart resumes these counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelLearningView>,
}

/// The sizes of the models' learning data of a learning workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLearningView {
    /// Counter intervals kept for the rate model.
    pub rate_intervals: usize,
    /// Distinct syscall 6-grams counted for the sequence model.
    pub sequence_grams: usize,
    /// Whole thread traces kept to calibrate the sequence model.
    pub sequence_traces: usize,
}

/// `unstable_reason` as a sentence: habitd serves one; the store's structured reason (what an
/// older daemon served) is rendered as the same sentence, anything else as compact JSON.
fn unstable_reason_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text),
        Some(other) => Some(
            UnstableReason::deserialize(&other)
                .map_or_else(|_| other.to_string(), |reason| reason.to_string()),
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A workload exactly as habitd served it before these types were shared.
    const SERVED: &str = r#"{"key":"docker.io/library/nginx:1.25","state":"stable",
        "partial":true,"mode_forced":"detect","learning":{"started_at":1700000000000,
        "elapsed_secs":3600.5,"last_new_item_at":1700000003000,"secs_since_new_item":125.5,
        "progress":1.0},"items":137,"profile_sizes":{"args":4,"exec":3,"file":60},"alerts":5,
        "unstable_reason":null,"baseline_created":1700003600000,"held":2}"#;

    #[test]
    fn the_served_json_round_trips_unchanged() {
        let view: WorkloadView = serde_json::from_str(SERVED).unwrap();
        assert_eq!(view.key.as_str(), "docker.io/library/nginx:1.25");
        assert_eq!(view.state, WorkloadState::Stable);
        assert_eq!(view.mode_forced, Some(ForcedMode::Detect));
        assert_eq!(view.held, 2);
        assert_eq!(view.profile_sizes["file"], 60);
        let expected: serde_json::Value = serde_json::from_str(SERVED).unwrap();
        assert_eq!(serde_json::to_value(&view).unwrap(), expected);
    }

    #[test]
    fn reading_tolerates_missing_and_unknown_fields() {
        let view: WorkloadView = serde_json::from_value(serde_json::json!({
            "key": "host", "state": "learning", "future_field": 1,
            "learning": {"started_at": 0, "elapsed_secs": 1.0, "progress": 0.5}
        }))
        .unwrap();
        assert_eq!(view.held, 0);
        assert_eq!(view.unstable_reason, None);
        assert!(view.profile_sizes.is_empty());
    }

    #[test]
    fn unstable_reasons_are_sentences() {
        let reason = |value: serde_json::Value| {
            serde_json::from_value::<WorkloadView>(serde_json::json!({
                "key": "k", "state": "unstable", "unstable_reason": value,
                "learning": {"started_at": 0, "elapsed_secs": 0.0, "progress": 0.0}
            }))
            .unwrap()
            .unstable_reason
        };
        assert_eq!(
            reason(
                serde_json::json!({"kind": "dimension_limit", "dimension": "file", "limit": 4096})
            )
            .as_deref(),
            Some("file reached its limit of 4096 items")
        );
        assert_eq!(
            reason(serde_json::json!("too many files")).as_deref(),
            Some("too many files")
        );
        assert_eq!(
            reason(serde_json::json!({"something": "else"})).as_deref(),
            Some(r#"{"something":"else"}"#)
        );
        assert_eq!(reason(serde_json::Value::Null), None);
    }

    #[test]
    fn modes_by_name() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
            assert_eq!(
                serde_json::to_value(ModeRequest { mode }).unwrap(),
                serde_json::json!({ "mode": mode.as_str() })
            );
        }
        assert!("Learn".parse::<Mode>().is_err());
    }
}
