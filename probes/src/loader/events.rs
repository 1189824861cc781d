//! The event ring buffer (`habit_events`): the one channel on which records cross to user space.
//!
//! Only rare or novel events travel here (exec, network, privilege changes, first-seen opens and
//! sequences); this module turns what arrives into decoded [`Event`]s for the daemon's tokio
//! loop, so that the rest of habitd never touches raw records or the map's file descriptor.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::ProbeError;
use crate::decode::{DecodeError, decode};
use crate::event::Event;

/// Most records decoded into one batch, so that a flood cannot starve the daemon's other work.
const MAX_BATCH: usize = 4096;

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

    /// Waits for records, then decodes everything available into `out` (cleared first).
    /// Records that fail to decode are passed to `on_error` and skipped.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        mut on_error: impl FnMut(DecodeError),
    ) -> Result<(), ProbeError> {
        out.clear();
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(record) = ring.next() {
                match decode(&record) {
                    Ok(ev) => out.push(ev),
                    Err(e) => on_error(e),
                }
                if out.len() >= MAX_BATCH {
                    return Ok(());
                }
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// The ring buffer's file descriptor (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}
