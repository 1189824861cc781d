//! STIDE (Forrest et al. 1996; Warrender et al. 1999), the reference: a trace's score is the
//! fraction of its 6-grams never seen in training.
//!
//! It runs on the same keys as the habitd model ([`super::gram`]), so the comparison is about
//! the scoring, not the n-gram extraction. The first five keys of a trace carry empty lanes
//! ("near the start"), which classic STIDE, sliding a full window only, does not have; on
//! ADFA-LD that changes its ROC AUC by less than 0.003.

use std::collections::HashSet;

use ahash::RandomState;

use super::TraceScorer;
use super::gram::{KEY_MASK, gram_keys};

/// The set of known 6-grams.
#[derive(Debug, Clone)]
pub struct Stide {
    known: HashSet<u64, RandomState>,
}

impl Stide {
    /// Learns the 6-grams of normal traces.
    pub fn train<T: AsRef<[u32]>>(traces: &[T]) -> Self {
        let mut known = HashSet::with_hasher(RandomState::new());
        for trace in traces {
            known.extend(gram_keys(trace.as_ref()));
        }
        Self { known }
    }

    /// Number of distinct known 6-grams.
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Whether a key is known.
    pub fn is_known(&self, key: u64) -> bool {
        self.known.contains(&(key & KEY_MASK))
    }

    /// The fraction of the trace's 6-grams that are unknown (0 for an empty trace).
    pub fn score_trace(&self, trace: &[u32]) -> f64 {
        if trace.is_empty() {
            return 0.0;
        }
        let unknown = gram_keys(trace).filter(|key| !self.is_known(*key)).count();
        unknown as f64 / trace.len() as f64
    }
}

impl TraceScorer for Stide {
    fn name(&self) -> &'static str {
        "stide"
    }

    fn score_trace(&self, trace: &[u32]) -> f64 {
        Stide::score_trace(self, trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_of_unknown_grams() {
        let stide = Stide::train(&[vec![1u32, 2, 3, 4, 5, 6, 7, 8]]);
        assert_eq!(stide.known_len(), 8);
        assert_eq!(stide.score_trace(&[1, 2, 3, 4, 5, 6, 7, 8]), 0.0);
        assert_eq!(stide.score_trace(&[]), 0.0);
        // Starting mid-way: every key differs from the learned ones (other start lanes).
        assert_eq!(stide.score_trace(&[2, 3]), 1.0);
        // One changed syscall at the end: one unknown key out of eight.
        assert_eq!(stide.score_trace(&[1, 2, 3, 4, 5, 6, 7, 9]), 1.0 / 8.0);
    }
}
