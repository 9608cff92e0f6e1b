//! What the tasks need beyond Rust, installed when missing, so that `cargo xtask demo` and
//! `cargo xtask test` work on a fresh machine: the wasm target (rustup), Chromium, its driver,
//! Node.js (Debian packages, when we are root and `apt-get` exists; otherwise one line saying
//! what to install), `wasm-opt` (binaryen from npm, into `.tools/`) and wasm-bindgen's test
//! runner (`cargo install`). Each step says what it does before doing it and does nothing when
//! the tool is already there, so running a task twice installs nothing twice.

use std::process::Command;

use anyhow::bail;

use crate::shell::{self, cargo, find_tool, root};
use crate::web;

/// A command a task runs, and the Debian package that provides it.
pub(crate) struct Tool {
    /// The command looked for on PATH.
    pub command: &'static str,
    /// An environment variable that names the binary instead (then nothing is installed).
    pub env: Option<&'static str>,
    /// The Debian packages that provide it.
    pub packages: &'static [&'static str],
}

/// What the browser tests need.
pub(crate) const BROWSER_TESTS: &[Tool] = &[
    Tool {
        command: "chromium",
        env: Some("CHROMIUM"),
        packages: &["chromium"],
    },
    Tool {
        command: "chromedriver",
        env: Some("CHROMEDRIVER"),
        packages: &["chromium-driver"],
    },
    // The tests run in a network namespace with only a loopback interface.
    Tool {
        command: "unshare",
        env: None,
        packages: &["util-linux"],
    },
    Tool {
        command: "ip",
        env: None,
        packages: &["iproute2"],
    },
    // Node.js bundles the js-libp2p peer of the interop test.
    NODE,
];

/// Node.js and npm: the js-libp2p peer of the interop test, and `wasm-opt` (from npm).
pub(crate) const NODE: Tool = Tool {
    command: "npm",
    env: None,
    packages: &["nodejs", "npm"],
};

/// Installs the Debian packages of the `tools` that are missing, for `purpose` (said in the
/// messages). Without root or `apt-get`, fails with one line naming what to install.
pub(crate) fn system_tools(tools: &[Tool], purpose: &str) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|tool| {
            let named = tool.env.and_then(std::env::var_os).is_some();
            !named && find_tool(tool.command, &[]).is_none()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let commands: Vec<&str> = missing.iter().map(|tool| tool.command).collect();
    let mut packages: Vec<&str> = missing
        .iter()
        .flat_map(|tool| tool.packages.iter().copied())
        .collect();
    packages.dedup();
    let packages = packages.join(" ");
    let apt = find_tool("apt-get", &[]);
    match apt {
        Some(apt) if is_root() => {
            eprintln!(
                "xtask: installing {packages} with apt-get ({purpose} need {})",
                commands.join(", ")
            );
            shell::run(
                Command::new(&apt)
                    .args(["update", "-qq"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            shell::run(
                Command::new(&apt)
                    .args(["install", "-y", "-qq"])
                    .args(packages.split(' '))
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        }
        _ => bail!(
            "{purpose} need {} and this machine has not got {}: install them first \
             (Debian: `sudo apt-get install {packages}`), then run this again",
            commands.join(", "),
            if commands.len() == 1 { "it" } else { "them" }
        ),
    }
}

/// wasm-bindgen's test runner, at the version the workspace pins (built once, about 8 minutes
/// on 2 cores).
pub(crate) fn test_runner() -> anyhow::Result<()> {
    let version = find_tool("wasm-bindgen-test-runner", &[])
        .and_then(|runner| shell::output(Command::new(runner).arg("--version")))
        .unwrap_or_default();
    if version.contains(web::WASM_BINDGEN_VERSION) {
        return Ok(());
    }
    eprintln!(
        "xtask: building wasm-bindgen-test-runner {} for the WebRTC crate's browser tests \
         (once; about 8 minutes on 2 cores)",
        web::WASM_BINDGEN_VERSION
    );
    shell::run(cargo().args([
        "install",
        "--locked",
        "--quiet",
        "wasm-bindgen-cli",
        "--version",
        web::WASM_BINDGEN_VERSION,
    ]))
}

/// The binaryen release whose `wasm-opt` reads what Rust 1.95 emits (Debian's 108 cannot).
const BINARYEN: &str = "binaryen@132.0.0";

/// `wasm-opt`, from npm into `.tools/`, unless a recent one is installed. Installs Node.js
/// first when it can; when it cannot, says so and the web app is served unoptimised.
pub(crate) fn wasm_opt() -> anyhow::Result<()> {
    if web::wasm_opt().is_some() {
        return Ok(());
    }
    if let Err(e) = system_tools(&[NODE], "an optimised web app (wasm-opt, from npm)") {
        eprintln!("note: {e:#}");
        return Ok(());
    }
    let Some(npm) = find_tool("npm", &[]) else {
        return Ok(());
    };
    eprintln!("xtask: installing wasm-opt ({BINARYEN}, from npm) into .tools/");
    let installed = shell::run(
        Command::new(npm)
            .args([
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                ".tools",
                BINARYEN,
            ])
            .current_dir(root()),
    );
    if let Err(e) = installed {
        eprintln!("note: wasm-opt not installed ({e:#}); the web app is served unoptimised");
    }
    Ok(())
}

fn is_root() -> bool {
    shell::output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}
