//! `tabmesh-dht-sim`: runs the DHT simulation for one or more network sizes and prints figures.

use clap::Parser;
use tabmesh_dht_sim::{SimConfig, SimReport, run};

/// Simulates N tabmesh DHT peers in one process (in-memory transport) and reports lookup success,
/// rounds and peers contacted per lookup (against log2 N) and latency, with and without churn.
#[derive(Debug, Parser)]
#[command(name = "tabmesh-dht-sim", version, about)]
struct Args {
    /// Network sizes to simulate, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    nodes: Vec<usize>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records put before the lookups.
    #[arg(long, default_value_t = 50)]
    records: usize,
    /// Lookups per phase (stable, then churn).
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Fraction of peers leaving during the churn phase.
    #[arg(long, default_value_t = 0.1)]
    churn: f64,
    /// Print one JSON report per size instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..1.0).contains(&args.churn),
        "--churn must be at least 0 and below 1, not {}",
        args.churn
    );
    anyhow::ensure!(
        args.nodes.iter().all(|n| *n >= 2),
        "every --nodes size must be at least 2"
    );
    anyhow::ensure!(args.records > 0, "--records must be at least 1");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if !args.json {
        println!(
            "tabmesh DHT simulation: seed {}, {} records, {} lookups per phase, {:.0}% of peers leave in the churn phase",
            args.seed,
            args.records,
            args.lookups,
            args.churn * 100.0
        );
        println!(
            "{:>6} {:>7} {:>7} | {:>8} {:>15} {:>17} {:>15} | {:>8} {:>15} {:>17} | {:>9}",
            "N",
            "log2 N",
            "join s",
            "success",
            "rounds avg/max",
            "contacted avg/max",
            "latency ms p50/p95",
            "churn ok",
            "rounds avg/max",
            "contacted avg/max",
            "stored at"
        );
    }
    for n in &args.nodes {
        let mut config = SimConfig::new(*n, args.seed);
        config.records = args.records;
        config.lookups = args.lookups;
        config.churn = args.churn;
        let report = runtime.block_on(run(&config))?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_row(&report);
        }
    }
    Ok(())
}

fn print_row(r: &SimReport) {
    println!(
        "{:>6} {:>7.2} {:>7.1} | {:>7.1}% {:>9.2} / {:<3} {:>11.2} / {:<3} {:>7.2} / {:<6.2} | {:>7.1}% {:>9.2} / {:<3} {:>11.2} / {:<3} | {:>5.1} avg",
        r.nodes,
        r.log2_n,
        r.join_secs,
        r.stable.success_rate * 100.0,
        r.stable.rounds.mean,
        r.stable.rounds.max,
        r.stable.contacted.mean,
        r.stable.contacted.max,
        r.stable.latency_ms.median,
        r.stable.latency_ms.p95,
        r.churn.success_rate * 100.0,
        r.churn.rounds.mean,
        r.churn.rounds.max,
        r.churn.contacted.mean,
        r.churn.contacted.max,
        r.stored_at.mean,
    );
}
