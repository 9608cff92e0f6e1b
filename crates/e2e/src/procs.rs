//! The relay and native nodes as child processes, each logging to its own file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tabmesh_core::bootstrap::BootstrapInfo;
use tabmesh_core::view::NodeView;

use crate::{bin_path, free_port, wait_until};

/// Sends SIGTERM to `pid` (through `kill`, keeping this crate free of unsafe code).
pub fn stop_pid(pid: u32) -> std::io::Result<()> {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|_| ())
}

/// `pid` and all its descendants, children first (Chromium runs under ChromeDriver).
pub fn with_descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The fields after the parenthesised command name are: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                all.extend(with_descendants(child));
            }
        }
    }
    all.push(pid);
    all
}

/// Sends SIGKILL to `pid` and all its descendants.
pub fn kill_tree(pid: u32) {
    for p in with_descendants(pid) {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            anyhow::bail!(
                "process {} did not exit within {timeout:?} of SIGTERM",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ports, directories and extra flags of a relay process.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The relay binary.
    pub bin: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    /// libp2p TCP port.
    pub tcp_port: u16,
    /// libp2p WebSocket port.
    pub ws_port: u16,
    /// Data directory (identity key).
    pub data_dir: PathBuf,
    /// Built web app.
    pub web_dir: PathBuf,
    /// Further command-line flags.
    pub extra_args: Vec<String>,
}

impl RelayOptions {
    /// Free ports, a data directory under `run_dir`, and the workspace's `dist/`.
    pub fn new(run_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            bin: bin_path("tabmesh-relay"),
            http_port: free_port()?,
            tcp_port: free_port()?,
            ws_port: free_port()?,
            data_dir: run_dir.join("relay-data"),
            web_dir: crate::web_dir(),
            extra_args: Vec::new(),
        })
    }
}

/// A running `tabmesh-relay`.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    options: RelayOptions,
    detached: bool,
    /// Where its stderr and stdout go.
    pub log: PathBuf,
}

impl Relay {
    /// Starts the relay and waits until it serves its bootstrap document.
    pub async fn start(options: RelayOptions, log: PathBuf) -> anyhow::Result<Self> {
        let bin = options.bin.clone();
        let out = File::options().create(true).append(true).open(&log)?;
        let child = Command::new(&bin)
            .arg("--data-dir")
            .arg(&options.data_dir)
            .arg("--web-dir")
            .arg(&options.web_dir)
            .args(["--http-port", &options.http_port.to_string()])
            .args(["--tcp-port", &options.tcp_port.to_string()])
            .args(["--ws-port", &options.ws_port.to_string()])
            .args(&options.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let mut relay = Self {
            child,
            options,
            detached: false,
            log,
        };
        let url = relay.url();
        let client = reqwest::Client::new();
        let ready = wait_until(
            "relay serves /api/bootstrap",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let url = format!("{url}/api/bootstrap");
                async move {
                    let response = client.get(&url).send().await?;
                    Ok(if response.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("HTTP {}", response.status()))
                    })
                }
            },
        )
        .await;
        if let Err(e) = ready {
            let _ = relay.child.kill();
            let log = std::fs::read_to_string(&relay.log).unwrap_or_default();
            anyhow::bail!("{e:#}\nrelay log:\n{log}");
        }
        Ok(relay)
    }

    /// The relay's HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.options.http_port)
    }

    /// Its options (to restart it the same way).
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its bootstrap document.
    pub async fn bootstrap(&self) -> anyhow::Result<BootstrapInfo> {
        Ok(reqwest::get(format!("{}/api/bootstrap", self.url()))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Its libp2p TCP address (for native nodes), from its bootstrap document.
    pub async fn tcp_addr(&self) -> anyhow::Result<String> {
        self.bootstrap()
            .await?
            .addrs
            .into_iter()
            .find(|a| !a.contains("/ws"))
            .context("the relay has no TCP address")
    }

    /// The value of the metric `name` at `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Stops it with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        stop_pid(self.child.id())?;
        wait_exit(&mut self.child, Duration::from_secs(15))
    }
}

impl Relay {
    /// Leaves the relay running after this process exits; returns its pid.
    pub fn detach(mut self) -> u32 {
        self.detached = true;
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.detached && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The keys of the JSON lines `tabmesh-node --json` prints in answer to stdin commands.
const ANSWERS: [&str; 11] = [
    "trace_ping",
    "trace",
    "snapshot",
    "dht",
    "dht_error",
    "call",
    "call_error",
    "services",
    "services_error",
    "done",
    "error",
];

/// A running `tabmesh-node --json`, with its latest state parsed from its output.
#[derive(Debug)]
pub struct NativeNode {
    child: Child,
    stdin: Mutex<Option<std::process::ChildStdin>>,
    latest: Arc<Mutex<Option<NodeView>>>,
    /// Answers to stdin commands, with when each was read.
    dht_replies: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl NativeNode {
    /// Starts a native node joining the relay at `bootstrap` (URL or multiaddr).
    pub fn start(bootstrap: &str, log: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(&bin_path("tabmesh-node"), bootstrap, &[], log)
    }

    /// Starts the node binary `bin` with `extra_args` (its state printed every second, unless
    /// they set `--status-interval`).
    pub fn start_with(
        bin: &Path,
        bootstrap: &str,
        extra_args: &[&str],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["--bootstrap", bootstrap, "--json"])
            .args(
                (!extra_args.contains(&"--status-interval"))
                    .then_some(["--status-interval", "1"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::options().create(true).append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let stdout = child.stdout.take().context("node stdout")?;
        let stdin = Mutex::new(child.stdin.take());
        let latest = Arc::new(Mutex::new(None));
        let sink = latest.clone();
        let dht_replies = Arc::new(Mutex::new(Vec::new()));
        let replies = dht_replies.clone();
        let mut file = File::options().create(true).append(true).open(&log)?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let (Ok(view), Ok(mut slot)) =
                    (serde_json::from_str::<NodeView>(&line), sink.lock())
                {
                    *slot = Some(view);
                } else if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && ANSWERS.iter().any(|key| value.get(key).is_some())
                    && let Ok(mut list) = replies.lock()
                {
                    list.push((Instant::now(), value));
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            latest,
            dht_replies,
            log,
        })
    }

    /// Types a command line on the node's stdin (e.g. `get color`).
    pub fn send(&self, line: &str) -> anyhow::Result<()> {
        let mut guard = self
            .stdin
            .lock()
            .map_err(|_| anyhow::anyhow!("stdin lock poisoned"))?;
        let stdin = guard.as_mut().context("the node's stdin is closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The DHT answers printed so far (`{"dht": reply}` or `{"dht_error": text}`), oldest first.
    pub fn dht_replies(&self) -> Vec<serde_json::Value> {
        self.answers(&["dht", "dht_error"])
    }

    /// The answers to stdin commands printed so far whose one key is among `keys` (`dht`,
    /// `dht_error`, `call`, `call_error`, `services`, `services_error`, `trace_ping`, `trace`, `done`,
    /// `error`), oldest
    /// first.
    pub fn answers(&self, keys: &[&str]) -> Vec<serde_json::Value> {
        self.answers_timed(keys)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// [`answers`](Self::answers), each with the moment its line was read from the node's
    /// output (so that a caller polling now and then still times an operation right).
    pub fn answers_timed(&self, keys: &[&str]) -> Vec<(Instant, serde_json::Value)> {
        self.dht_replies
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(_, v)| keys.iter().any(|k| v.get(k).is_some()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node's latest printed state.
    pub fn state(&self) -> Option<NodeView> {
        self.latest.lock().ok().and_then(|s| s.clone())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops it at once with SIGKILL, as a crash or a pulled cable would: no goodbye to anyone.
    pub fn kill(mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Stops it with SIGTERM.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        stop_pid(self.child.id())?;
        wait_exit(&mut self.child, Duration::from_secs(15))
    }
}

impl Drop for NativeNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `tabmesh-rogue`: a peer that breaks a rule on every connection (see its `--help`).
#[derive(Debug)]
pub struct Rogue {
    child: Child,
    id: Arc<Mutex<Option<String>>>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Rogue {
    /// Starts a rogue joining the relay at `bootstrap` and committing `offence` (`gossip` or
    /// `dht`) on every connection, retrying every second.
    pub fn start(bootstrap: &str, offence: &str, log: PathBuf) -> anyhow::Result<Self> {
        let bin = crate::bin_path("tabmesh-rogue");
        let mut child = Command::new(&bin)
            .args([
                "--bootstrap",
                bootstrap,
                "--offence",
                offence,
                "--retry-secs",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(File::options().create(true).append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let stdout = child.stdout.take().context("rogue stdout")?;
        let id = Arc::new(Mutex::new(None));
        let sink = id.clone();
        let mut file = File::options().create(true).append(true).open(&log)?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                // First line: `tabmesh-rogue <peer id> (<name>) joining …`.
                if let Some(rest) = line.strip_prefix("tabmesh-rogue ")
                    && let Some(peer) = rest.split_whitespace().next()
                    && let Ok(mut slot) = sink.lock()
                {
                    slot.get_or_insert_with(|| peer.to_owned());
                }
            }
        });
        Ok(Self { child, id, log })
    }

    /// Its peer id, once it has printed it.
    pub fn peer_id(&self) -> Option<String> {
        self.id.lock().ok().and_then(|id| id.clone())
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
