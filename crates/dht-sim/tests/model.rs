//! The model engine against the libp2p engine: on the same seeded workload, the model's lookups
//! must take the paths real libp2p Kademlia swarms take (rounds, peers contacted, success), or
//! its figures for 10,000 peers mean nothing.

use tabmesh_dht_sim::{Engine, PhaseReport, SimConfig, SimReport, model, run};

fn config(nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(nodes, 11);
    config.records = 10;
    config.lookups = 60;
    config.churn = 0.2;
    config
}

/// `model` within `tolerance` (a share) of `real`, or one unit when both are small.
fn close(what: &str, model: f64, real: f64, tolerance: f64) {
    let allowed = (real * tolerance).max(1.0);
    assert!(
        (model - real).abs() <= allowed,
        "{what}: model {model:.2}, libp2p {real:.2} (allowed ±{allowed:.2})"
    );
}

fn compare(phase: &str, model: &PhaseReport, real: &PhaseReport) {
    assert_eq!(model.lookups, real.lookups, "{phase}: same workload");
    close(
        &format!("{phase} success %"),
        model.success_rate * 100.0,
        real.success_rate * 100.0,
        0.05,
    );
    close(
        &format!("{phase} mean rounds"),
        model.rounds.mean,
        real.rounds.mean,
        0.25,
    );
    close(
        &format!("{phase} mean peers that answered"),
        model.answered.mean,
        real.answered.mean,
        0.25,
    );
    // The libp2p engine records a request that waits for a dial only once it is answered, so
    // it sees at most as many peers asked as the model, which counts every request.
    assert!(
        real.contacted.mean <= model.contacted.mean * 1.25 + 1.0,
        "{phase}: libp2p asked {:.2} peers per lookup, the model {:.2}",
        real.contacted.mean,
        model.contacted.mean
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_takes_the_paths_libp2p_kademlia_takes() {
    let config = config(80);
    let real: SimReport = run(&config).await.unwrap();
    let modelled = model::run(&config).unwrap();
    assert_eq!(real.engine, Engine::Libp2p);
    assert_eq!(modelled.engine, Engine::Model);
    assert_eq!(modelled.puts_ok, real.puts_ok, "{modelled:?}\n{real:?}");
    close(
        "peers storing each record",
        modelled.stored_at.mean,
        real.stored_at.mean,
        0.1,
    );
    compare("get", &modelled.stable, &real.stable);
    compare("full lookup", &modelled.full, &real.full);
    compare("get under churn", &modelled.churn, &real.churn);
    assert_eq!(modelled.left, real.left);
}

#[test]
fn the_model_is_seeded_and_keeps_its_promises_on_a_larger_network() {
    let config = config(600);
    let a = model::run(&config).unwrap();
    let b = model::run(&config).unwrap();
    // Virtual time and seeded choices: the same run twice.
    assert_eq!(a.full.contacted, b.full.contacted);
    assert_eq!(a.churn.found, b.churn.found);
    // Kademlia's promises: every record found, in about log2 N rounds, at k peers each.
    assert_eq!(a.stable.success_rate, 1.0, "{a:?}");
    assert!(a.churn.success_rate >= 0.95, "{a:?}");
    assert!(a.full.rounds.mean <= a.log2_n, "{a:?}");
    assert!(a.stored_at.mean >= 19.0, "{a:?}");
}
