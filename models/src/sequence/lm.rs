//! An interpolated Kneser–Ney language model over gram keys.
//!
//! Everything here is derived from one table: how often each 6-gram key was seen. Lower
//! orders use Kneser–Ney *continuation* counts (in how many distinct contexts a shorter gram
//! occurred), which only need the set of distinct keys; the top order and the background
//! order use real counts, which are marginals of the 6-gram counts because every syscall of
//! a trace has a full 6-lane key (the first ones with empty lanes). So a model is stored as
//! its 6-gram counts alone (small, reviewable, and mergeable by adding counts) and these
//! tables are rebuilt when it is loaded.

use std::collections::HashMap;

use ahash::RandomState;

use super::gram::{ORDER, context, last_lane, order_mask};

/// Keyed (per-process random) hashing: keys are syscall sequences that a hostile process
/// chooses, so it must not be able to make them collide and slow the maps down.
type Map<V> = HashMap<u64, V, RandomState>;

fn map<V>() -> Map<V> {
    HashMap::with_hasher(RandomState::new())
}

/// The counts of one order and the totals of its contexts.
#[derive(Debug, Clone)]
struct Level {
    /// Count of each k-gram (real or continuation).
    counts: Map<u64>,
    /// Per (k−1)-gram context: (sum of the counts of its k-grams, number of distinct k-grams).
    contexts: Map<(u64, u64)>,
    /// Absolute discount, `n1 / (n1 + 2·n2)` (Ney's estimate), clamped to 0.1..=0.95.
    discount: f64,
}

impl Level {
    fn new(counts: Map<u64>, k: usize) -> Self {
        let mut contexts: Map<(u64, u64)> = map();
        let (mut n1, mut n2) = (0u64, 0u64);
        for (&gram, &count) in &counts {
            let entry = contexts.entry(context(gram, k)).or_insert((0, 0));
            entry.0 = entry.0.saturating_add(count);
            entry.1 = entry.1.saturating_add(1);
            match count {
                1 => n1 += 1,
                2 => n2 += 1,
                _ => {}
            }
        }
        let discount = if n1 + n2 == 0 {
            0.5
        } else {
            (n1 as f64 / (n1 as f64 + 2.0 * n2 as f64)).clamp(0.1, 0.95)
        };
        Self {
            counts,
            contexts,
            discount,
        }
    }

    /// `P_k(gram)` interpolated with the lower order's probability `lower`; a context never
    /// seen backs off to `lower` entirely.
    fn interpolate(&self, gram: u64, k: usize, lower: f64) -> f64 {
        let Some(&(total, types)) = self.contexts.get(&context(gram, k)) else {
            return lower;
        };
        if total == 0 {
            return lower;
        }
        let count = self.counts.get(&gram).copied().unwrap_or(0) as f64;
        let total = total as f64;
        (count - self.discount).max(0.0) / total + self.discount * types as f64 / total * lower
    }
}

/// The probability tables of a model.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    /// Orders 1..=ORDER at index k − 1.
    levels: Vec<Level>,
    /// The background order (real counts), if any.
    background: Option<(usize, Level)>,
    /// Size of the base (uniform) distribution: distinct syscall lanes seen, plus one for
    /// everything never seen.
    vocabulary: f64,
}

impl Tables {
    /// Builds the tables from 6-gram counts. `background_order` in `1..=ORDER` adds a
    /// background model of that order; 0 means none.
    pub(crate) fn build<'a>(
        grams: impl IntoIterator<Item = (&'a u64, &'a u64)>,
        background_order: usize,
    ) -> Self {
        let mut top: Map<u64> = map();
        for (&key, &count) in grams {
            if count > 0 {
                let entry = top.entry(key & order_mask(ORDER)).or_insert(0);
                *entry = entry.saturating_add(count);
            }
        }
        // Continuation counts of order k < ORDER: the number of distinct (k+1)-grams that end
        // with the k-gram. Distinct (k+1)-grams are the (k+1)-suffixes of the distinct keys.
        let mut levels_rev: Vec<Level> = Vec::with_capacity(ORDER);
        let mut distinct_above: Vec<u64> = top.keys().copied().collect();
        for k in (1..ORDER).rev() {
            let mut above: Vec<u64> = distinct_above
                .iter()
                .map(|&key| key & order_mask(k + 1))
                .collect();
            above.sort_unstable();
            above.dedup();
            let mut counts: Map<u64> = map();
            for &gram in &above {
                *counts.entry(gram & order_mask(k)).or_insert(0) += 1;
            }
            levels_rev.push(Level::new(counts, k));
            distinct_above = above;
        }
        levels_rev.reverse();
        let vocabulary = levels_rev
            .first()
            .map_or(0, |level| level.counts.len())
            .saturating_add(1) as f64;
        let background = (1..=ORDER).contains(&background_order).then(|| {
            let mut counts: Map<u64> = map();
            for (&key, &count) in &top {
                let entry = counts
                    .entry(key & order_mask(background_order))
                    .or_insert(0);
                *entry = entry.saturating_add(count);
            }
            (background_order, Level::new(counts, background_order))
        });
        levels_rev.push(Level::new(top, ORDER));
        Self {
            levels: levels_rev,
            background,
            vocabulary,
        }
    }

    /// `(P(newest | 5 before), P_background(newest | background_order − 1 before))` of a
    /// key; the second is `None` without a background model. Both are > 0.
    pub(crate) fn probabilities(&self, key: u64) -> (f64, Option<f64>) {
        let mut p = 1.0 / self.vocabulary;
        let mut background = None;
        for (i, level) in self.levels.iter().enumerate() {
            let k = i + 1;
            if let Some((order, bg)) = &self.background
                && *order == k
            {
                background = Some(bg.interpolate(key & order_mask(k), k, p));
            }
            p = level.interpolate(key & order_mask(k), k, p);
        }
        (p, background)
    }

    /// Whether the full 6-gram was seen in training.
    pub(crate) fn is_known(&self, key: u64) -> bool {
        self.levels
            .last()
            .is_some_and(|top| top.counts.contains_key(&(key & order_mask(ORDER))))
    }

    /// Whether the newest syscall of the key was ever seen.
    pub(crate) fn knows_syscall(&self, key: u64) -> bool {
        self.levels
            .first()
            .is_some_and(|unigram| unigram.counts.contains_key(&last_lane(key)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::gram::gram_keys;
    use super::*;

    fn counts(traces: &[&[u32]]) -> BTreeMap<u64, u64> {
        let mut counts = BTreeMap::new();
        for trace in traces {
            for key in gram_keys(trace) {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn probabilities_are_distributions() {
        let c = counts(&[&[1, 2, 3, 1, 2, 3, 1, 2, 4], &[1, 2, 3, 5, 1, 2]]);
        let tables = Tables::build(&c, 3);
        // Whatever the context (seen or not), the probabilities of the next syscall over the
        // seen syscalls plus one never-seen one (which stands for all of them) sum to one.
        for prefix in [&[1u32, 2][..], &[1, 2, 3, 1, 2], &[9, 9], &[]] {
            let mut sum = 0.0;
            let mut sum_bg = 0.0;
            for next in [1u32, 2, 3, 4, 5, 77] {
                let mut trace = prefix.to_vec();
                trace.push(next);
                let key = gram_keys(&trace).last().unwrap_or(0);
                let (p, bg) = tables.probabilities(key);
                assert!(p > 0.0);
                sum += p;
                sum_bg += bg.unwrap_or(0.0);
            }
            assert!((sum - 1.0).abs() < 1e-9, "{prefix:?}: {sum}");
            assert!((sum_bg - 1.0).abs() < 1e-9, "{prefix:?}: {sum_bg}");
        }
    }

    #[test]
    fn known_continuations_are_likely() {
        let c = counts(&[&[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]]);
        let tables = Tables::build(&c, 0);
        let likely = gram_keys(&[1, 2, 3, 1, 2, 3]).last().unwrap_or(0);
        let unlikely = gram_keys(&[1, 2, 3, 1, 2, 1]).last().unwrap_or(0);
        let (p_likely, bg) = tables.probabilities(likely);
        let (p_unlikely, _) = tables.probabilities(unlikely);
        assert!(bg.is_none());
        assert!(p_likely > 0.5, "{p_likely}");
        assert!(p_unlikely < 0.2, "{p_unlikely}");
        assert!(tables.is_known(likely));
        assert!(!tables.is_known(unlikely));
        assert!(tables.knows_syscall(unlikely));
        assert!(!tables.knows_syscall(gram_keys(&[7]).last().unwrap_or(0)));
    }
}
