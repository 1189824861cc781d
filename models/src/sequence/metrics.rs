//! Detection metrics of an offline evaluation: ROC AUC and detection rate at a false-alarm
//! rate, both computed from scores where higher means more anomalous.

use super::model::quantile_threshold;

/// ROC AUC: the probability that a random attack scores above a random normal trace, ties
/// counting one half (the Mann–Whitney U statistic over `normal.len() · attack.len()`), so
/// that a constant scorer gets exactly 0.5. `None` if either side is empty or a score is NaN.
pub fn roc_auc(normal: &[f64], attack: &[f64]) -> Option<f64> {
    if normal.is_empty() || attack.is_empty() || normal.iter().chain(attack).any(|s| s.is_nan()) {
        return None;
    }
    let mut all: Vec<(f64, bool)> = normal
        .iter()
        .map(|&s| (s, false))
        .chain(attack.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (1-based, tie-averaged) ranks of the attacks, one group of equal scores at
    // a time.
    let mut rank_sum = 0.0;
    let mut start = 0usize;
    for group in all.chunk_by(|x, y| x.0 == y.0) {
        let end = start + group.len();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * group.iter().filter(|x| x.1).count() as f64;
        start = end;
    }
    let (n, a) = (normal.len() as f64, attack.len() as f64);
    Some((rank_sum - a * (a + 1.0) / 2.0) / (n * a))
}

/// The detection rate at a false-alarm rate: the threshold is the `1 − rate` quantile of the
/// normal scores (at most `rate` of them lie strictly above it) and an attack is detected if
/// it scores strictly above. `None` if either side is empty.
pub fn detection_rate(normal: &[f64], attack: &[f64], false_alarm_rate: f64) -> Option<f64> {
    if normal.is_empty() || attack.is_empty() {
        return None;
    }
    let threshold = threshold_at(normal, false_alarm_rate);
    let detected = attack.iter().filter(|&&s| s > threshold).count();
    Some(detected as f64 / attack.len() as f64)
}

/// The threshold at which at most `false_alarm_rate` of `normal` lie strictly above.
pub fn threshold_at(normal: &[f64], false_alarm_rate: f64) -> f64 {
    let mut sorted = normal.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile_threshold(&sorted, false_alarm_rate)
}

/// The fraction of `scores` strictly above `threshold` (0 for none).
pub fn rate_above(scores: &[f64], threshold: f64) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|&&s| s > threshold).count() as f64 / scores.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn auc_of_known_examples() {
        // Perfect separation, perfect inversion.
        assert!(close(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 1.0));
        assert!(close(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 0.0));
        // A constant scorer: all ties, exactly one half.
        assert!(close(roc_auc(&[1.0; 5], &[1.0; 3]), 0.5));
        // Pairs: (a=2 vs n=1) win, (2 vs 3) loss, (4 vs 1) win, (4 vs 3) win -> 3/4.
        assert!(close(roc_auc(&[1.0, 3.0], &[2.0, 4.0]), 0.75));
        // Ties count one half: a=2 vs n={1,2,3}: 1 + 0.5 + 0 = 1.5 of 3.
        assert!(close(roc_auc(&[1.0, 2.0, 3.0], &[2.0]), 0.5));
        // a={2,2} vs n={2,1}: each attack: 0.5 + 1 -> 3 of 4.
        assert!(close(roc_auc(&[2.0, 1.0], &[2.0, 2.0]), 0.75));
        assert!(roc_auc(&[], &[1.0]).is_none());
        assert!(roc_auc(&[f64::NAN], &[1.0]).is_none());
    }

    #[test]
    fn detection_rate_uses_normal_quantile() {
        let normal: Vec<f64> = (1..=100).map(f64::from).collect();
        // 5 % of 100 normals may alarm: threshold 95, only scores above it count.
        assert_eq!(threshold_at(&normal, 0.05), 95.0);
        let attack = [95.0, 95.5, 100.0, 200.0, 1.0];
        assert!(close(detection_rate(&normal, &attack, 0.05), 3.0 / 5.0));
        assert!(close(detection_rate(&normal, &attack, 0.01), 2.0 / 5.0));
        assert_eq!(rate_above(&normal, 95.0), 0.05);
        // Ties at the threshold never alarm, so the false-alarm rate holds.
        let tied = [1.0; 50];
        assert!(close(detection_rate(&tied, &[1.0, 2.0], 0.05), 0.5));
        assert!(detection_rate(&[], &[1.0], 0.05).is_none());
    }
}
