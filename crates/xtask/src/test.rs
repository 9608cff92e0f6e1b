//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;

use crate::shell::{self, cargo};
use crate::web;

/// Runs the checks: static ones and unit/integration tests when `checks`, browser e2e when `e2e`.
pub(crate) fn run(e2e: bool, checks: bool) -> anyhow::Result<()> {
    web::ensure_wasm_target()?;
    if checks {
        shell::run(cargo().args(["fmt", "--all", "--check"]))?;
        shell::run(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "tabmesh-web",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        shell::run(cargo().args([
            "clippy",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "tabmesh-core",
            "-p",
            "tabmesh-node",
            "-p",
            "tabmesh-web",
            "-p",
            "tabmesh-webrtc",
            "--",
            "-D",
            "warnings",
        ]))?;
        shell::run(cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "tabmesh-web",
            "--exclude",
            "tabmesh-e2e",
        ]))?;
    }
    if e2e {
        run_e2e()?;
    }
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn run_e2e() -> anyhow::Result<()> {
    web::build(web::Profile::Release, false)?;
    shell::run(cargo().args(["build", "-p", "tabmesh-relay", "-p", "tabmesh-node-cli"]))?;
    // Compile first: inside the namespace there is no network for cargo to fetch anything.
    shell::run(cargo().args(["test", "-p", "tabmesh-e2e", "--no-run"]))?;
    let mut inner = cargo();
    inner.args([
        "test",
        "--offline",
        "-p",
        "tabmesh-e2e",
        "--",
        "--test-threads=1",
    ]);
    let mut isolated: Command = shell::in_loopback_namespace(&inner)?;
    shell::run(&mut isolated)
}
