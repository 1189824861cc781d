//! Events that wait for their container's description: a container's first events (its
//! entrypoint's exec, its first opens) come before any runtime has described it. They are held
//! per cgroup, in order, in a bounded buffer, and handled under the real workload once the
//! runtime answers; after a deadline they go on under the provisional key (neither learned nor
//! scored), and so does a cgroup whose events overflow the bound. The bound, the events held,
//! every overflow and the time to a description are metrics; overflows are logged.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use habit_probes::Event;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Bounds of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct PendingConfig {
    /// Most events held at once, all cgroups together.
    pub max_events: usize,
    /// Most events held for one cgroup.
    pub max_per_cgroup: usize,
    /// How long a cgroup's events wait for a description before going on provisionally.
    pub deadline: Duration,
}

impl Default for PendingConfig {
    fn default() -> Self {
        Self {
            max_events: 16_384,
            max_per_cgroup: 2_048,
            deadline: Duration::from_secs(10),
        }
    }
}

/// Why held events were let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The container was described: its events are handled under its workload.
    Described,
    /// The deadline passed: handled under the provisional key.
    Deadline,
    /// The bound was reached: handled under the provisional key.
    Overflow,
}

impl Release {
    fn label(self) -> &'static str {
        match self {
            Self::Described => "described",
            Self::Deadline => "deadline",
            Self::Overflow => "overflow",
        }
    }
}

struct Held {
    since: Instant,
    hint: Option<String>,
    events: VecDeque<Event>,
}

/// Metrics of the buffer.
#[derive(Clone)]
pub struct PendingMetrics {
    held: IntGauge,
    limit: IntGauge,
    released: IntCounterVec,
    wait: Histogram,
}

impl PendingMetrics {
    /// Unregistered collectors.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        // Constant names and labels: these cannot fail.
        let held = IntGauge::new(
            "habitd_pending_events",
            "Events held until their container is described.",
        )
        .expect("valid metric");
        let limit = IntGauge::new(
            "habitd_pending_events_limit",
            "Most events held at once until their container is described.",
        )
        .expect("valid metric");
        let released = IntCounterVec::new(
            Opts::new(
                "habitd_pending_events_released_total",
                "Held events let go, by why: described (handled under the container's \
                 workload), deadline or overflow (handled under the provisional key, not learned).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let wait = Histogram::with_opts(
            HistogramOpts::new(
                "habitd_pending_describe_seconds",
                "Time from a container's first held event to its description.",
            )
            .buckets(vec![
                0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        Self {
            held,
            limit,
            released,
            wait,
        }
    }

    /// Registers the collectors.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.held.clone()))?;
        registry.register(Box::new(self.limit.clone()))?;
        registry.register(Box::new(self.released.clone()))?;
        registry.register(Box::new(self.wait.clone()))
    }
}

/// Most cgroups remembered as past their deadline (cleared when full).
const MAX_GAVE_UP: usize = 65_536;

/// The buffer.
pub struct Pending {
    config: PendingConfig,
    cgroups: HashMap<u64, Held>,
    total: usize,
    /// Cgroups whose deadline passed or that overflowed: their events are not held again.
    gave_up: HashMap<u64, Instant>,
    metrics: PendingMetrics,
}

impl Pending {
    pub fn new(config: PendingConfig, metrics: PendingMetrics) -> Self {
        metrics.limit.set(config.max_events as i64);
        Self {
            config,
            cgroups: HashMap::new(),
            total: 0,
            gave_up: HashMap::new(),
            metrics,
        }
    }

    /// Whether events of this cgroup are being held (later ones must queue behind them).
    pub fn holds(&self, cgroup: u64) -> bool {
        self.cgroups.contains_key(&cgroup)
    }

    /// Whether this cgroup's events already went on provisionally (not held again).
    pub fn gave_up(&self, cgroup: u64) -> bool {
        self.gave_up.contains_key(&cgroup)
    }

    /// How many events are held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Holds an event. On overflow, the cgroup's held events and this one are returned, in
    /// order, to be handled under the provisional key at once.
    pub fn hold(&mut self, ev: &Event, hint: Option<&str>) -> Option<VecDeque<Event>> {
        let cgroup = ev.header.cgroup_id;
        let per_cgroup = self.cgroups.get(&cgroup).map_or(0, |h| h.events.len());
        if self.total >= self.config.max_events || per_cgroup >= self.config.max_per_cgroup {
            let mut events = self.take(cgroup, Release::Overflow);
            events.push_back(ev.clone());
            self.metrics
                .released
                .with_label_values(&[Release::Overflow.label()])
                .inc();
            tracing::warn!(
                message = "Too many events wait for their container's description: this \
                           container's first events go on unlearned under its provisional key.",
                cgroup,
                released = events.len(),
                held = self.total,
                limit = self.config.max_events,
                per_cgroup_limit = self.config.max_per_cgroup
            );
            return Some(events);
        }
        let held = self.cgroups.entry(cgroup).or_insert_with(|| Held {
            since: Instant::now(),
            hint: None,
            events: VecDeque::new(),
        });
        if held.hint.is_none() {
            held.hint = hint.map(str::to_owned);
        }
        held.events.push_back(ev.clone());
        self.total += 1;
        self.metrics.held.set(self.total as i64);
        None
    }

    /// The cgroups held, with the v1 cgroup name hint of their first exec (if any).
    pub fn cgroups(&self) -> Vec<(u64, Option<String>)> {
        self.cgroups
            .iter()
            .map(|(id, h)| (*id, h.hint.clone()))
            .collect()
    }

    /// Whether a held cgroup's deadline has passed.
    pub fn is_due(&self, cgroup: u64, now: Instant) -> bool {
        self.cgroups
            .get(&cgroup)
            .is_some_and(|h| now.duration_since(h.since) >= self.config.deadline)
    }

    /// Lets a cgroup's events go, in order.
    pub fn take(&mut self, cgroup: u64, why: Release) -> VecDeque<Event> {
        let Some(held) = self.cgroups.remove(&cgroup) else {
            if why != Release::Described {
                self.give_up(cgroup);
            }
            return VecDeque::new();
        };
        self.total -= held.events.len();
        self.metrics.held.set(self.total as i64);
        self.metrics
            .released
            .with_label_values(&[why.label()])
            .inc_by(held.events.len() as u64);
        match why {
            Release::Described => self
                .metrics
                .wait
                .observe(held.since.elapsed().as_secs_f64()),
            Release::Deadline | Release::Overflow => self.give_up(cgroup),
        }
        held.events
    }

    fn give_up(&mut self, cgroup: u64) {
        if self.gave_up.len() >= MAX_GAVE_UP {
            self.gave_up.clear();
        }
        self.gave_up.insert(cgroup, Instant::now());
    }

    /// Forgets that a cgroup gave up (it was described after all).
    pub fn described(&mut self, cgroup: u64) {
        self.gave_up.remove(&cgroup);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_probes::EventBody;
    use habit_probes::event::Header;

    fn ev(cgroup: u64, n: u32) -> Event {
        Event {
            header: Header {
                ts_boot_ns: u64::from(n),
                cpu: 0,
                pid: n,
                tgid: n,
                ppid: 1,
                uid: 0,
                gid: 0,
                mntns: 0,
                cgroup_id: cgroup,
                comm: "x".into(),
            },
            body: EventBody::Exit { status: 0 },
        }
    }

    fn config() -> PendingConfig {
        PendingConfig {
            max_events: 5,
            max_per_cgroup: 3,
            deadline: Duration::from_millis(30),
        }
    }

    #[test]
    fn events_are_held_in_order_and_released_once_described() {
        let metrics = PendingMetrics::new();
        let mut p = Pending::new(config(), metrics.clone());
        for n in 0..3 {
            assert!(p.hold(&ev(7, n), None).is_none());
        }
        assert!(p.holds(7));
        assert_eq!(p.len(), 3);
        assert_eq!(metrics.held.get(), 3);
        let out = p.take(7, Release::Described);
        let pids: Vec<u32> = out.iter().map(|e| e.header.pid).collect();
        assert_eq!(pids, [0, 1, 2]);
        assert_eq!((p.len(), metrics.held.get()), (0, 0));
        assert_eq!(metrics.released.with_label_values(&["described"]).get(), 3);
        assert_eq!(metrics.wait.get_sample_count(), 1);
        assert!(!p.gave_up(7));
    }

    #[test]
    fn overflow_releases_the_cgroup_in_order_and_counts() {
        let metrics = PendingMetrics::new();
        let mut p = Pending::new(config(), metrics.clone());
        for n in 0..3 {
            assert!(p.hold(&ev(1, n), None).is_none());
        }
        let out = p.hold(&ev(1, 3), None).unwrap();
        let pids: Vec<u32> = out.iter().map(|e| e.header.pid).collect();
        assert_eq!(pids, [0, 1, 2, 3], "held events first, then the new one");
        assert!(p.gave_up(1));
        assert_eq!(metrics.released.with_label_values(&["overflow"]).get(), 4);
        // The total bound too.
        for n in 0..3 {
            assert!(p.hold(&ev(2, n), None).is_none());
        }
        assert!(p.hold(&ev(3, 0), None).is_none());
        assert!(p.hold(&ev(3, 1), None).is_none());
        assert_eq!(p.len(), 5);
        let out = p.hold(&ev(4, 0), None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(metrics.held.get(), 5);
        assert_eq!(metrics.limit.get(), 5);
    }

    #[test]
    fn the_deadline_is_per_cgroup() {
        let mut p = Pending::new(config(), PendingMetrics::new());
        p.hold(&ev(1, 0), Some("hint")).unwrap_or_default();
        assert!(!p.is_due(1, Instant::now()));
        std::thread::sleep(Duration::from_millis(35));
        p.hold(&ev(2, 0), None);
        assert!(p.is_due(1, Instant::now()));
        assert!(!p.is_due(2, Instant::now()));
        assert_eq!(p.cgroups().len(), 2);
        assert!(p.cgroups().contains(&(1, Some("hint".into()))));
        let out = p.take(1, Release::Deadline);
        assert_eq!(out.len(), 1);
        assert!(p.gave_up(1));
        p.described(1);
        assert!(!p.gave_up(1));
    }
}
