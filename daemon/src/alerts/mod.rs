//! The alert side of the daemon: the alert record ([`alert`]), de-duplication of repeats
//! ([`aggregate`]) and delivery to stdout, a file or an HTTP endpoint ([`sinks`]).
//!
//! The three parts are independent so that each can be tested on its own: an [`Alert`] is plain
//! data, the [`Aggregator`] is pure and synchronous, and only [`AlertSinks`] does I/O. The order
//! in the daemon is scorer → `Alert::novelty` → `Aggregator::observe` → `AlertSinks::send`, with
//! a periodic `Aggregator::flush_due` for the summaries of repeats.

pub mod aggregate;
pub mod alert;
pub mod sinks;

pub use aggregate::Aggregator;
pub use alert::{Alert, HabitdFields, Novel};
pub use sinks::{AlertSinks, HttpOptions, SinkError, SinkOptions, SinkSpec};
