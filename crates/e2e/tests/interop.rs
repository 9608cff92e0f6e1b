//! Interop with js-libp2p over `/webrtc`: in headless Chromium, two of our tabs and a page
//! running a js-libp2p browser node (its npm packages, bundled locally by `cargo xtask test`)
//! all use our relay.
//!
//! - js-libp2p dials tab A's `/p2p-circuit/webrtc` address: our listener answers its offer and
//!   both sides hold a direct WebRTC connection; js-libp2p pings tab A over it.
//! - js-libp2p dials tab B's plain circuit address (relayed only): tab B sees a js-libp2p peer
//!   with a `/webrtc` address and upgrades by itself (our dialer against js-libp2p's listener);
//!   js-libp2p then pings tab B over the direct connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tabmesh_core::peers::{ConnectionKind, PeerKind};
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
    let remote = js(&browser, &page, &format!("window.jsDial('{a_webrtc}')")).await?;
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
    let remote = js(&browser, &page, &format!("window.jsDial('{b_circuit}')")).await?;
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
