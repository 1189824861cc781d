//! The one Falco view of an attributed event: Falco's field names and values, read by rules
//! field by field ([`fields`]: the mapping and the list of supplied fields) and rendered from
//! the same answers as the JSON of alerts and printed events ([`output`]).

pub mod fields;
pub mod output;

#[cfg(test)]
pub mod fixture;
#[cfg(test)]
mod tests;
