//! The relay as a real process: command line, bad input, identity, shutdown.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tabmesh_e2e::{Relay, RelayOptions, run_dir, wait_until};

const RELAY: &str = env!("CARGO_BIN_EXE_tabmesh-relay");

fn options(dir: &std::path::Path) -> RelayOptions {
    let mut options = RelayOptions::new(dir).expect("free ports");
    options.bin = PathBuf::from(RELAY);
    options
}

#[test]
fn help_documents_every_limit() {
    let out = Command::new(RELAY).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--data-dir",
        "--host",
        "--http-port",
        "--tcp-port",
        "--ws-port",
        "--announce",
        "--web-dir",
        "--ice-server",
        "--ice-username",
        "--ice-credential",
        "--max-reservations",
        "--max-reservations-per-peer",
        "--reservation-duration-secs",
        "--reservation-rate-per-peer",
        "--reservation-rate-per-ip",
        "--max-circuits",
        "--max-circuits-per-peer",
        "--max-circuit-duration-secs",
        "--max-circuit-bytes",
        "--circuit-rate-per-peer",
        "--circuit-rate-per-ip",
        "--max-connections",
        "--max-connections-per-peer",
        "--max-pending-incoming",
        "--idle-timeout-secs",
        "--dht-max-records",
        "--dht-max-records-per-publisher",
        "--log-format",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn wrong_arguments_exit_non_zero_with_a_message() {
    for args in [
        &["--http-port", "70000"][..],
        &["--host", "not-an-ip"],
        &["--announce", "/not/a/multiaddr"],
        &["--ice-server", "http://stun.example.org"],
        &["--ice-server", "turn:turn.example.org:3478"],
        &["--ice-username", "alice"],
        &["--max-circuit-duration-secs", "0"],
        &["--dht-max-records", "0"],
        &["--dht-max-records-per-publisher", "-1"],
        &["--frobnicate"],
    ] {
        let out = Command::new(RELAY).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = run_dir("relay-port-in-use").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(RELAY)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http-port", &port, "--tcp-port", "0", "--ws-port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn ice_servers_reach_the_bootstrap_document_turn_with_its_credentials() -> anyhow::Result<()>
{
    let dir = run_dir("relay-ice-servers")?;
    let mut options = options(&dir);
    options.extra_args = [
        "--ice-server",
        "stun:stun.example.org:3478",
        "--ice-server",
        "turn:turn.example.org:3478?transport=udp",
        "--ice-username",
        "alice",
        "--ice-credential",
        "s3cret",
    ]
    .map(String::from)
    .to_vec();
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let raw: serde_json::Value = reqwest::get(format!("{}/api/bootstrap", relay.url()))
        .await?
        .json()
        .await?;
    assert_eq!(
        raw["ice_servers"],
        serde_json::json!([
            { "urls": "stun:stun.example.org:3478" },
            { "urls": "turn:turn.example.org:3478?transport=udp",
              "username": "alice", "credential": "s3cret" }
        ])
    );
    relay.stop()?;
    Ok(())
}

#[tokio::test]
async fn a_second_relay_on_the_same_data_dir_is_refused() -> anyhow::Result<()> {
    let dir = run_dir("relay-data-dir-in-use")?;
    let first = options(&dir);
    let data_dir = first.data_dir.clone();
    let relay = Relay::start(first, dir.join("relay.log")).await?;
    let out = Command::new(RELAY)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--http-port", "0", "--tcp-port", "0", "--ws-port", "0"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is another relay using this --data-dir"),
        "{stderr}"
    );
    relay.stop()?;
    Ok(())
}

#[test]
fn a_corrupt_identity_stops_the_relay_and_is_kept() {
    let dir = run_dir("relay-corrupt-key").unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/identity.key"), b"not a key").unwrap();
    let out = Command::new(RELAY)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http-port", "0", "--tcp-port", "0", "--ws-port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a libp2p key"));
    assert_eq!(
        std::fs::read(dir.join("data/identity.key")).unwrap(),
        b"not a key"
    );
}

#[tokio::test]
async fn garbage_is_counted_and_the_relay_keeps_serving() -> anyhow::Result<()> {
    let dir = run_dir("relay-garbage")?;
    let relay = Relay::start(options(&dir), dir.join("relay.log")).await?;
    let before = relay.bootstrap().await?;
    assert!(
        before.addrs.iter().any(|a| a.contains("/ws/")),
        "{:?}",
        before.addrs
    );
    assert!(before.addrs.iter().all(|a| a.ends_with(&before.peer_id)));

    for port in [relay.options().tcp_port, relay.options().ws_port] {
        for payload in [
            &b"\x00\xffgarbage that is no multistream-select header\n"[..],
            &[0x13; 70_000],
        ] {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            let _ = stream.write_all(payload);
        }
    }
    wait_until(
        "rejections are counted",
        Duration::from_secs(30),
        || async {
            let n = relay
                .metric("tabmesh_relay_incoming_connection_errors_total")
                .await?;
            Ok(if n >= 2.0 {
                Ok(())
            } else {
                Err(format!("{n} counted"))
            })
        },
    )
    .await?;
    assert_eq!(
        relay.bootstrap().await?,
        before,
        "still serving the same document"
    );
    let log = std::fs::read_to_string(&relay.log)?;
    assert!(
        log.contains("rejected incoming connection"),
        "rejections are logged"
    );
    assert!(relay.stop()?.success());
    Ok(())
}

#[tokio::test]
async fn identity_survives_a_restart_and_sigterm_is_graceful() -> anyhow::Result<()> {
    let dir = run_dir("relay-restart")?;
    let relay = Relay::start(options(&dir), dir.join("relay.log")).await?;
    let first = relay.bootstrap().await?.peer_id;
    let opts = relay.options().clone();
    let status = relay.stop()?;
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.join("relay.log"))?;
    assert!(log.contains("relay stopped"), "{log}");
    let relay = Relay::start(opts, dir.join("relay2.log")).await?;
    assert_eq!(relay.bootstrap().await?.peer_id, first);
    // Without a built web app the relay says how to build it instead of failing.
    let page = reqwest::get(relay.url()).await?;
    if !relay.options().web_dir.join("index.html").exists() {
        assert_eq!(page.status(), 503);
        assert!(page.text().await?.contains("cargo xtask demo"));
    }
    relay.stop()?;
    Ok(())
}

#[tokio::test]
async fn the_relay_starts_without_warnings() -> anyhow::Result<()> {
    let dir = run_dir("relay-quiet-start")?;
    let mut options = options(&dir);
    // A web app to serve (without one the relay rightly warns that it serves a notice).
    options.web_dir = dir.join("web");
    std::fs::create_dir_all(&options.web_dir)?;
    std::fs::write(options.web_dir.join("index.html"), "<!doctype html>")?;
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    // Kademlia's automatic bootstrap fires 500 ms after the listen addresses come up.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(relay.stop()?.success());
    let log = std::fs::read_to_string(dir.join("relay.log"))?;
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    Ok(())
}

#[tokio::test]
async fn the_app_is_served_gzipped_where_the_build_left_a_gz_and_always_revalidated()
-> anyhow::Result<()> {
    use std::io::Read;
    let dir = run_dir("relay-gzip")?;
    let mut options = options(&dir);
    options.web_dir = dir.join("web");
    // This test's client is on loopback, which `auto` (the default) serves uncompressed.
    options.extra_args = vec!["--gzip".into(), "always".into()];
    let web = &options.web_dir;
    std::fs::create_dir_all(web.join("search"))?;
    let gzip = |bytes: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes)?;
        Ok(encoder.finish()?)
    };
    let index = b"<!doctype html><title>tabmesh</title>".repeat(20);
    let module: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(web.join("index.html"), &index)?;
    std::fs::write(web.join("index.html.gz"), gzip(&index)?)?;
    std::fs::write(web.join("search/app_bg.wasm"), &module)?;
    std::fs::write(web.join("search/app_bg.wasm.gz"), gzip(&module)?)?;
    // A file the build did not compress (a directory built by another tool, say).
    std::fs::write(web.join("style.css"), "body { margin: 0 }")?;
    let relay = Relay::start(options.clone(), dir.join("relay.log")).await?;
    let client = reqwest::Client::new();
    let get = |path: &str, gzip_ok: bool| {
        let request = client.get(format!("{}{path}", relay.url()));
        if gzip_ok {
            request.header("accept-encoding", "gzip, deflate")
        } else {
            request
        }
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let gunzip = |bytes: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    };

    // Accepted: the .gz, as the module it stands for.
    let r = get("/search/app_bg.wasm", true).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(header(&r, "content-type"), "application/wasm");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert!(
        header(&r, "vary")
            .to_lowercase()
            .contains("accept-encoding")
    );
    let last_modified = header(&r, "last-modified");
    let body = r.bytes().await?;
    assert!(body.len() < module.len() / 2, "{} bytes sent", body.len());
    assert_eq!(gunzip(&body)?, module);
    // Not accepted: the file itself.
    let r = get("/search/app_bg.wasm", false).send().await?;
    assert_eq!(header(&r, "content-encoding"), "");
    assert_eq!(r.bytes().await?.as_ref(), module.as_slice());
    // Unchanged since the last load: 304, nothing sent again.
    let r = get("/search/app_bg.wasm", true)
        .header("if-modified-since", &last_modified)
        .send()
        .await?;
    assert_eq!(r.status(), 304);
    // An unknown path gets the page, gzipped too.
    let r = get("/some/route", true).send().await?;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(gunzip(&r.bytes().await?)?, index);
    // No .gz beside it: served as it is.
    let r = get("/style.css", true).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), "");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert_eq!(r.text().await?, "body { margin: 0 }");
    relay.stop()?;

    // By default a browser on this machine gets the files as they are, whatever it accepts.
    let mut options = self::options(&dir);
    options.web_dir = dir.join("web");
    let relay = Relay::start(options, dir.join("relay-auto.log")).await?;
    for (path, file) in [("/search/app_bg.wasm", &module), ("/some/route", &index)] {
        let r = client
            .get(format!("{}{path}", relay.url()))
            .header("accept-encoding", "gzip, deflate")
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-encoding"), "", "{path}");
        assert_eq!(r.bytes().await?.as_ref(), file.as_slice(), "{path}");
    }
    relay.stop()?;
    Ok(())
}

/// A running `tabmesh-loadgen`, holding its clients until dropped.
struct Loadgen(std::process::Child);

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tabmesh-loadgen` against `relay`; its `ready` line and the `reason` lines after it.
fn loadgen(relay_tcp: &str, args: &[&str]) -> anyhow::Result<(Loadgen, String, Vec<String>)> {
    use std::io::BufRead;
    let mut child = Command::new(tabmesh_e2e::bin_path("tabmesh-loadgen"))
        .args(["--relay", relay_tcp])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let child = Loadgen(child);
    // The loadgen settles on its own (--settle-secs) and reports.
    let mut lines = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok);
    let ready = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("ready ").map(str::to_owned));
    let mut reasons = Vec::new();
    for line in lines.by_ref() {
        match line.strip_prefix("reason ") {
            Some(reason) => reasons.push(reason.to_owned()),
            None => break,
        }
    }
    // It goes on reporting while it holds its clients: read on, or its next line would find
    // the pipe closed and end it (and its clients with it).
    std::thread::spawn(move || lines.for_each(drop));
    let ready = ready.ok_or_else(|| anyhow::anyhow!("loadgen ended without a ready line"))?;
    Ok((child, ready, reasons))
}

#[tokio::test]
async fn hundreds_of_peers_hold_reservations_and_the_limit_refuses_the_rest() -> anyhow::Result<()>
{
    let dir = run_dir("relay-hundreds")?;
    let mut opts = options(&dir);
    // Limits set as an operator would for them (all of them share 127.0.0.1).
    opts.extra_args = [
        "--max-reservations",
        "300",
        "--reservation-rate-per-ip",
        "3000",
    ]
    .map(str::to_owned)
    .to_vec();
    let relay = Relay::start(opts, dir.join("relay.log")).await?;
    let tcp = relay.tcp_addr().await?;
    let (held, ready, reasons) = tokio::task::spawn_blocking({
        let tcp = tcp.clone();
        move || {
            loadgen(
                &tcp,
                &["--clients", "300", "--rate", "100", "--settle-secs", "120"],
            )
        }
    })
    .await??;
    assert!(
        ready.starts_with("300 connected, 300 reserved, 0 failed"),
        "{ready}; {reasons:?}"
    );
    // The relay is full while they hold their reservations: more clients connect, but their
    // reservations are refused, and the loadgen says why.
    let (refused, ready, reasons) = tokio::task::spawn_blocking(move || {
        loadgen(
            &tcp,
            &["--clients", "20", "--attempts", "1", "--settle-secs", "60"],
        )
    })
    .await??;
    assert!(
        ready.contains(" 0 reserved, 20 failed"),
        "{ready}; {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("reservation")),
        "the refusals are explained: {reasons:?}"
    );
    // The operator's gauges: 300 reservations on as many connections (the refused clients
    // give up and close theirs); none once the clients are gone.
    assert_eq!(relay.metric("tabmesh_relay_reservations").await?, 300.0);
    let open = relay.metric("tabmesh_relay_connections_open").await?;
    assert!((300.0..=320.0).contains(&open), "{open} connections open");
    drop((held, refused));
    wait_until(
        "the gauges back to 0 after the clients were killed",
        Duration::from_secs(30),
        || async {
            let open = relay.metric("tabmesh_relay_connections_open").await?;
            let reserved = relay.metric("tabmesh_relay_reservations").await?;
            Ok(if open == 0.0 && reserved == 0.0 {
                Ok(())
            } else {
                Err(format!("{open} open, {reserved} reserved"))
            })
        },
    )
    .await?;
    assert!(relay.stop()?.success());
    Ok(())
}

#[tokio::test]
async fn an_open_file_limit_below_max_connections_is_a_warning() -> anyhow::Result<()> {
    let dir = run_dir("relay-nofile")?;
    let mut opts = options(&dir);
    // More connections than any open-file limit allows.
    opts.extra_args = ["--max-connections", "4000000000"]
        .map(str::to_owned)
        .to_vec();
    let relay = Relay::start(opts, dir.join("relay.log")).await?;
    let log = std::fs::read_to_string(&relay.log)?;
    assert!(
        log.contains("the open-file limit is below what --max-connections"),
        "{log}"
    );
    assert!(relay.stop()?.success());
    Ok(())
}
