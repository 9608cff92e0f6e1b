//! What a service is (its descriptor) and where it is announced in the DHT.
//!
//! A **descriptor** names a service, its version and the message types it answers, each with
//! the [`Shape`] of its request and reply data. A provider announces a service with three kinds
//! of DHT entries, all under the `svc/` namespace:
//!
//! | key | kind | says |
//! | --- | --- | --- |
//! | `svc` | provider record | "I offer at least one service" (the catalog) |
//! | `svc/<name>` | provider record | "I offer `<name>`" |
//! | `svc/<name>/<peer>` | signed record | the descriptor `<peer>` offers under `<name>` |
//! | `svc/@<peer>` | signed record | the names and versions `<peer>` offers (its index) |
//!
//! A signed record under `svc/` is **bound to the peer its key names**: only that peer may
//! publish it, and its value must be a valid descriptor (or index) for that key. Every peer
//! checks this before storing, like a signature, so nobody can announce a service in another
//! peer's name or squat the key before it does ([`check_record`]).

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::shape::Shape;

/// The DHT namespace of services.
pub const NAMESPACE: &str = "svc";
/// Longest service or message type name.
pub const MAX_NAME_LEN: usize = 32;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 16;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 200;
/// Message types per service at most.
pub const MAX_MESSAGE_TYPES: usize = 16;
/// Services one peer offers at most.
pub const MAX_OFFERED: usize = 16;
/// Largest descriptor, encoded: it must fit a DHT record (4 KiB) with room to spare.
pub const MAX_DESCRIPTOR_BYTES: usize = 3 * 1024;

/// The request and reply shapes of one message type.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessageType {
    /// What the request data must look like.
    #[serde(default, skip_serializing_if = "Shape::is_any")]
    pub request: Shape,
    /// What the reply data looks like.
    #[serde(default, skip_serializing_if = "Shape::is_any")]
    pub reply: Shape,
}

/// A service as its provider declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// Its name (`lucas-lehmer`): lower-case letters, digits and `-`, at most 32 characters.
    pub name: String,
    /// Its version (`1.0`), free text of at most 16 characters.
    pub version: String,
    /// What it does, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The message types it answers, by name.
    pub types: BTreeMap<String, MessageType>,
}

/// Why a descriptor, a name or a call is not acceptable. The text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A service or message type name breaks the naming rule.
    #[error(
        "{what} \"{name}\" is not a valid name (1 to 32 lower-case letters, digits or '-', starting with a letter)"
    )]
    BadName {
        /// "service" or "message type".
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// Some other field is out of bounds or unreadable.
    #[error("bad descriptor: {0}")]
    Invalid(String),
}

/// Whether `name` may name a service or a message type.
pub fn check_name(what: &'static str, name: &str) -> Result<(), DescriptorError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(DescriptorError::BadName {
            what,
            name: name.chars().take(MAX_NAME_LEN + 8).collect(),
        })
    }
}

impl Descriptor {
    /// A descriptor with `types`, checked.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
        types: impl IntoIterator<Item = (String, MessageType)>,
    ) -> Result<Self, DescriptorError> {
        let descriptor = Self {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            types: crate::map_from(types),
        };
        descriptor.check()?;
        Ok(descriptor)
    }

    /// Checks every field against the bounds.
    pub fn check(&self) -> Result<(), DescriptorError> {
        check_name("service", &self.name)?;
        if self.version.is_empty() || self.version.len() > MAX_VERSION_LEN {
            return Err(DescriptorError::Invalid(format!(
                "the version must be 1 to {MAX_VERSION_LEN} characters"
            )));
        }
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(DescriptorError::Invalid(format!(
                "the description is over {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        if self.types.is_empty() || self.types.len() > MAX_MESSAGE_TYPES {
            return Err(DescriptorError::Invalid(format!(
                "a service answers 1 to {MAX_MESSAGE_TYPES} message types, not {}",
                self.types.len()
            )));
        }
        for name in self.types.keys() {
            check_name("message type", name)?;
        }
        let size = self.encode().len();
        if size > MAX_DESCRIPTOR_BYTES {
            return Err(DescriptorError::Invalid(format!(
                "the declaration is {size} bytes; at most {MAX_DESCRIPTOR_BYTES} fit in a DHT record"
            )));
        }
        Ok(())
    }

    /// Reads a descriptor from a record value (JSON), checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let descriptor: Self =
            serde_json::from_slice(bytes).map_err(|e| DescriptorError::Invalid(e.to_string()))?;
        descriptor.check()?;
        Ok(descriptor)
    }

    /// The record value (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The shapes of `message_type`, or the error a caller gets for an unknown one.
    pub fn message_type(&self, message_type: &str) -> Result<&MessageType, UnknownType> {
        self.types.get(message_type).ok_or_else(|| UnknownType {
            service: self.name.clone(),
            message_type: message_type.chars().take(MAX_NAME_LEN + 8).collect(),
            known: self.types.keys().cloned().collect(),
        })
    }

    /// Checks a request before it is sent (at the caller) or handled (at the provider).
    pub fn check_request(&self, message_type: &str, data: &Value) -> Result<(), RequestError> {
        let shapes = self.message_type(message_type)?;
        shapes
            .request
            .check(data)
            .map_err(|m| RequestError::BadData(m.to_string()))
    }
}

/// A message type the service does not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message type \"{message_type}\" ({service} answers {})", known.join(", "))]
pub struct UnknownType {
    /// The service.
    pub service: String,
    /// The type asked for.
    pub message_type: String,
    /// The types it answers.
    pub known: Vec<String>,
}

/// Why a request does not fit a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a message type of the service.
    #[error(transparent)]
    UnknownType(#[from] UnknownType),
    /// The data does not have the declared shape.
    #[error("bad data: {0}")]
    BadData(String),
}

/// What one peer offers, as its index record lists it (names and versions only; each
/// descriptor is a record of its own, so an index stays small).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Service name → version.
    pub services: BTreeMap<String, String>,
}

impl Index {
    /// Reads an index from a record value, checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let index: Self =
            serde_json::from_slice(bytes).map_err(|e| DescriptorError::Invalid(e.to_string()))?;
        if index.services.len() > MAX_OFFERED {
            return Err(DescriptorError::Invalid(format!(
                "an index lists at most {MAX_OFFERED} services"
            )));
        }
        for (name, version) in &index.services {
            check_name("service", name)?;
            if version.is_empty() || version.len() > MAX_VERSION_LEN {
                return Err(DescriptorError::Invalid(format!("bad version of {name}")));
            }
        }
        Ok(index)
    }

    /// The record value (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The provider-record key of the catalog: every peer that offers a service provides it.
pub fn catalog_key() -> String {
    NAMESPACE.to_owned()
}

/// The provider-record key of service `name`.
pub fn provider_key(name: &str) -> String {
    format!("{NAMESPACE}/{name}")
}

/// The record key of the descriptor `peer` offers under `name`.
pub fn descriptor_key(name: &str, peer: &PeerId) -> String {
    format!("{NAMESPACE}/{name}/{peer}")
}

/// The record key of `peer`'s index.
pub fn index_key(peer: &PeerId) -> String {
    format!("{NAMESPACE}/@{peer}")
}

/// What a key of the services namespace names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKey {
    /// The catalog's provider key.
    Catalog,
    /// A service's provider key.
    Providers(String),
    /// A descriptor record.
    Descriptor {
        /// The service.
        name: String,
        /// The peer it belongs to.
        peer: PeerId,
    },
    /// An index record.
    Index(PeerId),
}

/// Reads a key of the services namespace; `None` for keys outside it, `Some(Err)` for a key
/// inside it that names nothing.
pub fn parse_key(key: &[u8]) -> Option<Result<ServiceKey, DescriptorError>> {
    let key = std::str::from_utf8(key).ok()?;
    if key == NAMESPACE {
        return Some(Ok(ServiceKey::Catalog));
    }
    let rest = key.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
    let bad = || DescriptorError::Invalid(format!("\"{key}\" is not a services key"));
    let peer = |text: &str| text.parse::<PeerId>().map_err(|_| bad());
    Some(match rest.split('/').collect::<Vec<_>>()[..] {
        [at] if at.starts_with('@') => peer(&at[1..]).map(ServiceKey::Index),
        [name] => check_name("service", name).map(|()| ServiceKey::Providers(name.to_owned())),
        [name, p] => check_name("service", name).and_then(|()| {
            Ok(ServiceKey::Descriptor {
                name: name.to_owned(),
                peer: peer(p)?,
            })
        }),
        _ => Err(bad()),
    })
}

/// Why a signed record under `svc/` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordRefusal {
    /// Published by a peer other than the one its key names: a forgery.
    #[error("{key} belongs to {owner}, not to its publisher")]
    NotTheOwner {
        /// The key.
        key: String,
        /// The peer the key names.
        owner: String,
    },
    /// The key or the value is not what the namespace allows.
    #[error(transparent)]
    Malformed(#[from] DescriptorError),
}

/// The namespace rule for a signed record under `key`, published by `publisher`, holding
/// `value` (`tombstone`: a removal, which has no value to check). `Ok` for keys outside the
/// namespace.
pub fn check_record(
    key: &[u8],
    publisher: &PeerId,
    value: &[u8],
    tombstone: bool,
) -> Result<(), RecordRefusal> {
    let Some(parsed) = parse_key(key) else {
        return Ok(());
    };
    let key_text = String::from_utf8_lossy(key).into_owned();
    let owner = match parsed? {
        ServiceKey::Catalog | ServiceKey::Providers(_) => {
            return Err(DescriptorError::Invalid(format!(
                "{key_text} is a provider key; it holds no record"
            ))
            .into());
        }
        ServiceKey::Descriptor { name, peer } => {
            if !tombstone {
                let descriptor = Descriptor::decode(value)?;
                if descriptor.name != name {
                    return Err(DescriptorError::Invalid(format!(
                        "{key_text} holds the descriptor of \"{}\"",
                        descriptor.name
                    ))
                    .into());
                }
            }
            peer
        }
        ServiceKey::Index(peer) => {
            if !tombstone {
                Index::decode(value)?;
            }
            peer
        }
    };
    if &owner != publisher {
        return Err(RecordRefusal::NotTheOwner {
            key: key_text,
            owner: crate::names::peer_name(&owner),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn lucas_lehmer() -> Descriptor {
        serde_json::from_value(json!({
            "name": "lucas-lehmer",
            "version": "1.0",
            "types": {"test": {
                "request": {"type": "object", "properties": {"exponent": {"type": "integer", "minimum": 2}}, "required": ["exponent"]},
                "reply": {"type": "object"}
            }}
        }))
        .expect("descriptor")
    }

    #[test]
    fn names_are_short_lower_case_words() {
        for good in ["echo", "lucas-lehmer", "a1", &"x".repeat(MAX_NAME_LEN)] {
            assert!(check_name("service", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Echo",
            "1st",
            "a b",
            "a/b",
            "é",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            let e = check_name("service", bad).unwrap_err();
            assert!(e.to_string().contains("is not a valid name"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_descriptor_is_checked_when_built_and_when_read() {
        let d = lucas_lehmer();
        assert!(d.check().is_ok());
        assert_eq!(Descriptor::decode(d.encode().as_bytes()).unwrap(), d);
        let no_types = Descriptor::new("x", "1", "", []).unwrap_err();
        assert!(no_types.to_string().contains("1 to 16 message types"));
        let bad_type = Descriptor::new("x", "1", "", [("Test".into(), MessageType::default())]);
        assert!(
            bad_type
                .unwrap_err()
                .to_string()
                .contains("message type \"Test\"")
        );
        assert!(Descriptor::new("x", "", "", [("t".into(), MessageType::default())]).is_err());
        let many = (0..=MAX_MESSAGE_TYPES).map(|i| (format!("t{i}"), MessageType::default()));
        assert!(Descriptor::new("x", "1", "", many).is_err());
        let wide: serde_json::Map<String, Value> = (0..200)
            .map(|i| (format!("field{i}"), json!({"type": "string"})))
            .collect();
        let request = Shape::parse(&json!({"type": "object", "properties": wide})).unwrap();
        let too_big = Descriptor::new(
            "x",
            "1",
            "",
            [(
                "t".into(),
                MessageType {
                    request,
                    reply: Shape::any(),
                },
            )],
        );
        assert!(
            too_big
                .unwrap_err()
                .to_string()
                .contains("fit in a DHT record")
        );
        // Unknown fields and bad shapes inside are refused when read.
        assert!(
            Descriptor::decode(br#"{"name":"x","version":"1","types":{"t":{}},"extra":1}"#)
                .is_err()
        );
        let bad_shape = br#"{"name":"x","version":"1","types":{"t":{"request":{"type":"date"}}}}"#;
        assert!(Descriptor::decode(bad_shape).is_err());
        assert!(Descriptor::decode(b"not json").is_err());
    }

    #[test]
    fn requests_are_checked_against_the_message_type_and_its_shape() {
        let d = lucas_lehmer();
        assert!(d.check_request("test", &json!({"exponent": 127})).is_ok());
        let unknown = d.check_request("tset", &json!({})).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown message type \"tset\" (lucas-lehmer answers test)"
        );
        let bad = d
            .check_request("test", &json!({"exponent": "x"}))
            .unwrap_err();
        assert!(bad.to_string().starts_with("bad data: /exponent"), "{bad}");
    }

    #[test]
    fn keys_of_the_namespace_are_read_back() {
        let p = peer();
        assert_eq!(parse_key(b"svc"), Some(Ok(ServiceKey::Catalog)));
        assert_eq!(
            parse_key(provider_key("echo").as_bytes()),
            Some(Ok(ServiceKey::Providers("echo".into())))
        );
        assert_eq!(
            parse_key(descriptor_key("echo", &p).as_bytes()),
            Some(Ok(ServiceKey::Descriptor {
                name: "echo".into(),
                peer: p
            }))
        );
        assert_eq!(
            parse_key(index_key(&p).as_bytes()),
            Some(Ok(ServiceKey::Index(p)))
        );
        assert_eq!(parse_key(b"hello"), None);
        assert_eq!(parse_key(b"svcx"), None);
        assert!(matches!(parse_key(b"svc/echo/not-a-peer"), Some(Err(_))));
        assert!(matches!(parse_key(b"svc/a/b/c"), Some(Err(_))));
        assert!(matches!(parse_key(b"svc/Echo"), Some(Err(_))));
    }

    #[test]
    fn records_under_svc_belong_to_the_peer_their_key_names() {
        let (owner, other) = (peer(), peer());
        let d = lucas_lehmer();
        let key = descriptor_key(&d.name, &owner);
        let value = d.encode();
        assert!(check_record(key.as_bytes(), &owner, value.as_bytes(), false).is_ok());
        let forged = check_record(key.as_bytes(), &other, value.as_bytes(), false);
        assert!(matches!(forged, Err(RecordRefusal::NotTheOwner { .. })));
        // A removal by the owner carries no value; by anyone else it is still a forgery.
        assert!(check_record(key.as_bytes(), &owner, b"", true).is_ok());
        assert!(check_record(key.as_bytes(), &other, b"", true).is_err());
        // The value must be the descriptor of the service the key names.
        let wrong = descriptor_key("echo", &owner);
        assert!(check_record(wrong.as_bytes(), &owner, value.as_bytes(), false).is_err());
        assert!(check_record(key.as_bytes(), &owner, b"{}", false).is_err());
        // Index records: owner only, a valid index.
        let index = Index {
            services: [("echo".to_owned(), "1".to_owned())].into(),
        };
        let ikey = index_key(&owner);
        assert!(check_record(ikey.as_bytes(), &owner, index.encode().as_bytes(), false).is_ok());
        assert!(check_record(ikey.as_bytes(), &other, index.encode().as_bytes(), false).is_err());
        assert!(check_record(ikey.as_bytes(), &owner, b"[]", false).is_err());
        // Provider keys hold no records; keys outside the namespace are not this rule's business.
        assert!(check_record(b"svc/echo", &owner, b"x", false).is_err());
        assert!(check_record(b"hello", &other, b"anything", false).is_ok());
    }
}
