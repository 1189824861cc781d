//! The kernel contract: how a syscall n-gram becomes a 64-bit key.
//!
//! # The key
//!
//! Every thread keeps one `u64` of history. On every syscall the kernel shifts it left by
//! [`LANE_BITS`] (10) bits and puts the new syscall in the low lane:
//!
//! ```text
//! lane(nr)  = min(nr, 1022) + 1                 // 1..=1023; 0 means "no syscall yet"
//! history   = (history << 10) | lane(nr)
//! key       = history & ((1 << 60) - 1)         // the last ORDER = 6 lanes
//! ```
//!
//! The key of a 6-gram *is* the six syscalls, oldest in the highest lane: there is no hash
//! function, nothing to collide, and user space can decode any key the kernel sends back into
//! syscall numbers (and names, for alerts). Shorter grams are the low lanes of the same key
//! (`key & ((1 << 10k) - 1)` is the k-gram ending at the same syscall), so one history serves
//! every order the model uses. A thread's history starts at 0 (a new thread, and `execve`,
//! which starts a new program image) and the first five keys of a thread carry empty (0)
//! lanes: "this syscall came right at the start" is part of what the model learns.
//!
//! Syscall numbers 0..=1021 get their own lane value; anything larger (no Linux ABI has one
//! today: x86-64 and the generic table end below 500) shares lane 1023 ("other"). The caller
//! passes the number of the task's own ABI; a compat (32-bit) task on a 64-bit kernel numbers
//! differently, so the daemon keeps such tasks apart (see [`gram_keys`]).
//!
//! # Why lanes and not a hash (measured)
//!
//! The cost per syscall in BPF was measured once, while choosing, with `bpftool prog run` on
//! this kernel (6.18, JIT on), 1000 updates per run, 3 runs of 2000 repetitions, clang 14
//! `-O2` (the micro-benchmark programs are not in the repository; the whole sequence path is
//! measured by `cargo bench --bench overhead`, configurations `seq-learn` and `seq-detect`):
//!
//! | per syscall                                        | BPF insns | time        |
//! |----------------------------------------------------|-----------|-------------|
//! | loop overhead only                                 | —         | 0.52 ns     |
//! | packed 10-bit lanes (this contract)                | 11        | 1.07 ns     |
//! | FNV-1a 64 over the last 6 numbers as LE `u16`      | 66        | 3.5–3.9 ns  |
//!
//! Both are small next to the cost of an empty `tp_btf/sys_enter` program (+23 ns over no program), but the lanes
//! are 6× cheaper, need 8 bytes of task storage instead of 12 plus shifting, and above all are
//! invertible: an alert can name the unknown sequence without the kernel shipping it twice.
//!
//! # Why n = 6
//!
//! Measured on ADFA-LD (see the module documentation of [`crate::sequence`]): the language
//! model's ROC AUC is 0.822 at n = 3, 0.837 at 5, 0.842–0.843 at 6 and 7, 0.844–0.846 from 9
//! to 16; STIDE likewise flattens from n = 6 (0.827) on. Six lanes of 10 bits fit one `u64`
//! with room for syscall numbers up to 1021; seven would need 9-bit lanes (numbers up to 510,
//! uncomfortably close to x86-64's ~470) for no measurable gain.

/// Bits per syscall lane.
pub const LANE_BITS: u32 = 10;

/// The n of the n-grams: the number of lanes in a key.
pub const ORDER: usize = 6;

/// Mask of one lane.
pub const LANE_MASK: u64 = (1 << LANE_BITS) - 1;

/// The lane value shared by all syscall numbers above [`MAX_EXACT_NR`].
pub const OTHER_LANE: u64 = LANE_MASK;

/// The largest syscall number with a lane value of its own.
pub const MAX_EXACT_NR: u32 = (LANE_MASK - 2) as u32;

/// The mask of the low `k` lanes (the k-gram ending at the newest syscall). `k` is clamped
/// to [`ORDER`].
pub const fn order_mask(k: usize) -> u64 {
    let k = if k > ORDER { ORDER } else { k };
    if k == 0 {
        0
    } else {
        (1u64 << (LANE_BITS as usize * k)) - 1
    }
}

/// The mask of a full key (all [`ORDER`] lanes).
pub const KEY_MASK: u64 = order_mask(ORDER);

/// The lane value of a syscall number: `min(nr, 1022) + 1`.
pub const fn lane(nr: u32) -> u64 {
    if nr > MAX_EXACT_NR {
        OTHER_LANE
    } else {
        nr as u64 + 1
    }
}

/// The syscall number of a lane value: `None` for an empty lane, `Some(1022)` for the shared
/// "1022 or above" lane.
pub const fn lane_nr(lane: u64) -> Option<u32> {
    let lane = lane & LANE_MASK;
    if lane == 0 {
        None
    } else {
        Some((lane - 1) as u32)
    }
}

/// The per-thread history, exactly as the kernel keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GramHistory {
    history: u64,
}

impl GramHistory {
    /// An empty history (a new thread, or after `execve`).
    pub const fn new() -> Self {
        Self { history: 0 }
    }

    /// Records syscall `nr` and returns the key of the 6-gram that ends with it.
    pub fn push(&mut self, nr: u32) -> u64 {
        self.history = (self.history << LANE_BITS) | lane(nr);
        self.history & KEY_MASK
    }
}

/// The keys of a trace, one per syscall, computed as the kernel would for a thread that
/// started with the trace's first syscall.
///
/// A trace must come from one ABI: the numbers of a 32-bit task are not those of a 64-bit one.
pub fn gram_keys(trace: &[u32]) -> impl Iterator<Item = u64> + '_ {
    let mut history = GramHistory::new();
    trace.iter().map(move |&nr| history.push(nr))
}

/// The syscalls of a key, oldest first, without the empty lanes of a thread's first
/// syscalls. The number 1022 stands for "1022 or above".
pub fn decode(key: u64) -> Vec<u32> {
    (0..ORDER)
        .rev()
        .filter_map(|i| lane_nr(key >> (LANE_BITS as usize * i)))
        .collect()
}

/// The key of a gram given as syscall numbers, oldest first; fewer than [`ORDER`] numbers
/// mean a gram at the start of a thread (the inverse of [`decode`]). Only the last
/// [`ORDER`] numbers count.
pub fn encode(syscalls: &[u32]) -> u64 {
    syscalls
        .iter()
        .fold(0u64, |key, &nr| (key << LANE_BITS) | lane(nr))
        & KEY_MASK
}

/// The newest syscall's lane value of a key.
pub(crate) const fn last_lane(key: u64) -> u64 {
    key & LANE_MASK
}

/// The context (all but the newest syscall) of a k-gram key, as a (k−1)-gram key.
pub(crate) const fn context(key: u64, k: usize) -> u64 {
    (key & order_mask(k)) >> LANE_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documented test vectors: a kernel implementation must produce exactly these keys.
    #[test]
    fn test_vectors() {
        // read(0), write(1), open(2) from a fresh thread: lanes 1, 2, 3.
        let keys: Vec<u64> = gram_keys(&[0, 1, 2]).collect();
        assert_eq!(keys, vec![0x1, 0x402, 0x100803]);
        // Six syscalls fill the key; the seventh pushes the first out.
        let keys: Vec<u64> = gram_keys(&[3, 5, 6, 192, 197, 3, 4]).collect();
        // lanes 4, 6, 7, 193, 198, 4 -> 4<<50 | 6<<40 | 7<<30 | 193<<20 | 198<<10 | 4
        assert_eq!(keys[5], 0x0010_0601_CC13_1804);
        assert_eq!(keys[6], 0x0018_0730_4C60_1005);
        assert_eq!(
            keys[5],
            (4u64 << 50) | (6 << 40) | (7 << 30) | (193 << 20) | (198 << 10) | 4
        );
        assert_eq!(
            keys[6],
            (6u64 << 50) | (7 << 40) | (193 << 30) | (198 << 20) | (4 << 10) | 5
        );
        // Numbers above 1021 share the top lane value.
        assert_eq!(lane(1021), 1022);
        assert_eq!(lane(1022), 1023);
        assert_eq!(lane(u32::MAX), 1023);
        assert_eq!(gram_keys(&[u32::MAX]).next(), Some(0x3ff));
    }

    #[test]
    fn keys_never_exceed_sixty_bits() {
        let trace = vec![u32::MAX; 20];
        assert!(gram_keys(&trace).all(|key| key <= KEY_MASK));
        assert!(gram_keys(&trace).skip(ORDER - 1).all(|key| key == KEY_MASK));
    }

    #[test]
    fn decode_inverts_encode() {
        for gram in [
            vec![],
            vec![0],
            vec![59, 0],
            vec![3, 5, 6, 192, 197, 3],
            vec![1021, 0, 1, 2, 3, 4],
        ] {
            assert_eq!(decode(encode(&gram)), gram);
        }
        assert_eq!(
            decode(encode(&[1, 2, 3, 4, 5, 6, 7])),
            vec![2, 3, 4, 5, 6, 7]
        );
        assert_eq!(decode(lane(5000)), vec![1022]);
    }

    #[test]
    fn shorter_grams_are_low_lanes() {
        let keys: Vec<u64> = gram_keys(&[10, 11, 12, 13, 14, 15, 16]).collect();
        let last = keys[6];
        assert_eq!(decode(last & order_mask(3)), vec![14, 15, 16]);
        assert_eq!(decode(context(last, 3)), vec![14, 15]);
        assert_eq!(lane_nr(last_lane(last)), Some(16));
        assert_eq!(order_mask(0), 0);
        assert_eq!(order_mask(9), KEY_MASK);
    }

    #[test]
    fn history_matches_keys() {
        let trace = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut history = GramHistory::new();
        let pushed: Vec<u64> = trace.iter().map(|&nr| history.push(nr)).collect();
        assert_eq!(pushed, gram_keys(&trace).collect::<Vec<_>>());
    }
}
