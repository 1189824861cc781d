//! Learning paused while the store cannot be written (a full disk), resumed when it can.
//!
//! sled accepts no write after one failed, and waits forever to flush when such a database
//! is closed: a failed write must not happen. So the engine stops writing before the disk is
//! full — when less than the reserve ([`Learning::store_reserve`]) is left on the data
//! directory's filesystem — and starts again when there is room. While paused nothing is
//! checkpointed or frozen: learning goes on in memory (a crash loses it, as it loses what
//! follows a checkpoint), detection is untouched (it reads only memory), and
//! `habitd_store_writable` is 0.
//!
//! If a write fails anyway (the disk filled faster than a checkpoint interval, an I/O error),
//! the store is done for this process: learning stays paused until habitd restarts (it says
//! so), detection goes on, and at shutdown habitd exits without closing the store (what was
//! flushed is recovered at the next start, as after a crash).
//!
//! [`Learning::store_reserve`]: crate::config::Learning

use std::path::Path;
use std::time::{Duration, SystemTime};

use habit_profiles::error::ProfileError;

use super::{Engine, Phase};

/// How often a paused store is looked at again.
pub const RETRY: Duration = Duration::from_secs(2);

/// Why and since when learning is paused.
pub(super) struct Paused {
    reason: String,
    since: SystemTime,
    retried: SystemTime,
    /// A write failed: sled takes no more writes in this process.
    failed: bool,
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn available(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether an error means the store cannot be written (as opposed to a bad value).
pub(super) fn is_store_failure(e: &ProfileError) -> bool {
    matches!(e, ProfileError::Store { .. })
}

impl Engine {
    /// The free bytes of the data directory's filesystem, when below the reserve.
    fn short_of_room(&self) -> Option<u64> {
        let free = available(self.store.path()?).ok()?;
        (free < self.config.store_reserve).then_some(free)
    }

    /// Whether the store may be written now. Pauses learning when the data directory has
    /// less than the reserve left.
    pub(super) fn store_writable(&mut self, now: SystemTime) -> bool {
        if self.paused.is_some() {
            return false;
        }
        match self.short_of_room() {
            Some(free) => {
                let reason = format!(
                    "{free} bytes free on the data directory's filesystem, less than the {} \
                     kept in reserve (learning.store_reserve)",
                    self.config.store_reserve
                );
                self.pause(reason, false, now);
                false
            }
            None => true,
        }
    }

    /// A write to the store failed: learning is paused until habitd restarts.
    pub(super) fn store_failed(&mut self, e: &ProfileError, now: SystemTime) {
        self.metrics.store_write_failures.inc();
        if !self.paused.as_ref().is_some_and(|p| p.failed) {
            let source = std::error::Error::source(e).map_or(String::new(), |s| format!(": {s}"));
            self.pause(format!("{e}{source}"), true, now);
        }
    }

    fn pause(&mut self, reason: String, failed: bool, now: SystemTime) {
        if failed {
            tracing::error!(
                message = "A write to the store failed: learning is paused until habitd \
                           restarts (the store takes no more writes in this process); detection \
                           goes on. Free space on the data directory and restart habitd.",
                data_dir = ?self.store.path(),
                reason
            );
        } else {
            tracing::error!(
                message = "The store cannot be written: learning is paused (nothing is \
                           checkpointed or frozen; detection goes on). It resumes when the disk \
                           has room again.",
                data_dir = ?self.store.path(),
                reason
            );
        }
        self.metrics.store_writable.set(0);
        self.paused = Some(Paused {
            reason,
            since: now,
            retried: now,
            failed,
        });
    }

    /// On the tick: a store paused for lack of room is looked at again every [`RETRY`]; with
    /// room again learning resumes, every learning workload written at the next checkpoint.
    pub(super) fn retry_store(&mut self, now: SystemTime) {
        let Some(paused) = &self.paused else {
            return;
        };
        if paused.failed || now.duration_since(paused.retried).unwrap_or_default() < RETRY {
            return;
        }
        if self.short_of_room().is_some() {
            if let Some(paused) = &mut self.paused {
                paused.retried = now;
            }
            return;
        }
        let Some(paused) = self.paused.take() else {
            return;
        };
        tracing::info!(
            message = "The store can be written again: learning resumed.",
            paused_secs = now.duration_since(paused.since).unwrap_or_default().as_secs(),
            was = %paused.reason
        );
        self.metrics.store_writable.set(1);
        for entry in self.workloads.values_mut() {
            if matches!(entry.phase, Phase::Learning { .. }) {
                entry.dirty = true;
            }
        }
    }

    /// Whether a write to the store failed: closing it would wait forever for a flush that
    /// cannot happen, so the daemon exits without closing it.
    pub fn store_failed_for_good(&self) -> bool {
        self.paused.as_ref().is_some_and(|p| p.failed)
    }
}
