//! End-to-end harness: real processes and a real browser.
//!
//! Tests and benchmarks start the actual `tabmesh-relay` and `tabmesh-node` binaries (built by
//! `cargo xtask test` before the tests run) and drive headless Chromium through ChromeDriver, so
//! that what they observe is what a user gets. Each process writes its output to its own log file
//! under `target/e2e/<run>/`, which is the first place to look when a test fails.
//!
//! Nothing here measures speed: waits are bounded liveness checks ("within a minute"), and
//! benchmarks report figures instead of asserting them.

mod browser;
mod procs;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use browser::{Browser, BrowserOptions, Tab};
pub use procs::{NativeNode, Relay, RelayOptions, Rogue, kill_tree, stop_pid, with_descendants};
pub use tabmesh_core::view::NodeView;

/// The peers a node's GIMPS gossip currently counts (those it has not evicted), by peer id.
pub fn gossip_peers(view: &NodeView) -> std::collections::BTreeSet<String> {
    view.gimps
        .as_ref()
        .map(|g| g.state.peers.iter().map(|p| p.peer_id.clone()).collect())
        .unwrap_or_default()
}

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Path of a workspace binary: `$TABMESH_BIN_DIR/<name>` or `target/debug/<name>`.
pub fn bin_path(name: &str) -> PathBuf {
    std::env::var_os("TABMESH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug"))
        .join(name)
}

/// The built web app (`dist/`), which the relay serves.
pub fn web_dir() -> PathBuf {
    std::env::var_os("TABMESH_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"))
}

/// Copies the directory `from` (recursively) to `to`: a test that serves a changed web app
/// copies [`web_dir`] first.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A fresh directory for one run's logs and data: `target/e2e/<name>`.
pub fn run_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A port free on 127.0.0.1 for TCP and UDP, which no earlier call in this process returned.
///
/// The ports come from just below the kernel's ephemeral range (where `bind(0)` and outgoing
/// connections take theirs), so that between this call and the moment a child process listens
/// on the port, no other test's relay, browser or HTTP client can be handed it. Within a
/// process a counter keeps calls apart; each process starts at its own place (from its pid).
/// Where the ephemeral range starts too low to leave room, the kernel picks, as before.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_start < SPAN + 1_024 {
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port());
    }
    let low = ephemeral_start - SPAN;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = u16::try_from(low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN)?;
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 in {low}..{ephemeral_start}")
}

/// The wall clock now, in Unix milliseconds: the clock of a tab's `performance.timeOrigin`
/// (and of the times a view gives relative to it), so that a test or benchmark can set what it
/// saw beside what the tabs say.
pub fn unix_now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Polls `check` every 250 ms until it returns `Some`, failing after `timeout` with the last
/// observation, so that a failure says what was seen instead of just "timed out".
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(observed)) => observed,
            Err(error) => format!("error: {error:#}"),
        };
        if start.elapsed() > timeout {
            anyhow::bail!("{what}: not reached within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resets `tab`'s GIMPS node (it forgets the primes it knew, so its search finds 2^2-1 again
/// and announces it) and waits for the trace of a `PRIME` it found since: its id.
pub async fn reset_and_await_prime_trace(
    browser: &Browser,
    tab: &Tab,
    timeout: Duration,
) -> anyhow::Result<String> {
    let js = |expression: &'static str| async move {
        browser
            .call(tab, expression)
            .await?
            .map_err(anyhow::Error::msg)
    };
    let since = js("Date.now()").await?.as_f64().unwrap_or_default() as u64;
    js("window.tabmesh.reset()").await?;
    wait_until("a PRIME found since the reset, traced", timeout, || async {
        let view = browser
            .state(tab)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the tab's node has stopped"))?;
        Ok(view
            .trace
            .and_then(|t| {
                t.recent.into_iter().find(|r| {
                    r.root_here && r.name.starts_with("gimps.prime") && r.start_ms >= since
                })
            })
            .map(|r| r.trace_id.to_string())
            .ok_or_else(|| "no PRIME trace yet".to_owned()))
    })
    .await
}
