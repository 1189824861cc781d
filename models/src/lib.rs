//! Scoring models.
pub mod artifact;
pub mod calibrate;
pub mod novelty;
pub mod priority;
pub mod rate;
pub mod rules;
pub mod sequence;
