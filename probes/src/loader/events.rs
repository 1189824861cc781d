//! The event ring buffer (`habit_events`): the one channel on which records cross to user space.
//!
//! Only rare or novel events travel here (exec, network, privilege changes, first-seen opens and
//! sequences); this module turns what arrives into decoded [`Event`]s for the daemon's tokio
//! loop, so that the rest of habitd never touches raw records or the map's file descriptor.
//!
//! The ring is drained by a thread of its own, which only decodes and hands batches to the
//! daemon's loop through a bounded queue. While the loop is busy (a counters read over hundreds
//! of workloads, a runtime that answers slowly, a burst of execs to attribute), the kernel goes
//! on writing into a ring that is being emptied: under a burst on a busy machine the loop
//! reading the ring itself lost events to a full ring (burst_e2e), although it kept up on
//! average. The queue is bounded ([`QUEUED_BATCHES`]): when the loop truly cannot keep up, the
//! thread stops draining, the ring fills and the kernel counts every record it could not write,
//! so loss stays visible and exact.
//!
//! Wake-ups are batched: the kernel side wakes the reader only once [`wakeup_bytes`] are
//! waiting, and the reader otherwise reads every [`READ_EVERY`]. A busy server sends thousands of
//! records a second (sequence checkpoints of its scored threads, first opens); woken for each,
//! the reader cost the server an IPI and a context switch per record (measured: the largest
//! single cost of the probes under nginx, issue 13). A record now waits at most `READ_EVERY`.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;

use super::ProbeError;
use crate::decode::{DecodeError, decode};
use crate::event::Event;

/// Most records decoded into one batch, so that a flood cannot starve the daemon's other work.
const MAX_BATCH: usize = 4096;

/// Batches decoded ahead of the daemon's loop: at most this many times [`MAX_BATCH`] events wait
/// in memory (a few MiB in a flood, usually a handful of small batches).
const QUEUED_BATCHES: usize = 8;

/// How often the reader reads records that were submitted without waking it.
pub(crate) const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The bytes waiting in a ring buffer of `ring_bytes` that wake the reader at once: an eighth
/// of the ring, so that a burst wakes it long before the ring is full.
pub(super) fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8).max(1)
}

/// What the reader thread hands over: decoded events and the records that failed to decode.
struct Batch {
    events: Vec<Event>,
    errors: Vec<DecodeError>,
}

/// Stream of decoded events from the ring buffer, read by a thread of its own.
pub struct EventStream {
    batches: mpsc::Receiver<Batch>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    fd: i32,
}

impl EventStream {
    /// Starts the reader thread.
    pub(super) fn new(ring: RingBuf<MapData>) -> Result<Self, ProbeError> {
        let (tx, batches) = mpsc::channel(QUEUED_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let fd = ring.as_raw_fd();
        let reader = std::thread::Builder::new()
            .name("habitd-ring".into())
            .spawn({
                let stop = stop.clone();
                move || read_ring(ring, tx, &stop)
            })
            .map_err(ProbeError::Io)?;
        Ok(Self {
            batches,
            stop,
            reader: Some(reader),
            fd,
        })
    }

    /// Waits for the next decoded batch and moves its events into `out` (cleared first), at
    /// most `MAX_BATCH`. Records that failed to decode are passed to `on_error`.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        mut on_error: impl FnMut(DecodeError),
    ) -> Result<(), ProbeError> {
        out.clear();
        let batch = self.batches.recv().await.ok_or_else(|| {
            ProbeError::Io(std::io::Error::other("the ring-buffer reader stopped"))
        })?;
        batch.errors.into_iter().for_each(&mut on_error);
        *out = batch.events;
        Ok(())
    }

    /// Asks the reader to read everything the kernel has written so far and stop: the batches
    /// still to come are the last ones, then [`Self::next_batch`] fails. Called at shutdown once
    /// the programs are detached, so that no event they wrote is lost.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The ring buffer's file descriptor (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.fd
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Closed first, so that the reader's last sends fail at once instead of queueing.
        self.batches.close();
        // The reader notices within one READ_EVERY, or at once if it waits on a full queue.
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reader thread: waits for a wake-up or READ_EVERY, decodes everything available into
/// batches and queues them, until asked to stop (then it empties the ring first) or the stream
/// is dropped.
fn read_ring(mut ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>, stop: &AtomicBool) {
    let mut pollfd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = READ_EVERY.as_millis() as libc::c_int;
    loop {
        // Once asked to stop, the reader empties the ring before it returns: what the kernel
        // wrote before its programs were detached is handed over (`EventStream::finish`).
        let stopping = stop.load(Ordering::Acquire);
        let mut batch = Batch {
            events: Vec::new(),
            errors: Vec::new(),
        };
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(ev) => batch.events.push(ev),
                Err(e) => batch.errors.push(e),
            }
            if batch.events.len() >= MAX_BATCH {
                break;
            }
        }
        let full = batch.events.len() >= MAX_BATCH;
        if !(batch.events.is_empty() && batch.errors.is_empty()) && tx.blocking_send(batch).is_err()
        {
            return;
        }
        if stopping && !full {
            return;
        }
        if !full {
            // SAFETY: one valid pollfd for the ring's descriptor, which `ring` keeps open.
            unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        }
    }
}
