//! Interop with js-libp2p over `/webrtc`: in headless Chromium, two of our tabs and a page
//! running a js-libp2p browser node (its npm packages, bundled locally by `cargo xtask test`)
//! all use our relay.
//!
//! - js-libp2p dials tab A's `/p2p-circuit/webrtc` address: our listener answers its offer and
//!   both sides hold a direct WebRTC connection; js-libp2p pings tab A over it.
//! - js-libp2p dials tab B's plain circuit address (relayed only): tab B sees a js-libp2p peer
//!   with a `/webrtc` address and upgrades by itself (our dialer against js-libp2p's listener);
//!   js-libp2p then pings tab B over the direct connection.
//!
//! And with js-libp2p's Kademlia (`@libp2p/kad-dht`) in Node.js (`js-interop/dht.mjs`, a client
//! that joins the relay over TCP with a validator and a selector for the `tabmesh` namespace):
//!
//! - a record a tab puts under `color` is read by js-libp2p under `/tabmesh/color`: found at the
//!   relay, its signature checked over the namespaced key, the tab its publisher; under `color`
//!   js-libp2p finds nothing (it takes no key without a namespace);
//! - a record signed under an old key (before the namespace) and stored at the relay by
//!   js-libp2p's `PUT_VALUE` is still found by the tab, marked as old, and still belongs to its
//!   publisher.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tabmesh_core::peers::{ConnectionKind, PeerKind};
use tabmesh_core::wire_log::{Topic, WireEvent};
use tabmesh_e2e::{
    Browser, BrowserOptions, NodeView, Relay, RelayOptions, Tab, copy_dir, run_dir, target_dir,
    wait_until, web_dir,
};

const PATIENCE: Duration = Duration::from_secs(60);

/// The web app plus the js-libp2p page under `/js-interop/`.
fn web_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("web");
    copy_dir(&web_dir(), &root)?;
    let js = root.join("js-interop");
    std::fs::create_dir_all(&js)?;
    let source = tabmesh_e2e::workspace_root().join("crates/e2e/js-interop");
    std::fs::copy(source.join("index.html"), js.join("index.html"))?;
    let bundle = target_dir().join("js-interop/bundle.js");
    std::fs::copy(&bundle, js.join("bundle.js")).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (`cargo xtask test` bundles the js-libp2p peer first)",
            bundle.display()
        )
    })?;
    Ok(root)
}

/// `addr` ending in `/p2p/<peer>`.
fn with_peer(addr: &str, peer: &str) -> String {
    if addr.ends_with(&format!("/p2p/{peer}")) {
        addr.to_owned()
    } else {
        format!("{addr}/p2p/{peer}")
    }
}

async fn js(browser: &Browser, tab: &Tab, expression: &str) -> anyhow::Result<Value> {
    browser
        .call(tab, expression)
        .await?
        .map_err(|e| anyhow::anyhow!("{expression}: {e}"))
}

/// `window.jsDial(addr)` from the js-libp2p page, to a peer that is one of our tabs. If the
/// dial fails, the error carries the tab's side too: its last connection, relay and WebRTC
/// events, so that a failure on a busy machine can be read from the test's output alone.
async fn js_dial(browser: &Browser, page: &Tab, tab: &Tab, addr: &str) -> anyhow::Result<Value> {
    match js(browser, page, &format!("window.jsDial('{addr}')")).await {
        Ok(remote) => Ok(remote),
        Err(error) => {
            let wire = match browser.state(tab).await {
                Ok(Some(view)) => {
                    let lines: Vec<String> = view
                        .wire
                        .iter()
                        .filter(|e| {
                            matches!(e.protocol, Topic::Conn | Topic::Relay | Topic::Webrtc)
                        })
                        .map(|e| {
                            let WireEvent {
                                at_ms,
                                direction,
                                protocol,
                                summary,
                                ..
                            } = e;
                            format!("  {at_ms} ms {direction:?} {protocol:?}: {summary}")
                        })
                        .collect();
                    lines[lines.len().saturating_sub(20)..].join("\n")
                }
                Ok(None) => "no view".to_owned(),
                Err(e) => format!("no view: {e}"),
            };
            Err(error.context(format!("the dialed tab's last events:\n{wire}")))
        }
    }
}

/// A tab's view once it holds a reservation and listens on `/webrtc`.
async fn listening_tab(browser: &Browser, tab: &Tab) -> anyhow::Result<NodeView> {
    wait_until("the tab listens on /webrtc", PATIENCE, || async move {
        Ok(match browser.state(tab).await? {
            Some(v) if v.listen_addrs.iter().any(|a| a.ends_with("/webrtc")) => Ok(v),
            Some(v) => Err(format!("listening on {:?}", v.listen_addrs)),
            None => Err("no view yet".into()),
        })
    })
    .await
}

/// Waits until `tab` shows the js-libp2p peer `js_id` as a direct peer with an RTT.
async fn tab_sees_js_direct(browser: &Browser, tab: &Tab, js_id: &str) -> anyhow::Result<()> {
    wait_until(
        "the tab shows the js-libp2p peer direct",
        PATIENCE,
        || async move {
            let view = browser.state(tab).await?;
            let peer = view.and_then(|v| v.peers.into_iter().find(|p| p.peer_id == js_id));
            Ok(match peer {
                Some(p) if p.connection == ConnectionKind::Direct && p.rtt_ms.is_some() => {
                    if p.kind == PeerKind::JsLibp2p {
                        Ok(())
                    } else {
                        Err(format!("kind {} (agent {:?})", p.kind, p.agent))
                    }
                }
                Some(p) => Err(format!(
                    "{:?}, rtt {:?}, {:?}",
                    p.connection, p.rtt_ms, p.upgrade
                )),
                None => Err("not a peer yet".into()),
            })
        },
    )
    .await
}

/// Waits until the js node's connections to `peer` are direct (`/webrtc`) only: our tab closes
/// the relayed one once the direct one has taken over (js-libp2p keeps both otherwise), and a
/// ping must not pick a connection that is about to close.
async fn js_has_webrtc_to(browser: &Browser, page: &Tab, peer: &str) -> anyhow::Result<()> {
    wait_until(
        "js-libp2p holds only /webrtc connections",
        PATIENCE,
        || async move {
            let connections = js(browser, page, "window.jsConnections()").await?;
            let to_peer: Vec<&Value> = connections
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["peer"] == peer)
                .collect();
            let direct = |c: &&Value| c["addr"].as_str().is_some_and(|a| a.contains("/webrtc"));
            Ok(if !to_peer.is_empty() && to_peer.iter().all(direct) {
                Ok(())
            } else {
                Err(format!("connections: {to_peer:?}"))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_libp2p_browser_node_and_our_tabs_connect_directly_over_webrtc() -> anyhow::Result<()>
{
    let dir = run_dir("interop")?;
    let mut options = RelayOptions::new(&dir)?;
    options.web_dir = web_root(&dir)?;
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let page = browser
        .open_tab(&format!("{}/js-interop/", relay.url()))
        .await?;
    let a = browser.open_tab(&relay.url()).await?;
    let b = browser.open_tab(&relay.url()).await?;

    // The js node holds a reservation on our relay and listens on /webrtc.
    let js_addrs = wait_until("js-libp2p listens on /webrtc", PATIENCE, || {
        let (browser, page) = (&browser, &page);
        async move {
            let status = browser.text(page, "#status").await?;
            if status.starts_with("error") {
                anyhow::bail!("the js-libp2p page failed: {status}");
            }
            let addrs = js(browser, page, "window.jsAddrs ? window.jsAddrs() : []").await?;
            let addrs: Vec<String> = serde_json::from_value(addrs)?;
            Ok(if addrs.iter().any(|a| a.contains("/p2p-circuit/webrtc")) {
                Ok(addrs)
            } else {
                Err(format!("{status}: {addrs:?}"))
            })
        }
    })
    .await?;
    let js_id = js(&browser, &page, "window.jsId()")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(js_addrs.iter().all(|a| a.ends_with(&js_id)), "{js_addrs:?}");

    // js-libp2p dials tab A over /webrtc (our listener) and pings it there.
    let a_view = listening_tab(&browser, &a).await?;
    let a_webrtc = a_view
        .listen_addrs
        .iter()
        .find(|addr| addr.ends_with("/webrtc"))
        .map(|addr| format!("{addr}/p2p/{}", a_view.peer_id))
        .expect("listening on /webrtc");
    let remote = js_dial(&browser, &page, &a, &a_webrtc).await?;
    assert!(
        remote.as_str().is_some_and(|r| r.contains("/webrtc")),
        "js-libp2p's connection to tab A: {remote}"
    );
    js_has_webrtc_to(&browser, &page, &a_view.peer_id).await?;
    let rtt = js(&browser, &page, &format!("window.jsPing('{a_webrtc}')")).await?;
    assert!(rtt.as_f64().is_some(), "ping answered: {rtt}");
    tab_sees_js_direct(&browser, &a, &js_id).await?;

    // js-libp2p reaches tab B through the relay only; tab B goes direct by itself.
    let b_view = listening_tab(&browser, &b).await?;
    let b_circuit = b_view
        .listen_addrs
        .iter()
        .find(|addr| addr.contains("/p2p-circuit") && !addr.contains("/webrtc"))
        .map(|addr| with_peer(addr, &b_view.peer_id))
        .expect("a circuit address");
    let remote = js_dial(&browser, &page, &b, &b_circuit).await?;
    assert!(
        remote
            .as_str()
            .is_some_and(|r| r.contains("/p2p-circuit") && !r.contains("/webrtc")),
        "js-libp2p's first connection to tab B is relayed: {remote}"
    );
    js_has_webrtc_to(&browser, &page, &b_view.peer_id).await?;
    tab_sees_js_direct(&browser, &b, &js_id).await?;
    let b_webrtc = format!(
        "{}/p2p/{}",
        b_view
            .listen_addrs
            .iter()
            .find(|addr| addr.ends_with("/webrtc"))
            .expect("listening on /webrtc"),
        b_view.peer_id
    );
    let rtt = js(&browser, &page, &format!("window.jsPing('{b_webrtc}')")).await?;
    assert!(rtt.as_f64().is_some(), "ping answered: {rtt}");

    browser.screenshot(&a, &dir.join("tab-a.png")).await?;
    browser.quit().await?;
    Ok(())
}

/// Runs `node js-interop/dht.mjs <relay> <args>` and returns the JSON line it prints.
async fn js_dht(relay: &Relay, args: &[&str]) -> anyhow::Result<Value> {
    let script = tabmesh_e2e::workspace_root().join("crates/e2e/js-interop/dht.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(relay.url())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .map_err(|_| anyhow::anyhow!("dht.mjs {args:?} did not finish"))?
        .map_err(|e| anyhow::anyhow!("node {}: {e} (Node.js is needed)", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| {
        anyhow::anyhow!(
            "dht.mjs {args:?} ({}): {e}: {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `window.tabmesh.<call>` in `tab`, its answer or its error text.
async fn tab_dht(
    browser: &Browser,
    tab: &Tab,
    call: &str,
) -> anyhow::Result<Result<Value, String>> {
    browser.call(tab, &format!("window.tabmesh.{call}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_kademlia_reads_a_tabs_record_and_a_tab_reads_old_keys() -> anyhow::Result<()> {
    let dir = run_dir("interop-dht")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let tab = browser.open_tab(&relay.url()).await?;
    let me = wait_until("the tab has the relay in its DHT", PATIENCE, || {
        let (browser, tab) = (&browser, &tab);
        async move {
            Ok(match browser.state(tab).await? {
                Some(v) if v.dht.as_ref().is_some_and(|d| d.routing_table_size >= 1) => Ok(v),
                _ => Err("empty routing table".to_owned()),
            })
        }
    })
    .await?;

    // A tab's record, read by js-libp2p under the namespace.
    let put = tab_dht(&browser, &tab, "put('color', 'ultramarine')")
        .await?
        .map_err(|e| anyhow::anyhow!("put: {e}"))?;
    assert_eq!(put["key"], "color", "replies show the user's key: {put}");
    assert!(
        put["stored_at"].as_u64() >= Some(1),
        "stored at the relay: {put}"
    );
    let read = js_dht(&relay, &["get", "/tabmesh/color"]).await?;
    assert_eq!(read["found"], true, "{read}");
    assert_eq!(read["value"], "ultramarine", "{read}");
    assert_eq!(read["publisher"], me.peer_id.as_str(), "{read}");
    assert_eq!(read["seq"], put["seq"], "{read}");
    // Without the namespace js-libp2p takes nothing (which is why records moved under it).
    let bare = js_dht(&relay, &["get", "color"]).await?;
    assert_eq!(bare["found"], false, "{bare}");

    // A record from before the namespace: signed under the bare key by another publisher,
    // stored at the relay by js-libp2p.
    let old_publisher = libp2p_identity::Keypair::generate_ed25519();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let expires = u64::try_from(now_ms)? + 600_000;
    let old = tabmesh_core::dht::record::SignedRecord::sign(
        &old_publisher,
        b"motto".to_vec(),
        b"old but gold".to_vec(),
        1,
        expires,
        false,
    );
    let hex = tabmesh_core::hex::encode(&old.encode());
    let stored = js_dht(&relay, &["put", "motto", &hex]).await?;
    assert_eq!(stored["ok"], true, "{stored}");
    let found = wait_until("the tab reads the old key", PATIENCE, || {
        let (browser, tab) = (&browser, &tab);
        async move {
            Ok(match tab_dht(browser, tab, "get('motto')").await? {
                Ok(reply) if reply["record"].is_object() => Ok(reply),
                other => Err(format!("{other:?}")),
            })
        }
    })
    .await?;
    let record = &found["record"];
    assert_eq!(record["value"], "old but gold", "{found}");
    assert_eq!(record["old_key"], true, "{found}");
    assert_eq!(
        record["publisher"],
        old_publisher.public().to_peer_id().to_base58(),
        "{found}"
    );
    // Still its publisher's: the tab may not take the key over.
    let taken = tab_dht(&browser, &tab, "put('motto', 'mine now')").await?;
    assert!(
        taken.as_ref().is_err_and(|e| e.contains("held by")),
        "{taken:?}"
    );

    // The DHT panel: the record, and the last lookup's path (both keys of the refused put).
    browser
        .call(
            &tab,
            "document.querySelector('[data-testid=dht-panel]').scrollIntoView()",
        )
        .await?
        .map_err(|e| anyhow::anyhow!("no DHT panel: {e}"))?;
    browser.screenshot(&tab, &dir.join("tab.png")).await?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
