//! The Falco view of an attributed event: Falco's field names and values, for rule matching
//! ([`fields`]) and for the JSON of events and alerts ([`output`]).

pub mod fields;
pub mod output;
