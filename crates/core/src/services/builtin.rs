//! The services every tab and native node can switch on.
//!
//! | service | message type | request → reply |
//! | --- | --- | --- |
//! | `lucas-lehmer` | `test` | `{exponent}` → `{exponent, is_prime, ms}`: GIMPS work farmed out |
//! | `echo` | `echo` | any data → the same data: latency |
//! | `node-info` | `status` | `{}` → the node's name, agent, uptime, peers and DHT figures |
//!
//! This module declares them and answers what needs no platform; the node runs the
//! Lucas-Lehmer test where the platform runs it (a worker in the browser).

use serde_json::{Value, json};

use super::descriptor::{Descriptor, MessageType};
use super::shape::Shape;

/// Farmed-out Lucas-Lehmer tests.
pub const LUCAS_LEHMER: &str = "lucas-lehmer";
/// Echo, for latency.
pub const ECHO: &str = "echo";
/// The node's figures.
pub const NODE_INFO: &str = "node-info";
/// Every built-in service, in display order.
pub const ALL: [&str; 3] = [LUCAS_LEHMER, ECHO, NODE_INFO];
/// Largest exponent `lucas-lehmer` tests (a few seconds in a tab).
pub const MAX_EXPONENT: u32 = 20_000;

fn shape(declaration: Value) -> Shape {
    Shape::parse(&declaration).unwrap_or_default()
}

/// The descriptor of built-in service `name`.
pub fn descriptor(name: &str) -> Option<Descriptor> {
    let (description, message_type, request, reply) = match name {
        LUCAS_LEHMER => (
            "Tests whether 2^exponent - 1 is prime (Lucas-Lehmer)",
            "test",
            json!({
                "type": "object",
                "properties": {"exponent": {"type": "integer", "minimum": 2, "maximum": MAX_EXPONENT}},
                "required": ["exponent"],
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "properties": {
                    "exponent": {"type": "integer"},
                    "is_prime": {"type": "boolean"},
                    "ms": {"type": "number"}
                },
                "required": ["exponent", "is_prime", "ms"]
            }),
        ),
        ECHO => (
            "Answers with the data it was sent",
            "echo",
            json!({}),
            json!({}),
        ),
        NODE_INFO => (
            "The node's name, agent, uptime, peers and DHT figures",
            "status",
            json!({"type": "object", "additionalProperties": false}),
            json!({"type": "object"}),
        ),
        _ => return None,
    };
    Descriptor::new(
        name,
        "1.0",
        description,
        [(
            message_type.to_owned(),
            MessageType {
                request: shape(request),
                reply: shape(reply),
            },
        )],
    )
    .ok()
}

/// The exponent of a `lucas-lehmer` request (checked against the descriptor already).
pub fn exponent(data: &Value) -> Option<u32> {
    data.get("exponent")?.as_u64()?.try_into().ok()
}

/// The reply of a `lucas-lehmer` test.
pub fn lucas_lehmer_reply(exponent: u32, is_prime: bool, ms: f64) -> Value {
    json!({"exponent": exponent, "is_prime": is_prime, "ms": (ms * 10.0).round() / 10.0})
}

/// What `node-info` answers, from the node's view.
pub fn node_info(view: &crate::view::NodeView) -> Value {
    use crate::peers::ConnectionKind;
    let count = |kind: ConnectionKind| view.peers.iter().filter(|p| p.connection == kind).count();
    let dht = view.dht.as_ref();
    let offers: Vec<&str> = view
        .services
        .iter()
        .flat_map(|s| s.offered.iter().map(|o| o.name.as_str()))
        .collect();
    json!({
        "name": view.name,
        "peer_id": view.peer_id,
        "agent": view.agent,
        "uptime_ms": view.now_ms,
        "peers": view.peers.len(),
        "direct": count(ConnectionKind::Direct),
        "relayed": count(ConnectionKind::Relayed),
        "relay": view.relay.link.state.as_str(),
        "dht_records": dht.map_or(0, |d| d.records.len()),
        "dht_providers": dht.map_or(0, |d| d.providers.len()),
        "routing_table": dht.map_or(0, |d| d.routing_table_size),
        "offers": offers,
        "banned": view.banned.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_a_valid_descriptor_that_checks_its_own_requests() {
        for name in ALL {
            let d = descriptor(name).expect(name);
            assert!(d.check().is_ok(), "{name}");
            assert_eq!(d.types.len(), 1);
        }
        assert!(descriptor("nope").is_none());
        let ll = descriptor(LUCAS_LEHMER).unwrap();
        assert!(ll.check_request("test", &json!({"exponent": 127})).is_ok());
        assert!(
            ll.check_request("test", &json!({"exponent": MAX_EXPONENT + 1}))
                .is_err()
        );
        assert!(ll.check_request("test", &json!({"exponent": 1})).is_err());
        assert!(
            ll.check_request("test", &json!({"exponent": 7, "x": 1}))
                .is_err()
        );
        // The reply declaration matches what the node answers.
        let reply = lucas_lehmer_reply(127, true, 1.234);
        assert!(ll.types["test"].reply.check(&reply).is_ok());
        assert_eq!(reply["ms"], json!(1.2));
        assert_eq!(exponent(&json!({"exponent": 127})), Some(127));
        let echo = descriptor(ECHO).unwrap();
        assert!(echo.check_request("echo", &json!([1, {"a": null}])).is_ok());
        let info = descriptor(NODE_INFO).unwrap();
        assert!(info.check_request("status", &json!({})).is_ok());
        assert!(info.check_request("status", &json!({"x": 1})).is_err());
    }

    #[test]
    fn node_info_counts_what_the_view_shows() {
        let mut view: crate::view::NodeView = serde_json::from_value(json!({
            "peer_id": "12D3KooWtest", "name": "brisk-otter", "short_id": "test",
            "agent": "tabmesh-web/0.1.0", "now_ms": 1234,
            "relay": crate::view::RelayView::default(),
            "peers": [], "listen_addrs": [], "wire": [], "banned": [],
            "counters": crate::view::Counters::default()
        }))
        .unwrap_or_else(|e| panic!("a minimal view: {e}"));
        view.services = Some(super::super::ServicesSection::default());
        let info = node_info(&view);
        assert_eq!(info["name"], "brisk-otter");
        assert_eq!(info["uptime_ms"], 1234);
        assert_eq!(
            (info["peers"].clone(), info["dht_records"].clone()),
            (json!(0), json!(0))
        );
        assert!(
            descriptor(NODE_INFO).unwrap().types["status"]
                .reply
                .check(&info)
                .is_ok()
        );
    }
}
