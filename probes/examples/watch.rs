//! Loads the probes and prints decoded events for a few seconds: a debugging aid for probe work
//! (`cargo run -p habit-probes --example watch -- 5`). The product view is `habitd run --print-events`.

use habit_probes::{ProbeConfig, Probes};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut probes = Probes::load(&ProbeConfig::default())?;
    eprintln!("kernel features: {:?}", probes.kernel_features());
    let mut events = probes.take_events()?;
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while let Ok(r) = tokio::time::timeout_at(
        deadline,
        events.next_batch(&mut batch, |e| eprintln!("decode error: {e}")),
    )
    .await
    {
        r?;
        for ev in &batch {
            println!("{ev:?}");
        }
    }
    for d in probes.counters.read_syscalls()? {
        println!(
            "cgroup {} syscalls: {}",
            d.cgroup_id,
            d.counts.iter().map(|c| c.1).sum::<u64>()
        );
    }
    println!(
        "drops: {:?}",
        probes
            .counters
            .read_drops()?
            .iter()
            .filter(|d| d.2 > 0)
            .collect::<Vec<_>>()
    );
    Ok(())
}
