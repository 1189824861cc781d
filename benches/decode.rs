//! Throughput of `habit_probes::decode::decode` on realistic ring-buffer records.
//!
//! Records are built from the `habit_probes::abi` structs exactly as the kernel lays them out: an
//! exec of `curl` from a container (full header, argv, dentry components, v1 cgroup name),
//! an openat of a certificate bundle, a relative openat (with its base directory), IPv4 and IPv6
//! connects, and a mixed batch in roughly the proportions a busy node produces (opens dominate,
//! then connects, then execs).
//!
//!     cargo bench --bench decode                 # full run, reports events/s per record kind
//!     cargo bench --bench decode -- exec         # only the exec benchmark

use std::hint::black_box;
use std::mem::size_of;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use habit_probes::abi;
use habit_probes::decode::decode;

/// The bytes of a record as the ring buffer delivers them.
fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: `record` is a valid reference to one of the plain-data ABI structs, which have no
    // implicit padding (events.h spells every hole as a `_pad` field), so all size_of::<T>()
    // bytes are initialised.
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// Copies `s` into a fixed, NUL-padded buffer.
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

fn exec_record() -> Vec<u8> {
    let argv: Vec<u8> = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-H",
        "Accept: application/json",
        "https://api.internal.example.com/v1/health?verbose=1",
    ]
    .iter()
    .flat_map(|a| a.bytes().chain([0]))
    .collect();
    let record = abi::Exec {
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
    bytes_of(&record)
}

fn open_record() -> Vec<u8> {
    let record = abi::File {
        hdr: hdr(abi::EV_OPEN, "curl"),
        dirfd: -100, // AT_FDCWD
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        mode: 0,
        syscall: 257, // openat
        res: 4,
        path: fixed(b"/etc/ssl/certs/ca-certificates.crt"),
        base_components: [0; abi::COMPONENTS_LEN], // absolute path: no base directory
    };
    bytes_of(&record)
}

/// A relative open: the kernel adds the directory it is relative to, as dentry components.
fn open_relative_record() -> Vec<u8> {
    let record = abi::File {
        hdr: hdr(abi::EV_OPEN, "nginx"),
        dirfd: -100,
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u32,
        mode: 0,
        syscall: 257,
        res: 9,
        path: fixed(b"assets/app.js"),
        base_components: fixed(b"html\0www\0var\0"),
    };
    bytes_of(&record)
}

fn sockaddr_v4(addr: [u8; 4], port: u16) -> abi::SockAddr {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&addr);
    abi::SockAddr {
        family: libc::AF_INET as u16,
        port,
        scope: 0,
        addr: bytes,
    }
}

fn connect_v4_record() -> Vec<u8> {
    let record = abi::Net {
        hdr: hdr(abi::EV_CONNECT, "curl"),
        local: sockaddr_v4([0, 0, 0, 0], 0),
        remote: sockaddr_v4([10, 96, 14, 7], 443),
        protocol: libc::IPPROTO_TCP as u32,
        fd: 5,
        res: -i64::from(libc::EINPROGRESS),
        syscall: 42,
        _pad: 0,
    };
    bytes_of(&record)
}

fn connect_v6_record() -> Vec<u8> {
    let remote = abi::SockAddr {
        family: libc::AF_INET6 as u16,
        port: 8443,
        scope: 0,
        addr: "2001:db8:85a3::8a2e:370:7334"
            .parse::<std::net::Ipv6Addr>()
            .map(|a| a.octets())
            .unwrap_or_default(),
    };
    let record = abi::Net {
        hdr: hdr(abi::EV_CONNECT, "envoy"),
        local: sockaddr_v4([0, 0, 0, 0], 0),
        remote,
        protocol: libc::IPPROTO_TCP as u32,
        fd: 31,
        res: 0,
        syscall: 42,
        _pad: 0,
    };
    bytes_of(&record)
}

fn bench_decode(c: &mut Criterion) {
    let records = [
        ("exec", exec_record()),
        ("open", open_record()),
        ("open_relative", open_relative_record()),
        ("connect_v4", connect_v4_record()),
        ("connect_v6", connect_v6_record()),
    ];
    // Every record must decode: a benchmark of the error path would be meaningless.
    for (name, bytes) in &records {
        if let Err(e) = decode(bytes) {
            panic!("the {name} benchmark record does not decode: {e}");
        }
    }

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &records {
        group.bench_function(*name, |b| b.iter(|| decode(black_box(bytes))));
    }

    // A batch like a busy node's: 1 exec, 12 opens (4 of them relative), 3 connects.
    let by_name = |name: &str| {
        records
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| bytes.as_slice())
            .unwrap_or_default()
    };
    let mut batch: Vec<&[u8]> = vec![by_name("exec")];
    batch.extend(std::iter::repeat_n(by_name("open"), 8));
    batch.extend(std::iter::repeat_n(by_name("open_relative"), 4));
    batch.extend([
        by_name("connect_v4"),
        by_name("connect_v6"),
        by_name("connect_v4"),
    ]);
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("mixed_batch", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for bytes in &batch {
                ok += usize::from(decode(black_box(bytes)).is_ok());
            }
            ok
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
