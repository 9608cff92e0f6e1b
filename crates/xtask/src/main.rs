//! `cargo xtask`: the project's tasks.
//!
//! - `demo`: build the web app, start the relay serving it, print the URL to open in tabs;
//! - `test`: formatting, clippy (native and wasm32), unit and integration tests, and the browser
//!   end-to-end tests inside a loopback-only network namespace;
//! - `build-web`: build the web app into `dist/` (optimised, with gzipped copies);
//! - `net up|down|status`: a local network of a relay, headless tabs and native nodes;
//! - `bench`: sizes, join times, relay footprint, GIMPS and DHT figures, printed as figures;
//! - `soak`: the relay, tabs and native peers under churn for a long time (`--minutes 30`),
//!   checked for leaks, lost records, panics and harm to honest peers;
//! - `fuzz`: coverage-guided fuzzing of every decoder (libFuzzer, stable toolchain);
//! - `sim`: the DHT simulation (N peers in one process), e.g. `cargo xtask sim --nodes 10,100`.

mod bench;
mod fuzz;
mod net;
mod setup;
mod shell;
mod sim;
mod soak;
mod test;
mod testbed;
mod web;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "tabmesh project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the web app (release) and run the relay serving it on http://127.0.0.1:8080.
    Demo {
        /// Extra flags passed to tabmesh-relay (after `--`), e.g. `-- --http-port 8081`.
        #[arg(last = true)]
        relay_args: Vec<String>,
    },
    /// Run every check and test: fmt, clippy (native + wasm32), unit, integration, browser e2e.
    Test {
        /// Skip the browser end-to-end tests.
        #[arg(long)]
        no_e2e: bool,
        /// Only run the browser end-to-end tests (after building what they need).
        #[arg(long, conflicts_with = "no_e2e")]
        e2e_only: bool,
        /// Skip the bounded fuzzing run (10 s per target; `TABMESH_FUZZ_SECONDS` sets it).
        #[arg(long)]
        no_fuzz: bool,
    },
    /// Build the web app into dist/: optimised by wasm-opt (installed into .tools/ when
    /// missing) and gzipped beside each file for the relay to serve.
    BuildWeb {
        /// Debug build (faster to build, larger and slower).
        #[arg(long)]
        dev: bool,
        /// Skip wasm-opt even when it is available.
        #[arg(long)]
        no_opt: bool,
    },
    /// Boot or stop a local network of headless tabs and native nodes.
    Net {
        #[command(subcommand)]
        action: net::NetAction,
    },
    /// Print benchmark figures: wasm size, join times, relay memory.
    Bench(bench::BenchArgs),
    /// Fuzz every decoder that reads peer or user input (libFuzzer, coverage-guided), e.g.
    /// `cargo xtask fuzz gimps_message --seconds 600 --merge`.
    Fuzz(fuzz::FuzzArgs),
    /// Run the DHT simulation (release build): N peers in one process over libp2p's in-memory
    /// transport. Arguments go to tabmesh-dht-sim (default: --nodes 10,100,1000); see
    /// `cargo xtask sim --help-sim`.
    Sim {
        /// Arguments for tabmesh-dht-sim, e.g. `--nodes 10,100 --seed 7 --lookups 50 --json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The network under churn: a relay, 8 tabs, 50 native peers coming and going, a rogue
    /// peer, DHT puts and gets, service calls and snapshots, for `--minutes`; prints memory,
    /// connections, records and errors every minute, and fails on a leak, a lost record, a
    /// panic or an honest peer banned.
    Soak(soak::SoakArgs),
    /// The libp2p testbed's scenario: a relay and N native peers in a full mesh, a traced ping
    /// from peer 0 to a random peer, the gathered trace printed as a tree.
    Testbed(testbed::TestbedArgs),
    /// (internal) The part of `bench` that runs inside the loopback-only namespace.
    #[command(hide = true)]
    BenchInner(bench::BenchArgs),
    /// (internal) The part of `soak` that runs inside the loopback-only namespace.
    #[command(hide = true)]
    SoakInner(soak::SoakArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo { relay_args } => web::demo(&relay_args),
        Task::Test {
            no_e2e,
            e2e_only,
            no_fuzz,
        } => test::run(!no_e2e, !e2e_only, !no_fuzz && !e2e_only),
        Task::BuildWeb { dev, no_opt } => {
            // The build a relay deploys: optimised, as `demo` and `test` build it.
            let optimize = !dev && !no_opt;
            let tools = if optimize { setup::wasm_opt() } else { Ok(()) };
            tools.and_then(|()| web::build(web::Profile::from_dev(dev), !no_opt).map(|_| ()))
        }
        Task::Net { action } => net::run(action),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Sim { args } => sim::run(&args),
        Task::Testbed(args) => testbed::run(args),
        Task::BenchInner(args) => bench::run_inner(args),
        Task::Soak(args) => soak::run(args),
        Task::SoakInner(args) => soak::run_inner(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
