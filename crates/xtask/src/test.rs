//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;

use crate::shell::{self, cargo};
use crate::{setup, web};

/// Runs the checks: static ones and unit/integration tests when `checks`, a bounded fuzzing run
/// of every decoder when `fuzz`, browser e2e when `e2e`.
pub(crate) fn run(e2e: bool, checks: bool, fuzz: bool) -> anyhow::Result<()> {
    web::ensure_wasm_target()?;
    if e2e {
        // Before the checks, so that what is missing shows in the first minute.
        setup::system_tools(setup::BROWSER_TESTS, "the browser tests")?;
        setup::test_runner()?;
    }
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
            "-p",
            "tabmesh-search-worker",
            "-p",
            "tabmesh-size-floor",
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
    if fuzz {
        crate::fuzz::run_for_tests()?;
    }
    if e2e {
        run_e2e()?;
    }
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn run_e2e() -> anyhow::Result<()> {
    // The browser tests run the app as users get it: optimised, and within its size budget.
    setup::wasm_opt()?;
    let build = web::build(web::Profile::Release, true)?;
    web::check_size_budget(&build)?;
    shell::run(cargo().args(["build", "-p", "tabmesh-relay", "-p", "tabmesh-node-cli"]))?;
    build_js_interop_peer()?;
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
    shell::run(&mut isolated)?;
    run_wasm_browser_tests()?;
    // The short soak: the whole network under churn for 3 minutes (`TABMESH_SOAK_MINUTES`).
    crate::soak::run_built(&crate::soak::SoakArgs::for_tests())
}

/// The js-libp2p peers of the interop tests (`crates/e2e/js-interop`): their npm packages
/// (exact versions from the lock file, reinstalled when it changes) and the browser node's
/// bundle, `target/js-interop/bundle.js` (the Node.js DHT client runs from the folder).
fn build_js_interop_peer() -> anyhow::Result<()> {
    let dir = shell::root().join("crates/e2e/js-interop");
    let Some(npm) = shell::find_tool("npm", &[]) else {
        anyhow::bail!(
            "the js-libp2p interop test needs Node.js and npm to bundle its peer \
             (Debian: `apt-get install nodejs npm`)"
        );
    };
    // Installed from this very lock file? (A checkout that pulls a new package must install it.)
    let lock = std::fs::read(dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.tabmesh-installed-lock.json");
    if std::fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        shell::run(
            Command::new(&npm)
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        )?;
        std::fs::write(&stamp, &lock)?;
    }
    // The DHT client's record rules, offline (they mirror tabmesh-core's envelope checks).
    if let Some(node) = shell::find_tool("node", &[]) {
        shell::run(
            Command::new(node)
                .args(["--test", "record.test.mjs"])
                .current_dir(&dir),
        )?;
    }
    shell::run(
        Command::new(&npm)
            .args(["run", "--silent", "build"])
            .current_dir(&dir),
    )
}

/// The wasm crates' tests, run by wasm-bindgen's test runner in headless Chromium, loopback
/// only: the WebRTC crate's (peer connections, data channels) and the web app's unit tests
/// (what the page compares to decide whether a panel renders again). Each crate's runner
/// capabilities (Chromium's flags, WebRTC on loopback for the WebRTC crate) are in its
/// `webdriver.json`.
fn run_wasm_browser_tests() -> anyhow::Result<()> {
    const RUNNER: &str = "wasm-bindgen-test-runner";
    setup::test_runner()?;
    for (package, dir) in [("tabmesh-webrtc", "crates/webrtc"), ("tabmesh-web", "web")] {
        let wasm_test = |offline: bool| {
            let mut cmd = cargo();
            cmd.arg("test");
            if offline {
                cmd.arg("--offline");
            }
            cmd.args(["-p", package, "--target", "wasm32-unknown-unknown"])
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", RUNNER)
                .env("WASM_BINDGEN_TEST_TIMEOUT", "60")
                .current_dir(shell::root().join(dir));
            cmd
        };
        shell::run(wasm_test(false).arg("--no-run"))?;
        shell::run(&mut shell::in_loopback_namespace(&wasm_test(true))?)?;
    }
    Ok(())
}
