//! `tabmesh-dht-sim`: runs the DHT simulation for one or more network sizes and prints figures.

use clap::Parser;
use tabmesh_dht_sim::{Engine, SimConfig, SimReport, model, run};

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
    /// How peers are simulated: `libp2p` runs each as a libp2p swarm with the tabs' DHT code
    /// (up to ~1,000 peers); `model` runs Kademlia's rules alone in virtual time (10,000 and
    /// more; latencies are the model's).
    #[arg(long, value_enum, default_value_t = Engine::Libp2p)]
    engine: Engine,
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
            "tabmesh DHT simulation: seed {}, {} records, {} gets + {} full lookups (stable), {} gets while {:.0}% of the peers leave",
            args.seed,
            args.records,
            args.lookups,
            args.lookups,
            args.lookups,
            args.churn * 100.0
        );
        match args.engine {
            Engine::Libp2p => println!(
                "engine: libp2p (every peer a libp2p swarm); columns: mean/max; latency is wall clock on this machine (in-memory transport)"
            ),
            Engine::Model => println!(
                "engine: model (Kademlia's rules in virtual time); columns: mean/max; join s is wall clock, latency is virtual (1 to 5 ms per message)"
            ),
        }
        println!(
            "get: a lookup that stops once it holds 3 valid copies; full: a lookup that runs until the k = 20 closest peers answered"
        );
        println!(
            "{:>5} {:>6} {:>6} | {:>7} {:>11} {:>11} {:>15} | {:>11} {:>11} {:>11} {:>13} | {:>8} {:>11} {:>11} | {:>6} {:>10}",
            "N",
            "log2 N",
            "join s",
            "get ok",
            "rounds",
            "contacted",
            "ms p50/p95",
            "full rounds",
            "contacted",
            "answered",
            "ms p50/p95",
            "churn ok",
            "rounds",
            "contacted",
            "stored",
            "put ms p50"
        );
    }
    for n in &args.nodes {
        let mut config = SimConfig::new(*n, args.seed);
        config.records = args.records;
        config.lookups = args.lookups;
        config.churn = args.churn;
        let report = match args.engine {
            Engine::Libp2p => runtime.block_on(run(&config))?,
            Engine::Model => model::run(&config)?,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_row(&report);
        }
    }
    Ok(())
}

/// `mean/max` of a summary.
fn mm(s: &tabmesh_dht_sim::Summary) -> String {
    format!("{:.2}/{:.0}", s.mean, s.max)
}

fn print_row(r: &SimReport) {
    println!(
        "{:>5} {:>6.2} {:>6.1} | {:>6.1}% {:>11} {:>11} {:>15} | {:>11} {:>11} {:>11} {:>13} | {:>7.1}% {:>11} {:>11} | {:>6.1} {:>10.0}",
        r.nodes,
        r.log2_n,
        r.join_secs,
        r.stable.success_rate * 100.0,
        mm(&r.stable.rounds),
        mm(&r.stable.contacted),
        format!(
            "{:.1}/{:.1}",
            r.stable.latency_ms.median, r.stable.latency_ms.p95
        ),
        mm(&r.full.rounds),
        mm(&r.full.contacted),
        mm(&r.full.answered),
        format!(
            "{:.1}/{:.1}",
            r.full.latency_ms.median, r.full.latency_ms.p95
        ),
        r.churn.success_rate * 100.0,
        mm(&r.churn.rounds),
        mm(&r.churn.contacted),
        r.stored_at.mean,
        r.put_ms.median,
    );
}
