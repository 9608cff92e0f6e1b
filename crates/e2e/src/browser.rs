//! Headless Chromium driven over WebDriver (ChromeDriver + fantoccini), one tab per peer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tabmesh_core::view::NodeView;

use crate::{free_port, wait_until};

/// Chromium flags for headless peers on loopback.
///
/// Background tabs must keep full-speed timers (every tab is a live peer), and WebRTC must
/// gather loopback candidates without mDNS or a media prompt in a namespace with only `lo`.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=WebRtcHideLocalIpsWithMdns,CalculateNativeWinOcclusion",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--window-size=1280,900",
    // Defence in depth for runs outside a network namespace: no name resolves but localhost,
    // and anything not on loopback goes to a closed local port instead of leaving the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost;[::1]",
];

/// The environment variable whose flags (separated by spaces) every Chromium started here also
/// gets: `--trace-startup=…` to trace the tabs of a benchmark, say.
const EXTRA_ARGS_VAR: &str = "TABMESH_CHROMIUM_ARGS";

/// Where ChromeDriver and Chromium are.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The `chromedriver` binary.
    pub chromedriver: PathBuf,
    /// The Chromium binary, if ChromeDriver should not find it itself.
    pub chromium: Option<PathBuf>,
    /// Directory for the profile and ChromeDriver's log.
    pub dir: PathBuf,
}

impl BrowserOptions {
    /// `$CHROMEDRIVER` or `chromedriver` on PATH; `$CHROMIUM` or Debian's Chromium binary.
    pub fn new(dir: &Path) -> Self {
        let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
            let debian = PathBuf::from("/usr/lib/chromium/chromium");
            debian.exists().then_some(debian)
        });
        Self {
            chromedriver: std::env::var_os("CHROMEDRIVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("chromedriver")),
            chromium,
            dir: dir.to_owned(),
        }
    }
}

/// One open tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab(WindowHandle);

/// A headless Chromium with tabs.
pub struct Browser {
    driver: Child,
    client: Client,
    tabs: Vec<Tab>,
    first_unused: bool,
    detached: bool,
    /// Where the tabs are kept (see [`keep_tabs`](Self::keep_tabs)) when the browser is
    /// dropped without [`quit`](Self::quit): a test that failed.
    dir: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a Chromium session.
    pub async fn start(options: BrowserOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir)?;
        let port = free_port()?;
        let log = options.dir.join("chromedriver.log");
        let driver = Command::new(&options.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (install chromium-driver)",
                    options.chromedriver.display()
                )
            })?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            options.dir.join("profile").display()
        ));
        args.push("--enable-logging=stderr".into());
        // More flags for a run, e.g. to trace or profile the tabs.
        if let Ok(extra) = std::env::var(EXTRA_ARGS_VAR) {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        let mut chrome = json!({ "args": args });
        if let Some(bin) = &options.chromium {
            chrome["binary"] = json!(bin);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), chrome);
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // WebDriver ends a script after 30 s by default with a bare "script timeout"; the
        // operations called here have deadlines of their own (up to 30 s, and the tests wait
        // longer still), so give them room to fail with their own error.
        caps.insert("timeouts".into(), json!({ "script": 120_000 }));
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_until(
            "chromedriver accepts a session",
            Duration::from_secs(30),
            || {
                let caps = caps.clone();
                let url = url.clone();
                async move {
                    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                    Ok(ClientBuilder::new(connector)
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .map_err(|e| e.to_string()))
                }
            },
        )
        .await?;
        Ok(Self {
            driver,
            client,
            tabs: Vec::new(),
            first_unused: true,
            detached: false,
            dir: options.dir.clone(),
        })
    }

    /// The WebDriver client, for anything not wrapped here.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Open tabs, in opening order.
    pub fn tabs(&self) -> &[Tab] {
        &self.tabs
    }

    /// Opens `url` in a new tab (the session's first window for the first tab).
    pub async fn open_tab(&mut self, url: &str) -> anyhow::Result<Tab> {
        let handle = if self.first_unused {
            self.first_unused = false;
            self.client.window().await?
        } else {
            self.client.new_window(true).await?.handle
        };
        self.client.switch_to_window(handle.clone()).await?;
        self.client.goto(url).await?;
        let tab = Tab(handle);
        self.tabs.push(tab.clone());
        Ok(tab)
    }

    /// Opens `n` tabs that all start loading `url` at the same moment, as when a class opens
    /// the page together: each tab waits on `about:blank` for a start time they share, so the
    /// loads begin together however long WebDriver takes to set them up. Returns when every tab
    /// has its start time (the loads are then under way or about to be).
    pub async fn open_tabs_together(&mut self, n: usize, url: &str) -> anyhow::Result<Vec<Tab>> {
        let mut tabs = Vec::with_capacity(n);
        for _ in 0..n {
            tabs.push(self.open_tab("about:blank").await?);
        }
        // Setting up one tab takes a few tens of milliseconds; leave room for all of them.
        let margin = 200 + 50 * n as u64;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let start_at = unix_ms + margin;
        for tab in &tabs {
            self.switch(tab).await?;
            self.client
                .execute(
                    "const [url, at] = arguments;\
                     setTimeout(() => location.assign(url), Math.max(0, at - Date.now()));\
                     return null;",
                    vec![Value::from(url), Value::from(start_at)],
                )
                .await?;
        }
        Ok(tabs)
    }

    /// When `tab`'s page began loading (`performance.timeOrigin`, Unix milliseconds).
    pub async fn time_origin(&self, tab: &Tab) -> anyhow::Result<f64> {
        self.switch(tab).await?;
        let origin = self
            .client
            .execute("return performance.timeOrigin;", vec![])
            .await?;
        origin
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("performance.timeOrigin is {origin}"))
    }

    /// Makes `tab` the one later commands act on.
    pub async fn switch(&self, tab: &Tab) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.0.clone()).await?;
        Ok(())
    }

    /// `window.tabmesh.state()` of `tab`: `None` before the node has published a view.
    pub async fn state(&self, tab: &Tab) -> anyhow::Result<Option<NodeView>> {
        let raw = self.raw_state(tab).await?;
        if raw.is_null() {
            return Ok(None);
        }
        match serde_json::from_value(raw.clone()) {
            Ok(view) => Ok(Some(view)),
            Err(e) => {
                // Name the fields that cannot be what they should be, to find the culprit.
                let mut odd = Vec::new();
                odd_numbers(&raw, "state", &mut odd);
                Err(anyhow::Error::new(e).context(format!(
                    "window.tabmesh.state() is not a NodeView (numbers that are not u64: {odd:?})"
                )))
            }
        }
    }

    /// `window.tabmesh.state()` of `tab` as untyped JSON.
    pub async fn raw_state(&self, tab: &Tab) -> anyhow::Result<Value> {
        self.switch(tab).await?;
        Ok(self
            .client
            .execute(
                "return (window.tabmesh && window.tabmesh.state) ? window.tabmesh.state() : null;",
                vec![],
            )
            .await?)
    }

    /// The visible text of the first element matching `css` in `tab`.
    pub async fn text(&self, tab: &Tab, css: &str) -> anyhow::Result<String> {
        self.switch(tab).await?;
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    /// Clicks the first element matching `css` in `tab`.
    pub async fn click(&self, tab: &Tab, css: &str) -> anyhow::Result<()> {
        self.switch(tab).await?;
        self.client.find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    /// Whether an element matching `css` is present in `tab`.
    pub async fn exists(&self, tab: &Tab, css: &str) -> anyhow::Result<bool> {
        self.switch(tab).await?;
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Replaces the text of the input matching `css` in `tab` with `text`.
    pub async fn type_into(&self, tab: &Tab, css: &str, text: &str) -> anyhow::Result<()> {
        self.switch(tab).await?;
        let input = self.client.find(Locator::Css(css)).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Evaluates `expression` (which may be a Promise) in `tab`: `Ok(value)` when it resolves,
    /// `Err(message)` when it rejects.
    pub async fn call(&self, tab: &Tab, expression: &str) -> anyhow::Result<Result<Value, String>> {
        self.switch(tab).await?;
        let script = format!(
            "const done = arguments[arguments.length - 1];\
             Promise.resolve().then(() => ({expression}))\
               .then(v => done({{ ok: v === undefined ? null : v }}),\
                     e => done({{ err: String((e && e.message) || e) }}));"
        );
        let out = self.client.execute_async(&script, vec![]).await?;
        match (out.get("ok"), out.get("err")) {
            (Some(v), _) => Ok(Ok(v.clone())),
            (_, Some(e)) => Ok(Err(e.as_str().unwrap_or_default().to_owned())),
            _ => anyhow::bail!("unexpected result of {expression}: {out}"),
        }
    }

    /// Starts `expression` (a Promise) in `tab` without waiting for it: its outcome is kept in
    /// the page under `label` for [`settled`](Self::settled), so that operations in many tabs
    /// run at the same time (WebDriver talks to one tab at a time).
    pub async fn begin(&self, tab: &Tab, label: &str, expression: &str) -> anyhow::Result<()> {
        self.switch(tab).await?;
        let script = format!(
            "const label = arguments[0];\
             const kept = (window.__tabmeshSettled = window.__tabmeshSettled || {{}});\
             const t0 = performance.now();\
             Promise.resolve().then(() => ({expression}))\
               .then(v => {{ kept[label] = {{ ok: v === undefined ? null : v, ms: performance.now() - t0 }}; }},\
                     e => {{ kept[label] = {{ err: String((e && e.message) || e), ms: performance.now() - t0 }}; }});\
             return null;"
        );
        self.client
            .execute(&script, vec![Value::from(label)])
            .await?;
        Ok(())
    }

    /// The outcomes of what [`begin`](Self::begin) began in `tab` that have settled so far:
    /// label → `{ok: value, ms}` or `{err: message, ms}`.
    pub async fn settled(&self, tab: &Tab) -> anyhow::Result<serde_json::Map<String, Value>> {
        self.switch(tab).await?;
        let kept = self
            .client
            .execute("return window.__tabmeshSettled || {};", vec![])
            .await?;
        match kept {
            Value::Object(map) => Ok(map),
            other => anyhow::bail!("settled operations: {other}"),
        }
    }

    /// Saves a PNG screenshot of `tab`.
    pub async fn screenshot(&self, tab: &Tab, path: &Path) -> anyhow::Result<()> {
        self.switch(tab).await?;
        std::fs::write(path, self.client.screenshot().await?)?;
        Ok(())
    }

    /// Writes what every open tab shows and logged into `dir`: `tab-N.png` (a screenshot),
    /// `tab-N-state.json` (`state()`) and `tab-N-wire.log` (its whole wire log, `wireLog()`,
    /// a line per event), N counting tabs in opening order. Best effort: what a tab does not
    /// give is noted in its wire log file instead, and the other tabs are still kept.
    pub async fn keep_tabs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (i, tab) in self.tabs.iter().enumerate() {
            let mut log = String::new();
            if let Err(e) = self
                .screenshot(tab, &dir.join(format!("tab-{i}.png")))
                .await
            {
                log.push_str(&format!("(no screenshot: {e:#})\n"));
            }
            match self.raw_state(tab).await {
                Ok(state) => std::fs::write(
                    dir.join(format!("tab-{i}-state.json")),
                    serde_json::to_string_pretty(&state)?,
                )?,
                Err(e) => log.push_str(&format!("(no state: {e:#})\n")),
            }
            match self.call(tab, "window.tabmesh.wireLog()").await {
                Ok(Ok(events)) => {
                    for event in events.as_array().into_iter().flatten() {
                        log.push_str(&wire_line(event));
                    }
                }
                Ok(Err(e)) => log.push_str(&format!("(wireLog() failed: {e})\n")),
                Err(e) => log.push_str(&format!("(no wire log: {e:#})\n")),
            }
            std::fs::write(dir.join(format!("tab-{i}-wire.log")), log)?;
        }
        Ok(())
    }

    /// Reloads `tab`.
    pub async fn reload(&self, tab: &Tab) -> anyhow::Result<()> {
        self.switch(tab).await?;
        self.client.refresh().await?;
        Ok(())
    }

    /// Closes `tab`.
    pub async fn close_tab(&mut self, tab: &Tab) -> anyhow::Result<()> {
        self.switch(tab).await?;
        self.client.close_window().await?;
        self.tabs.retain(|t| t != tab);
        if let Some(other) = self.tabs.first() {
            self.client.switch_to_window(other.0.clone()).await?;
        }
        Ok(())
    }

    /// Ends the session and ChromeDriver.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        let result = self.client.clone().close().await;
        crate::kill_tree(self.driver.id());
        let _ = self.driver.wait();
        self.detached = true;
        result.map_err(Into::into)
    }
}

impl Browser {
    /// ChromeDriver's pid: it and its descendants are the browser (for CPU figures).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// Leaves ChromeDriver and the session running after this process exits; returns
    /// ChromeDriver's pid (stopping it ends the browser).
    pub async fn detach(mut self) -> anyhow::Result<u32> {
        self.client.persist().await?;
        self.detached = true;
        Ok(self.driver.id())
    }
}

impl Browser {
    /// On a test's failure (dropped without `quit`): keeps the tabs in the browser's
    /// directory, as [`keep_tabs`](Self::keep_tabs) does, so that a failure on CI can be read
    /// from what each tab showed and logged. WebDriver's session runs on the test's runtime,
    /// which must then have worker threads of its own (the browser tests' `multi_thread`);
    /// under any other runtime the tabs are not kept. At most [`KEEP_TABS_TIMEOUT`].
    fn keep_tabs_on_failure(&self) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let multi_thread =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if !multi_thread || self.tabs.is_empty() {
            return;
        }
        let dir = self.dir.join("tabs");
        let kept = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async {
                        tokio::time::timeout(KEEP_TABS_TIMEOUT, self.keep_tabs(&dir))
                            .await
                            .map_err(|_| anyhow::anyhow!("timed out"))?
                    })
                })
                .join()
        });
        match kept {
            Ok(Ok(())) => eprintln!("the tabs as they were: {}", dir.display()),
            Ok(Err(e)) => eprintln!("could not keep the tabs in {}: {e:#}", dir.display()),
            Err(_) => eprintln!("could not keep the tabs in {}", dir.display()),
        }
    }
}

/// The longest a failed test's browser takes to keep its tabs.
const KEEP_TABS_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of a kept wire log: sequence number, time since the page loaded, direction,
/// protocol, peer and what happened.
fn wire_line(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("-").to_owned();
    format!(
        "{:>6} {:>9} ms  {:<8} {:<9} {:<22} {}\n",
        event["seq"].as_u64().unwrap_or_default(),
        event["at_ms"].as_u64().unwrap_or_default(),
        text("direction"),
        text("protocol"),
        text("peer"),
        text("summary"),
    )
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.detached {
            self.keep_tabs_on_failure();
            // Killing only ChromeDriver would orphan Chromium: take the whole tree down.
            crate::kill_tree(self.driver.id());
            let _ = self.driver.wait();
        }
    }
}

/// Paths of the numbers in `value` that are not whole, or too large to be a `u64` counter.
fn odd_numbers(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Number(n) if n.is_f64() && n.as_f64().is_some_and(|f| f.abs() > 1e15) => {
            out.push(format!("{path} = {n}"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                odd_numbers(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                odd_numbers(item, &format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}
