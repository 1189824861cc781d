//! The health of each container runtime as attribution sees it: up, or down for a reason
//! (socket absent, refusing, hanging, answering garbage…) with an exponential back-off before
//! the next attempt, so that a dead runtime is neither hammered nor waited for on every event.
//! Every error is counted in `habitd_runtime_errors_total{runtime,reason}`; the state
//! (`habitd_runtime_up{runtime}`) is logged once per change, not once per error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{ResolveError, lock};

/// First delay after a runtime failed; doubled per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest delay between two attempts at a runtime that stays down.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The runtime metrics, shared by the resolver and the runtimes' background tasks (the
/// handles are cheap clones of the same collectors).
#[derive(Clone)]
pub struct RuntimeMetrics {
    /// `habitd_runtime_errors_total{runtime,reason}`.
    pub errors: IntCounterVec,
    /// `habitd_runtime_up{runtime}`: 1 while the runtime answers, 0 while it is down.
    pub up: IntGaugeVec,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeMetrics {
    /// Unregistered collectors (see [`Self::register`]).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        // The names and labels are constants: these cannot fail.
        let errors = IntCounterVec::new(
            Opts::new(
                "habitd_runtime_errors_total",
                "Failed requests to a container runtime, by runtime and reason (absent, \
                 unavailable, timeout, protocol, unimplemented, bad_answer).",
            ),
            &["runtime", "reason"],
        )
        .expect("valid metric");
        let up = IntGaugeVec::new(
            Opts::new(
                "habitd_runtime_up",
                "1 while a container runtime answers, 0 while it is down.",
            ),
            &["runtime"],
        )
        .expect("valid metric");
        Self { errors, up }
    }

    /// Registers the collectors in the daemon's registry.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.up.clone()))
    }

    /// Counts one error of `runtime`.
    pub fn count(&self, runtime: &str, error: &ResolveError) {
        self.errors
            .with_label_values(&[runtime, error.reason()])
            .inc();
    }
}

/// What the health of a runtime did on an outcome: the caller acts on transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The runtime answered again after being down.
    Recovered,
    /// The runtime went down, or down for another reason.
    Down,
}

#[derive(Debug)]
struct State {
    /// `None` while up; the reason of the last failure while down.
    down: Option<&'static str>,
    /// Consecutive failures (the back-off exponent).
    failures: u32,
    /// No attempt before this instant while down.
    next_attempt: Option<Instant>,
}

/// One runtime's health.
pub struct RuntimeHealth {
    runtime: String,
    state: Mutex<State>,
    metrics: RuntimeMetrics,
}

impl RuntimeHealth {
    /// A runtime presumed up until it fails.
    pub fn new(runtime: impl Into<String>, metrics: RuntimeMetrics) -> Self {
        let runtime = runtime.into();
        metrics.up.with_label_values(&[&runtime]).set(1);
        Self {
            runtime,
            state: Mutex::new(State {
                down: None,
                failures: 0,
                next_attempt: None,
            }),
            metrics,
        }
    }

    /// Whether the runtime may be asked now: it is up, or its back-off delay has passed.
    pub fn ready(&self, now: Instant) -> bool {
        lock(&self.state).next_attempt.is_none_or(|t| t <= now)
    }

    /// Whether the runtime is down.
    pub fn is_down(&self) -> bool {
        lock(&self.state).down.is_some()
    }

    /// Records an answer (any answer, "unknown container" included).
    pub fn succeeded(&self) -> Transition {
        let mut state = lock(&self.state);
        let was = state.down.take();
        state.failures = 0;
        state.next_attempt = None;
        drop(state);
        match was {
            None => Transition::None,
            Some(reason) => {
                self.metrics.up.with_label_values(&[&self.runtime]).set(1);
                tracing::info!(
                    message = "Container runtime answers again: describing its containers.",
                    runtime = %self.runtime,
                    was = reason
                );
                Transition::Recovered
            }
        }
    }

    /// Records a failure: counted always; a runtime failure (not a container's bad data)
    /// marks the runtime down and delays the next attempt, logged once per change of reason.
    pub fn failed(&self, error: &ResolveError) -> Transition {
        self.metrics.count(&self.runtime, error);
        if !error.is_runtime_failure() {
            tracing::warn!(
                message = "Container runtime described a container unusably.",
                runtime = %self.runtime,
                %error
            );
            return Transition::None;
        }
        let reason = error.reason();
        let mut state = lock(&self.state);
        state.failures = state.failures.saturating_add(1);
        let delay = backoff(state.failures);
        state.next_attempt = Some(Instant::now() + delay);
        let changed = state.down != Some(reason);
        state.down = Some(reason);
        drop(state);
        if !changed {
            tracing::debug!(message = "Container runtime still down.", runtime = %self.runtime, reason, %error, retry_in = ?delay);
            return Transition::None;
        }
        self.metrics.up.with_label_values(&[&self.runtime]).set(0);
        tracing::warn!(
            message = "Container runtime is down: its containers keep provisional keys until it \
                       answers again (retrying with back-off).",
            runtime = %self.runtime,
            reason,
            %error
        );
        Transition::Down
    }
}

/// The delay after `failures` consecutive failures: 0.5 s, 1 s, 2 s … at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn timeout() -> ResolveError {
        ResolveError::Timeout {
            endpoint: "x".into(),
            what: "y".into(),
            after: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[test]
    fn one_transition_per_state_change_and_every_error_counted() {
        let metrics = RuntimeMetrics::new();
        let h = RuntimeHealth::new("fake", metrics.clone());
        assert!(h.ready(Instant::now()));
        assert_eq!(h.failed(&timeout()), Transition::Down);
        assert_eq!(h.failed(&timeout()), Transition::None);
        assert!(h.is_down());
        assert!(!h.ready(Instant::now()), "backing off");
        assert_eq!(
            metrics.errors.with_label_values(&["fake", "timeout"]).get(),
            2
        );
        assert_eq!(metrics.up.with_label_values(&["fake"]).get(), 0);
        assert_eq!(h.succeeded(), Transition::Recovered);
        assert_eq!(h.succeeded(), Transition::None);
        assert!(h.ready(Instant::now()));
        assert_eq!(metrics.up.with_label_values(&["fake"]).get(), 1);
    }

    #[test]
    fn a_containers_bad_data_does_not_take_the_runtime_down() {
        let metrics = RuntimeMetrics::new();
        let h = RuntimeHealth::new("fake", metrics.clone());
        let bad = ResolveError::InvalidContainerId { id: "x".into() };
        assert_eq!(h.failed(&bad), Transition::None);
        assert!(!h.is_down());
        assert_eq!(
            metrics
                .errors
                .with_label_values(&["fake", "bad_answer"])
                .get(),
            1
        );
    }
}
