//! Learning paused while the store cannot be written (a full disk), resumed when it can.
//!
//! sled accepts no write after one failed until it is reopened, so the engine stops writing
//! before that happens (less than [`MIN_FREE_BYTES`] left on the data directory's filesystem)
//! and also when a write failed anyway. While paused nothing is checkpointed or frozen:
//! learning goes on in memory (a crash loses it, as it loses what follows a checkpoint),
//! detection is untouched (it reads only memory), and `habitd_store_writable` is 0. Every
//! [`RETRY`] the engine looks again; when there is room it reopens the store (recovering what
//! was flushed, as after a crash) and marks every learning workload to be written at the next
//! checkpoint.

use std::path::Path;
use std::time::{Duration, SystemTime};

use habit_profiles::error::ProfileError;

use super::{Engine, Phase};

/// Free space below which the store is not written: room for sled's buffers and a few
/// checkpoints, so that a disk filling up pauses learning before sled fails a write.
pub const MIN_FREE_BYTES: u64 = 4 << 20;
/// How often a paused store is looked at again.
pub const RETRY: Duration = Duration::from_secs(2);

/// Why and since when learning is paused.
pub(super) struct Paused {
    reason: String,
    since: SystemTime,
    retried: SystemTime,
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn available(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether an error means the store cannot be written (as opposed to a bad value).
pub(super) fn is_store_failure(e: &ProfileError) -> bool {
    matches!(e, ProfileError::Store { .. } | ProfileError::Closed)
}

impl Engine {
    /// Whether the store may be written now. Pauses learning when the data directory has
    /// less than [`MIN_FREE_BYTES`] left.
    pub(super) fn store_writable(&mut self, now: SystemTime) -> bool {
        if self.paused.is_some() {
            return false;
        }
        match self.store.path().map(available) {
            Some(Ok(free)) if free < MIN_FREE_BYTES => {
                self.pause(
                    format!(
                        "{free} bytes free on the data directory's filesystem, less than the \
                         {MIN_FREE_BYTES} kept in reserve"
                    ),
                    now,
                );
                false
            }
            _ => true,
        }
    }

    /// A write to the store failed: pauses learning.
    pub(super) fn store_failed(&mut self, e: &ProfileError, now: SystemTime) {
        self.metrics.store_write_failures.inc();
        if self.paused.is_none() {
            let source = std::error::Error::source(e).map_or(String::new(), |s| format!(": {s}"));
            self.pause(format!("{e}{source}"), now);
        }
    }

    fn pause(&mut self, reason: String, now: SystemTime) {
        tracing::error!(
            message = "The store cannot be written: learning is paused (nothing is checkpointed \
                       or frozen; detection goes on). It resumes when the disk has room again.",
            data_dir = ?self.store.path(),
            reason
        );
        self.metrics.store_writable.set(0);
        self.paused = Some(Paused {
            reason,
            since: now,
            retried: now,
        });
    }

    /// On the tick: a paused store is looked at again every [`RETRY`]; with room again it is
    /// reopened and learning resumes.
    pub(super) fn retry_store(&mut self, now: SystemTime) {
        let Some(paused) = &mut self.paused else {
            return;
        };
        if now.duration_since(paused.retried).unwrap_or_default() < RETRY {
            return;
        }
        paused.retried = now;
        if let Some(dir) = self.store.path()
            && !available(dir).is_ok_and(|free| free >= MIN_FREE_BYTES)
        {
            return;
        }
        if let Err(e) = self.store.reopen() {
            tracing::warn!(message = "The store cannot be reopened yet.", %e);
            return;
        }
        let paused_for = now.duration_since(paused.since).unwrap_or_default();
        tracing::info!(
            message = "The store can be written again: learning resumed.",
            paused_secs = paused_for.as_secs(),
            was = %paused.reason
        );
        self.paused = None;
        self.metrics.store_writable.set(1);
        for entry in self.workloads.values_mut() {
            if matches!(entry.phase, Phase::Learning { .. }) {
                entry.dirty = true;
            }
        }
    }
}
