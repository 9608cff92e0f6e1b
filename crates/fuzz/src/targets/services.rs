//! Services: requests and replies on the wire, descriptors and indexes in the DHT, shapes.

use serde_json::Value;
use tabmesh_core::services::descriptor::{self, Descriptor, Index};
use tabmesh_core::services::message::{ServiceReply, ServiceRequest};
use tabmesh_core::services::shape::Shape;

use super::{outcome, peer};
use crate::{Outcome, Script, Target};

pub(super) const REQUEST: Target = Target {
    name: "service_request",
    about: "a service call as a provider reads it",
    run: request,
    seeds: requests,
};

pub(super) const REPLY: Target = Target {
    name: "service_reply",
    about: "a service reply as a caller reads it",
    run: reply,
    seeds: replies,
};

pub(super) const DESCRIPTOR: Target = Target {
    name: "service_descriptor",
    about: "a record under svc/: its key, descriptor or index value, and the namespace rule",
    run: descriptor,
    seeds: descriptors,
};

pub(super) const SHAPE: Target = Target {
    name: "service_shape",
    about: "a declared shape (JSON), and data checked against it",
    run: shape,
    seeds: shapes,
};

fn request(data: &[u8]) -> Outcome {
    let decoded = ServiceRequest::decode(data);
    if let Ok(request) = &decoded {
        let bytes = request.encode();
        let again = ServiceRequest::decode(&bytes).expect("a request re-encodes to a readable one");
        // Compared as bytes: a float may move by its last bit through JSON.
        assert_eq!(
            again.encode(),
            bytes,
            "a request survives encode and decode"
        );
    }
    outcome(&decoded)
}

fn requests() -> Vec<Vec<u8>> {
    [
        r#"{"service":"echo","type":"echo","data":{"n":1},"deadline_ms":5000}"#,
        r#"{"service":"primes","type":"test","data":{"p":127},"deadline_ms":1,"origin":"http 127.0.0.1","trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

fn reply(data: &[u8]) -> Outcome {
    let decoded = ServiceReply::decode(data);
    if let Ok(reply) = &decoded {
        let bytes = reply.encode();
        let again = ServiceReply::decode(&bytes).expect("a reply re-encodes to a readable one");
        assert_eq!(again.encode(), bytes, "a reply survives encode and decode");
    }
    outcome(&decoded)
}

fn replies() -> Vec<Vec<u8>> {
    [
        r#"{"status":"ok","data":{"n":1,"f":0.1},"ms":3}"#,
        r#"{"status":"refused","refusal":{"reason":"bad_data","detail":"n is missing"}}"#,
        r#"{"status":"refused","refusal":{"reason":"timed_out"}}"#,
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

/// `[tombstone][key length][key][value]`; the publisher is the peer the key names when it
/// names one, so that forged and genuine records both reach the value checks.
fn descriptor(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let tombstone = script.byte() & 1 == 1;
    let key = script.chunk();
    let value = script.remainder();
    let parsed = descriptor::parse_key(key);
    let publisher = match &parsed {
        Some(Ok(descriptor::ServiceKey::Descriptor { peer, .. }))
        | Some(Ok(descriptor::ServiceKey::Index(peer))) => *peer,
        _ => peer(6),
    };
    let checked = descriptor::check_record(key, &publisher, value, tombstone);
    if let Ok(found) = Descriptor::decode(value) {
        let again = Descriptor::decode(found.encode().as_bytes())
            .expect("a descriptor re-encodes to a readable one");
        assert_eq!(
            again.encode(),
            found.encode(),
            "a descriptor survives encode and decode"
        );
        for (name, types) in &found.types {
            let example = types.request.example();
            assert!(
                found.check_request(name, &example).is_ok(),
                "the example of {name}'s request fits its shape: {example}"
            );
        }
    }
    if let Ok(index) = Index::decode(value) {
        let again = Index::decode(index.encode().as_bytes()).expect("an index re-encodes");
        assert_eq!(again, index, "an index survives encode and decode");
    }
    outcome(&checked)
}

fn descriptors() -> Vec<Vec<u8>> {
    let owner = peer(7);
    let entry = |tombstone: u8, key: &str, value: &str| {
        let len = u8::try_from(key.len()).expect("seed keys are short");
        [&[tombstone, len], key.as_bytes(), value.as_bytes()].concat()
    };
    vec![
        entry(
            0,
            &descriptor::descriptor_key("echo", &owner),
            r#"{"name":"echo","version":"1","description":"says it back","types":{"echo":{"request":{"type":"object","properties":{"n":{"type":"integer","minimum":0}},"required":["n"]}}}}"#,
        ),
        entry(
            0,
            &descriptor::index_key(&owner),
            r#"{"services":{"echo":"1","primes":"2"}}"#,
        ),
        entry(1, &descriptor::index_key(&owner), ""),
        // Outside the namespace: no rule applies.
        entry(0, "color", "blue"),
    ]
}

/// `[length of the shape][shape JSON][data JSON]`.
fn shape(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let shape_text = script.u16();
    let shape_bytes = script.take(usize::from(shape_text));
    let Ok(declared) = serde_json::from_slice::<Value>(shape_bytes) else {
        return Outcome::Refused;
    };
    let parsed = Shape::parse(&declared);
    if let Ok(shape) = &parsed {
        let again = Shape::parse(&shape.to_json()).expect("a shape's JSON is a shape");
        assert_eq!(
            again.to_json(),
            shape.to_json(),
            "a shape survives its JSON"
        );
        let example = shape.example();
        assert!(
            shape.check(&example).is_ok(),
            "a shape's example fits it: {example} for {}",
            shape.to_json()
        );
        if let Ok(value) = serde_json::from_slice::<Value>(script.remainder()) {
            let _ = shape.check(&value);
        }
    }
    outcome(&parsed)
}

fn shapes() -> Vec<Vec<u8>> {
    let entry = |shape: &str, data: &str| {
        let len = u16::try_from(shape.len()).expect("seed shapes are short");
        [&len.to_be_bytes(), shape.as_bytes(), data.as_bytes()].concat()
    };
    vec![
        entry(
            r#"{"type":"object","properties":{"n":{"type":"integer","minimum":1,"maximum":100},"s":{"type":"string","maxLength":4,"enum":["a","bb"]}},"required":["n"],"additionalProperties":false}"#,
            r#"{"n":5,"s":"a"}"#,
        ),
        entry(
            r#"{"type":"array","items":{"type":"number","minimum":-1.5},"maxItems":3}"#,
            "[1,2.5]",
        ),
        entry(r#"{"type":"boolean"}"#, "true"),
        entry(r#"{"type":"null"}"#, "null"),
        entry("{}", r#"{"anything":[1]}"#),
    ]
}
