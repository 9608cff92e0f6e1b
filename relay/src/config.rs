//! Command-line configuration of the relay. Every limit of the circuit relay is settable here.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use libp2p::Multiaddr;

/// The tabmesh relay and bootstrap server.
///
/// Browser tabs and native nodes meet here: the relay serves the web app and a bootstrap
/// document over HTTP, accepts libp2p connections over WebSocket (browsers) and TCP (native
/// nodes), relays circuits between peers (circuit relay v2) and is the Kademlia bootstrap node.
#[derive(Debug, Clone, Parser)]
#[command(name = "tabmesh-relay", version, about, long_about)]
pub struct RelayArgs {
    /// Directory for the relay's identity key (`identity.key`) and DHT records (`dht.redb`).
    #[arg(long, env = "TABMESH_DATA_DIR", default_value = ".tabmesh/relay")]
    pub data_dir: PathBuf,

    /// IP address to bind every listener to. Use 0.0.0.0 (or ::) to accept other machines.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// HTTP port: the web app, /api/bootstrap and /metrics. 0 picks a free port.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,

    /// libp2p TCP port, for native nodes. 0 picks a free port.
    #[arg(long, default_value_t = 9090)]
    pub tcp_port: u16,

    /// libp2p WebSocket port, for browsers. 0 picks a free port.
    #[arg(long, default_value_t = 9091)]
    pub ws_port: u16,

    /// Public address to announce instead of the listen addresses (repeatable), for example
    /// `/dns4/relay.example.org/tcp/443/wss` behind a TLS-terminating proxy.
    #[arg(long = "announce", value_name = "MULTIADDR")]
    pub announce: Vec<Multiaddr>,

    /// Directory of the built web app to serve at `/`.
    #[arg(long, default_value = "dist")]
    pub web_dir: PathBuf,

    /// When the web app is sent gzipped (from the `.gz` files `cargo xtask build-web` writes
    /// beside it) to a browser that accepts gzip.
    #[arg(long, value_enum, default_value_t = Gzip::Auto)]
    pub gzip: Gzip,

    /// STUN or TURN server URL handed to tabs for direct WebRTC (repeatable), e.g.
    /// `stun:stun.example.org:3478` or `turn:turn.example.org:3478`. None are needed on
    /// loopback or a LAN.
    #[arg(long = "ice-server", value_name = "URL", value_parser = parse_ice_url)]
    pub ice_servers: Vec<String>,

    /// User name for the `turn:`/`turns:` servers (handed to tabs with them).
    #[arg(long, value_name = "NAME", requires = "ice_credential")]
    pub ice_username: Option<String>,

    /// Password for the `turn:`/`turns:` servers (handed to tabs with them: use short-lived
    /// credentials or a TURN server meant for this).
    #[arg(long, value_name = "SECRET", requires = "ice_username")]
    pub ice_credential: Option<String>,

    /// Most reservations held at once.
    #[arg(long, default_value_t = 1024)]
    pub max_reservations: usize,

    /// Most reservations per peer.
    #[arg(long, default_value_t = 4)]
    pub max_reservations_per_peer: usize,

    /// Lifetime of a reservation in seconds (peers renew before it ends).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub reservation_duration_secs: u64,

    /// Reservations accepted per peer per minute.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub reservation_rate_per_peer: u32,

    /// Reservations accepted per source IP per minute (all local tabs share 127.0.0.1).
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(1..))]
    pub reservation_rate_per_ip: u32,

    /// Most circuits relayed at once.
    #[arg(long, default_value_t = 4096)]
    pub max_circuits: usize,

    /// Most circuits per peer (a tab has one per relayed peer).
    #[arg(long, default_value_t = 256)]
    pub max_circuits_per_peer: usize,

    /// Longest life of a circuit in seconds; peers reconnect after it ends.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_circuit_duration_secs: u64,

    /// Most bytes relayed per circuit in each direction; 0 means no limit.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_circuit_bytes: u64,

    /// Circuits opened per source peer per minute.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_rate_per_peer: u32,

    /// Circuits opened per source IP per minute.
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_rate_per_ip: u32,

    /// Most established connections in total.
    #[arg(long, default_value_t = 8192)]
    pub max_connections: u32,

    /// Most established connections per peer.
    #[arg(long, default_value_t = 8)]
    pub max_connections_per_peer: u32,

    /// Most incoming connections still in their handshake.
    #[arg(long, default_value_t = 512)]
    pub max_pending_incoming: u32,

    /// Seconds an idle connection (no open streams) is kept.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout_secs: u64,

    /// Most DHT records the relay stores (all publishers together).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub dht_max_records: u32,

    /// Most live DHT records the relay stores per publisher.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub dht_max_records_per_publisher: u32,

    /// Protocol violations (garbled pings, failed identify exchanges, forged DHT records) that
    /// ban a peer: it is disconnected and its connections are refused for the ban's length.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub ban_after_strikes: u32,

    /// Length of a first ban in seconds; every repeat offence (within a day) multiplies it by 4.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub ban_secs: u64,

    /// Longest ban in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_ban_secs: u64,

    /// Limits of the HTTP gateway to services (`POST /api/services/{service}/{type}`).
    #[command(flatten)]
    pub gateway: tabmesh_gateway::GatewayArgs,

    /// Also send the relay's spans (of the service calls it enters into the mesh) to an
    /// OpenTelemetry collector over OTLP/HTTP (JSON), e.g. http://127.0.0.1:4318 (Jaeger's OTLP
    /// port; `/v1/traces` is added).
    #[arg(long, value_name = "URL", value_parser = tabmesh_node::trace::export::endpoint_arg)]
    pub otlp_endpoint: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written to stderr. Levels come from `RUST_LOG` (default
/// `info,libp2p_kad::behaviour=error`: kad warns of its own routine when the relay has no peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When the web app is sent gzipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Gzip {
    /// To browsers on other machines; browsers on this one (loopback, not forwarded by a
    /// proxy) get the files as they are: there, gzip saves no transfer and costs every tab an
    /// inflate of its 3 MB module.
    Auto,
    /// To every browser that accepts it.
    Always,
    /// Never.
    Never,
}

fn parse_ice_url(url: &str) -> Result<String, String> {
    tabmesh_core::bootstrap::IceServer::check_url(url).map(|()| url.to_owned())
}

impl RelayArgs {
    /// The misbehaviour policy.
    pub fn ledger(&self) -> tabmesh_core::ledger::LedgerConfig {
        tabmesh_core::ledger::LedgerConfig {
            max_strikes: self.ban_after_strikes,
            first_ban: std::time::Duration::from_secs(self.ban_secs),
            max_ban: std::time::Duration::from_secs(self.max_ban_secs.max(self.ban_secs)),
            ..tabmesh_core::ledger::LedgerConfig::default()
        }
    }

    /// The ICE servers for `/api/bootstrap`: TURN servers get the credentials, which they need.
    pub fn ice_servers(&self) -> Result<Vec<tabmesh_core::bootstrap::IceServer>, String> {
        self.ice_servers
            .iter()
            .map(|url| {
                let mut server = tabmesh_core::bootstrap::IceServer {
                    urls: url.clone(),
                    username: None,
                    credential: None,
                };
                if server.is_turn() {
                    let (Some(user), Some(secret)) = (&self.ice_username, &self.ice_credential)
                    else {
                        return Err(format!(
                            "--ice-server {url}: a TURN server needs --ice-username and --ice-credential"
                        ));
                    };
                    server.username = Some(user.clone());
                    server.credential = Some(secret.clone());
                }
                Ok(server)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_to_loopback() {
        let args = RelayArgs::try_parse_from(["tabmesh-relay"]).expect("defaults parse");
        assert_eq!(args.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            (args.http_port, args.tcp_port, args.ws_port),
            (8080, 9090, 9091)
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for argv in [
            vec!["tabmesh-relay", "--host", "localhost:80"],
            vec!["tabmesh-relay", "--http-port", "70000"],
            vec!["tabmesh-relay", "--announce", "not-a-multiaddr"],
            vec!["tabmesh-relay", "--max-circuit-duration-secs", "0"],
            vec!["tabmesh-relay", "--ban-after-strikes", "0"],
            vec!["tabmesh-relay", "--no-such-flag"],
        ] {
            let err = RelayArgs::try_parse_from(&argv).expect_err("must be refused");
            assert!(!err.to_string().is_empty(), "{argv:?}");
        }
    }
}
