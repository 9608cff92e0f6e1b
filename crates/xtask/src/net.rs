//! `cargo xtask net`: a local network to watch: a relay, headless tabs, native nodes.
//!
//! `net up` starts everything in the background with each process's output in its own file under
//! `.tabmesh/net/`, writes the pids to `.tabmesh/net/pids`, and returns; `net down` stops them
//! (SIGTERM, then SIGKILL for stragglers). Browsers run with flags that keep them on loopback.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use tabmesh_e2e::{Browser, BrowserOptions, Relay, RelayOptions, bin_path};

use crate::shell::{self, cargo, root};
use crate::web;

#[derive(Debug, Subcommand)]
pub(crate) enum NetAction {
    /// Start a relay, headless tabs and native nodes in the background.
    Up {
        /// Headless Chromium tabs.
        #[arg(long, default_value_t = 4)]
        tabs: usize,
        /// Native tabmesh-node processes.
        #[arg(long, default_value_t = 0)]
        nodes: usize,
        /// The relay's HTTP port (open it yourself to add tabs).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
    },
    /// Stop everything `net up` started.
    Down,
    /// Show what is running and where the logs are.
    Status,
}

fn net_dir() -> PathBuf {
    root().join(".tabmesh/net")
}

fn pids_file() -> PathBuf {
    net_dir().join("pids")
}

fn read_pids() -> Vec<(String, u32)> {
    std::fs::read_to_string(pids_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_owned(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

pub(crate) fn run(action: NetAction) -> anyhow::Result<()> {
    match action {
        NetAction::Up {
            tabs,
            nodes,
            http_port,
        } => up(tabs, nodes, http_port),
        NetAction::Down => down(),
        NetAction::Status => {
            let pids = read_pids();
            if pids.is_empty() {
                println!("no network is up (cargo xtask net up)");
            }
            for (name, pid) in pids {
                let state = if alive(pid) { "running" } else { "gone" };
                println!("{name:<14} pid {pid:<8} {state}");
            }
            println!("logs: {}", net_dir().display());
            Ok(())
        }
    }
}

fn up(tabs: usize, nodes: usize, http_port: u16) -> anyhow::Result<()> {
    if read_pids().iter().any(|(_, pid)| alive(*pid)) {
        bail!("a network is already up; run `cargo xtask net down` first");
    }
    web::build(web::Profile::Release, true)?;
    shell::run(cargo().args(["build", "-p", "tabmesh-relay", "-p", "tabmesh-node-cli"]))?;
    let dir = net_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut pids: Vec<(String, u32)> = Vec::new();
        let mut options = RelayOptions::new(&dir)?;
        options.http_port = http_port;
        options.data_dir = root().join(".tabmesh/net/relay-data");
        let relay = Relay::start(options, dir.join("relay.log")).await?;
        let url = relay.url();
        pids.push(("relay".into(), relay.detach()));
        for i in 1..=nodes {
            let log = std::fs::File::create(dir.join(format!("node-{i}.log")))?;
            let child = Command::new(bin_path("tabmesh-node"))
                .args(["--bootstrap", &url])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting tabmesh-node")?;
            pids.push((format!("node-{i}"), child.id()));
        }
        if tabs > 0 {
            let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
            for _ in 0..tabs {
                browser.open_tab(&url).await?;
            }
            pids.push(("chromedriver".into(), browser.detach().await?));
        }
        let list: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
        std::fs::write(pids_file(), list)?;
        println!("network up: relay at {url}, {tabs} headless tab(s), {nodes} native node(s)");
        println!(
            "logs in {} (relay.log, node-N.log, browser/chromedriver.log)",
            dir.display()
        );
        println!("open {url} yourself to join; stop everything with `cargo xtask net down`");
        anyhow::Ok(())
    })
}

fn down() -> anyhow::Result<()> {
    let pids: Vec<(String, u32)> = read_pids()
        .into_iter()
        .flat_map(|(name, pid)| {
            tabmesh_e2e::with_descendants(pid)
                .into_iter()
                .map(move |p| (name.clone(), p))
        })
        .collect();
    if pids.is_empty() {
        println!("nothing to stop");
        return Ok(());
    }
    for (name, pid) in &pids {
        if alive(*pid) {
            let _ = tabmesh_e2e::stop_pid(*pid);
            println!("stopping {name} ({pid})");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(_, p)| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, pid) in &pids {
        if alive(*pid) {
            println!("{name} ({pid}) ignored SIGTERM; killing");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    std::fs::remove_file(pids_file())?;
    println!("network down");
    Ok(())
}
