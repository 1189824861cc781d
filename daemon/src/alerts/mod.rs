//! The alert side of the daemon: the alert record ([`alert`]), de-duplication of repeats
//! ([`aggregate`]), delivery to stdout, a file or an HTTP endpoint ([`sinks`]), and the
//! daemon's one entry point that ties them together ([`Alerting`], in `dispatch`).
//!
//! The three parts are independent so that each can be tested on its own: an [`alert::Alert`] is plain
//! data, the [`aggregate::Aggregator`] is pure and synchronous, and only [`sinks::AlertSinks`] does I/O. The order
//! in the daemon is scorer → `Alert::novelty` → `Aggregator::observe` → `AlertSinks::send`, with
//! a periodic `Aggregator::flush_due` for the summaries of repeats.

pub mod aggregate;
pub mod alert;
mod dispatch;
pub mod sinks;

pub use dispatch::Alerting;
