//! Writes the generated part of the seed corpora under `fuzz/seeds/`: baseline files frozen from
//! profiles (what `habitctl baseline export` writes), ring-buffer records laid out as the kernel
//! programs write them, and the default config. Rules seeds are snippets of real rules files,
//! kept as files. Run from `fuzz/`: `cargo +nightly run --example make_seeds`.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use habit_probes::abi;
use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{FileMode, Observation, Proto};
use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
use habit_profiles::workload::WorkloadKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds = Path::new("seeds");
    for (name, bytes) in records() {
        write(&seeds.join("decode"), name, &bytes)?;
    }
    for (name, text) in baselines()? {
        write(&seeds.join("baseline"), name, text.as_bytes())?;
    }
    write(
        &seeds.join("config"),
        "default.toml",
        habitd::default_toml()?.as_bytes(),
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

/// Two exported baselines: a small one and one with every dimension.
fn baselines() -> Result<Vec<(&'static str, String)>, Box<dyn std::error::Error>> {
    let here = Provenance::new("node-a", Some("3ad7c1e2b9f0"));
    let mut small = Profile::new(
        WorkloadKey::from_raw("docker.io/library/redis:7"),
        "node-a",
        0,
        ProfileConfig::default(),
    );
    let _ = small.observe(&Observation::exec("/usr/bin/redis-server"), 1_000, &here);
    let mut full = Profile::new(
        WorkloadKey::from_raw("docker.io/library/nginx:1.25"),
        "node-a",
        0,
        ProfileConfig::default(),
    );
    let observations = [
        Observation::exec("/usr/sbin/nginx"),
        Observation::process_edge("/usr/sbin/nginx", "/bin/sh"),
        Observation::args("/bin/sh", &["sh", "-c", "/docker-entrypoint.sh"]),
        Observation::file("/etc/nginx/nginx.conf", FileMode::Read),
        Observation::file("/var/log/nginx/access.log", FileMode::Write),
        Observation::file("/tmp/nginx-1234/cache.tmp", FileMode::Write),
        Observation::listen(80, Proto::Tcp),
        Observation::inbound(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            40_000,
            80,
            Proto::Tcp,
        ),
        Observation::outbound(IpAddr::V6(Ipv6Addr::LOCALHOST), 6379, Proto::Tcp),
        Observation::outbound(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53, Proto::Udp),
        Observation::syscall("openat"),
        Observation::syscall("accept4"),
        Observation::privileged("setuid", Some("101")),
    ];
    for (i, o) in observations.iter().enumerate() {
        let _ = full.observe(o, 1_000 + i as u64 * 100, &here);
    }
    Ok(vec![
        (
            "redis.json",
            Baseline::freeze(&small, 600_000, false).to_json_pretty()?,
        ),
        (
            "nginx.json",
            Baseline::freeze(&full, 600_000, false).to_json_pretty()?,
        ),
        (
            "nginx-partial.json",
            Baseline::freeze(&full, 600_000, true).to_json_pretty()?,
        ),
    ])
}

/// The bytes of a record as the ring buffer delivers them.
fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: the ABI structs are plain data without implicit padding (events.h spells every
    // hole as a `_pad` field), so all size_of::<T>() bytes are initialised.
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut buf = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    buf[..n].copy_from_slice(&s[..n]);
    buf
}

fn hdr(kind: u32, comm: &str) -> abi::Hdr {
    abi::Hdr {
        kind,
        cpu: 1,
        ts_ns: 1_234_567_890_123,
        pid: 48_213,
        tgid: 48_213,
        ppid: 48_190,
        uid: 1000,
        gid: 1000,
        mntns: 4_026_532_841,
        cgroup_id: 9_876,
        comm: fixed(comm.as_bytes()),
    }
}

fn sockaddr(family: i32, addr: &[u8], port: u16) -> abi::SockAddr {
    let mut bytes = [0u8; 16];
    bytes[..addr.len()].copy_from_slice(addr);
    abi::SockAddr {
        family: family as u16,
        port,
        scope: 0,
        addr: bytes,
    }
}

fn records() -> Vec<(&'static str, Vec<u8>)> {
    let argv: Vec<u8> = ["curl", "-sS", "https://api.internal.example.com/v1/health"]
        .iter()
        .flat_map(|a| a.bytes().chain([0]))
        .collect();
    let exec = abi::Exec {
        hdr: hdr(abi::EV_EXEC, "curl"),
        flags: 0,
        args_len: argv.len() as u32,
        loginuid: u32::MAX,
        tty: 0,
        cap_effective: 0,
        cap_permitted: 0,
        filename: fixed(b"/usr/bin/curl"),
        cgroup_v1: fixed(b"3f9c1d2e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff"),
        args: fixed(&argv),
        exe_components: fixed(b"curl\0bin\0usr\0"),
    };
    let open = abi::File {
        hdr: hdr(abi::EV_OPEN, "nginx"),
        dirfd: -100,
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        mode: 0,
        syscall: 257,
        path: fixed(b"assets/app.js"),
        base_components: fixed(b"html\0www\0var\0"),
    };
    let chmod = abi::File {
        hdr: hdr(abi::EV_CHMOD, "sh"),
        dirfd: -100,
        flags: 0,
        mode: 0o4755,
        syscall: 90,
        path: fixed(b"/tmp/x"),
        base_components: [0; abi::COMPONENTS_LEN],
    };
    let connect4 = abi::Net {
        hdr: hdr(abi::EV_CONNECT, "curl"),
        local: sockaddr(libc::AF_INET, &[0, 0, 0, 0], 0),
        remote: sockaddr(libc::AF_INET, &[10, 96, 14, 7], 443),
        protocol: libc::IPPROTO_TCP as u32,
        fd: 5,
    };
    let listen6 = abi::Net {
        hdr: hdr(abi::EV_LISTEN, "envoy"),
        local: sockaddr(libc::AF_INET6, &Ipv6Addr::LOCALHOST.octets(), 8443),
        remote: sockaddr(0, &[], 0),
        protocol: libc::IPPROTO_TCP as u32,
        fd: 31,
    };
    let fork = abi::Fork {
        hdr: hdr(abi::EV_FORK, "nginx"),
        child_pid: 48_300,
        child_tgid: 48_300,
    };
    let exit = abi::Exit {
        hdr: hdr(abi::EV_EXIT, "sh"),
        exit_code: 1,
        _pad: 0,
    };
    let mut privilege = abi::Priv {
        hdr: hdr(abi::EV_PRIV, "su"),
        op: 0,
        syscall: 105,
        args: [0, 0, 0, 0],
        arg_str: [0; abi::PRIV_ARG_LEN],
    };
    privilege.arg_str[..4].copy_from_slice(b"root");
    let seq = abi::Seq {
        hdr: hdr(abi::EV_SEQ, "nginx"),
        gram: 0x0102_0304_0506_0708,
        nsys: 6,
        known_sum: 5,
        unknown: 1,
        flags: 0,
        wid: 3,
        _pad: 0,
    };
    vec![
        ("exec", bytes_of(&exec)),
        ("open_relative", bytes_of(&open)),
        ("chmod", bytes_of(&chmod)),
        ("connect_v4", bytes_of(&connect4)),
        ("listen_v6", bytes_of(&listen6)),
        ("fork", bytes_of(&fork)),
        ("exit", bytes_of(&exit)),
        ("priv", bytes_of(&privilege)),
        ("seq", bytes_of(&seq)),
    ]
}
