//! The event ring buffer (`habit_events`): the one channel on which records cross to user space.
//!
//! Only rare or novel events travel here (exec, network, privilege changes, first-seen opens and
//! sequences); this module turns what arrives into decoded [`Event`]s for the daemon's tokio
//! loop, so that the rest of habitd never touches raw records or the map's file descriptor.
//!
//! Wake-ups are batched: the kernel side wakes the reader only once [`wakeup_bytes`] are
//! waiting, and the reader otherwise reads every [`READ_EVERY`]. A busy server sends thousands of
//! records a second (sequence checkpoints of its scored threads, first opens); woken for each,
//! the reader cost the server an IPI and a context switch per record (measured: the largest
//! single cost of the probes under nginx, issue 13). A record now waits at most `READ_EVERY`.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::ProbeError;
use crate::decode::{DecodeError, decode};
use crate::event::Event;

/// Most records decoded into one batch, so that a flood cannot starve the daemon's other work.
const MAX_BATCH: usize = 4096;

/// How often the reader reads records that were submitted without waking it.
pub(crate) const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The bytes waiting in a ring buffer of `ring_bytes` that wake the reader at once: an eighth
/// of the ring, so that a burst wakes it long before the ring is full.
pub(super) fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8).max(1)
}

/// Async stream of decoded events from the ring buffer.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    /// Registers the ring buffer with the tokio reactor.
    pub(super) fn new(ring: RingBuf<MapData>) -> Result<Self, ProbeError> {
        // SAFETY: the RingBuf owns its map's file descriptor, which stays open and unchanged for
        // as long as the RingBuf (and so the AsyncFd that owns it) lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { ring })
    }

    /// Waits for records (a wake-up, or the next [`READ_EVERY`] tick), then decodes everything
    /// available into `out` (cleared first), at most `MAX_BATCH`. Records that fail to decode
    /// are passed to `on_error` and skipped.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        mut on_error: impl FnMut(DecodeError),
    ) -> Result<(), ProbeError> {
        out.clear();
        loop {
            let ring = self.ring.get_mut();
            while let Some(record) = ring.next() {
                match decode(&record) {
                    Ok(ev) => out.push(ev),
                    Err(e) => on_error(e),
                }
                if out.len() >= MAX_BATCH {
                    return Ok(());
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
            // Readiness is cleared before the next read, so a wake-up that comes after it is
            // not lost; the timer reads what was submitted without one.
            if let Ok(guard) = tokio::time::timeout(READ_EVERY, self.ring.readable_mut()).await {
                guard?.clear_ready();
            }
        }
    }

    /// The ring buffer's file descriptor (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}
