//! `--print-events`: every attributed event as one JSON line on standard output.
//!
//! Lines are appended to one buffer and written whole, when it reaches [`FLUSH_AT`] and at the
//! end of every batch: one write per batch instead of one per event on a busy host, and another
//! writer of standard output (the `stdout` alert sink) never finds half a line before its own.
//! A write that fails loses the lines of the buffer: they are counted
//! (`habitd_printed_events_dropped_total`) and logged at most once a minute, never silently.

use std::io::Write;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::falco::fields::RuleEvent;
use crate::metrics::RateLimitedLog;

/// Bytes of printed lines that start a write before the batch ends.
const FLUSH_AT: usize = 64 * 1024;

/// The printer of `--print-events`.
pub struct EventPrinter {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    dropped: IntCounter,
    log: RateLimitedLog,
}

impl EventPrinter {
    /// Prints to `out`; lines lost to failed writes are counted in `dropped`.
    pub fn new(out: Box<dyn Write + Send>, dropped: IntCounter) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            lines: 0,
            dropped,
            log: RateLimitedLog::new(Duration::from_secs(60)),
        }
    }

    /// Appends the event's line; writes the buffer once it is large.
    pub fn print(&mut self, view: &RuleEvent<'_>) {
        view.write_json_line(&mut self.buf);
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes every buffered line.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        if let Err(e) = result {
            self.dropped.inc_by(self.lines);
            if let Some(n) = self.log.due(Instant::now(), self.lines) {
                tracing::warn!(
                    message = "Failed to print events; see habitd_printed_events_dropped_total.",
                    lost = n,
                    %e
                );
            }
        }
        self.buf.clear();
        self.lines = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::falco::fixture::Fixture;

    /// A writer that keeps what it is given, or fails.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<Vec<u8>>>>,
        fail: bool,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.fail {
                return Err(std::io::Error::other("closed"));
            }
            self.written.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_whole_and_failed_ones_counted() {
        let fx = Fixture::new();
        let sink = Sink::default();
        let dropped = IntCounter::new("d", "d").unwrap();
        let mut printer = EventPrinter::new(Box::new(sink.clone()), dropped.clone());
        let mut events = 0;
        for _ in 0..200 {
            fx.each(|_, view| {
                printer.print(view);
                events += 1;
            });
        }
        printer.flush();
        let writes = sink.written.lock().unwrap().clone();
        assert!(writes.len() > 1, "{} writes", writes.len());
        assert!(writes.len() < events / 10, "{} writes", writes.len());
        let mut lines = 0;
        for w in &writes {
            assert_eq!(w.last(), Some(&b'\n'), "a write ends a line");
            for line in w.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<serde_json::Value>(line).unwrap();
                lines += 1;
            }
        }
        assert_eq!(lines, events);
        assert_eq!(dropped.get(), 0);

        let failing = Sink {
            fail: true,
            ..Sink::default()
        };
        let mut printer = EventPrinter::new(Box::new(failing), dropped.clone());
        let mut events = 0;
        fx.each(|_, view| {
            printer.print(view);
            events += 1;
        });
        printer.flush();
        assert_eq!(dropped.get(), events);
    }
}
