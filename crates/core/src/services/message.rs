//! The messages of the service protocol, `/tabmesh/service/1.0.0`.
//!
//! One call per stream: the caller writes a [`ServiceRequest`], the provider answers with a
//! [`ServiceReply`]. Both are JSON, framed by the node's codec, and at most
//! [`MAX_MESSAGE_BYTES`]. A request that cannot be read, is too large or names nothing valid is
//! a violation of the protocol (the sender's strike); a well-formed request the provider cannot
//! serve is answered with a [`Refusal`] saying why.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::descriptor::{MAX_NAME_LEN, check_name};

/// Largest request or reply on the wire, in bytes (the encoded JSON).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest description of who a call is for (an entry node calling for an HTTP client).
pub const MAX_ORIGIN_LEN: usize = 64;
/// Longest deadline a request may carry, in milliseconds.
pub const MAX_DEADLINE_MS: u64 = 120_000;

/// A call, as the provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    /// The service.
    pub service: String,
    /// The message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The message data.
    pub data: Value,
    /// Milliseconds the caller still waits; the provider drops work it cannot finish in time.
    pub deadline_ms: u64,
    /// Whom the caller acts for, when it is an entry node (an HTTP client, for instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The trace the call belongs to: the caller's span of this attempt (W3C `traceparent`).
    /// A malformed one makes the whole request malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceContext>,
}

/// Why a provider did not answer a call with data. The text is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Refusal {
    /// It does not offer the service (any more).
    #[error("does not offer the service")]
    UnknownService,
    /// The service does not answer this message type.
    #[error("{0}")]
    UnknownType(String),
    /// The data does not have the declared shape.
    #[error("bad data: {0}")]
    BadData(String),
    /// Too many calls already running or queued.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The handler failed, with its message.
    #[error("{0}")]
    Failed(String),
    /// The deadline passed before the handler finished.
    #[error("the deadline passed at the provider")]
    TimedOut,
    /// The request could not be read.
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl Refusal {
    /// Whether the caller should try another provider: this one cannot serve the call now, but
    /// another may. A refusal of the call itself (bad data, a handler's error) is final.
    pub fn try_another(&self) -> bool {
        matches!(self, Self::UnknownService | Self::Overloaded(_))
    }
}

/// The answer to a [`ServiceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServiceReply {
    /// The handler's reply.
    Ok {
        /// The reply data.
        data: Value,
        /// Time the provider spent, in milliseconds (queueing and handling).
        ms: u64,
    },
    /// Not served, and why.
    Refused {
        /// Why.
        refusal: Refusal,
    },
}

/// Why bytes received are not a valid message: a violation of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("a message of {0} bytes (at most {MAX_MESSAGE_BYTES})")]
    Oversized(usize),
    /// Not the expected JSON.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// A field out of bounds.
    #[error("{0}")]
    Invalid(String),
}

impl ServiceRequest {
    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads and checks a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Malformed::Oversized(bytes.len()));
        }
        let request: Self =
            serde_json::from_slice(bytes).map_err(|e| Malformed::Unreadable(e.to_string()))?;
        check_name("service", &request.service).map_err(|e| Malformed::Invalid(e.to_string()))?;
        if request.message_type.is_empty() || request.message_type.len() > MAX_NAME_LEN {
            return Err(Malformed::Invalid("bad message type name".into()));
        }
        if request.deadline_ms == 0 || request.deadline_ms > MAX_DEADLINE_MS {
            return Err(Malformed::Invalid(format!(
                "a deadline of {} ms (1 to {MAX_DEADLINE_MS})",
                request.deadline_ms
            )));
        }
        if request
            .origin
            .as_ref()
            .is_some_and(|o| o.len() > MAX_ORIGIN_LEN)
        {
            return Err(Malformed::Invalid("origin too long".into()));
        }
        Ok(request)
    }
}

impl ServiceReply {
    /// The wire bytes. A reply too large for the wire becomes a refusal saying so.
    pub fn encode(&self) -> Vec<u8> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        if bytes.len() <= MAX_MESSAGE_BYTES {
            return bytes;
        }
        let too_big = Self::Refused {
            refusal: Refusal::Failed(format!(
                "the reply is {} bytes; at most {MAX_MESSAGE_BYTES} travel",
                bytes.len()
            )),
        };
        serde_json::to_vec(&too_big).unwrap_or_default()
    }

    /// Reads a reply.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Malformed::Oversized(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| Malformed::Unreadable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> ServiceRequest {
        ServiceRequest {
            service: "echo".into(),
            message_type: "echo".into(),
            data: json!({"hello": 1}),
            deadline_ms: 5_000,
            origin: None,
            trace: None,
        }
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_malformed() {
        let r = request();
        assert_eq!(ServiceRequest::decode(&r.encode()).unwrap(), r);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.contains("\"type\":\"echo\""), "{text}");
        assert!(matches!(
            ServiceRequest::decode(b"{\"service\":1}"),
            Err(Malformed::Unreadable(_))
        ));
        let with = |f: &dyn Fn(&mut ServiceRequest)| {
            let mut r = request();
            f(&mut r);
            ServiceRequest::decode(&r.encode())
        };
        assert!(with(&|r| r.service = "Not Valid".into()).is_err());
        assert!(with(&|r| r.message_type = String::new()).is_err());
        assert!(with(&|r| r.deadline_ms = 0).is_err());
        assert!(with(&|r| r.deadline_ms = MAX_DEADLINE_MS + 1).is_err());
        assert!(with(&|r| r.origin = Some("x".repeat(MAX_ORIGIN_LEN + 1))).is_err());
        assert!(with(&|r| r.origin = Some("http 127.0.0.1".into())).is_ok());
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            ServiceRequest::decode(&big),
            Err(Malformed::Oversized(MAX_MESSAGE_BYTES + 1))
        );
    }

    #[test]
    fn numbers_cross_a_node_unchanged() {
        // Found by fuzzing (service_request): a number too large for an integer was read to a
        // float one bit off, so a request forwarded by a node carried another number.
        let sent = br#"{"service":"primes","type":"test","data":{"p":11111101111111111111111111111111111111127,"f":0.30000000000000004},"deadline_ms":1}"#;
        let read = ServiceRequest::decode(sent).unwrap();
        let forwarded = ServiceRequest::decode(&read.encode()).unwrap();
        assert_eq!(forwarded, read);
        assert_eq!(forwarded.encode(), read.encode());
        assert_eq!(read.data["f"], json!(0.1 + 0.2));
    }

    #[test]
    fn a_request_carries_its_trace_context_and_a_malformed_one_is_refused() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(12);
        let mut traced = request();
        traced.trace = Some(crate::trace::TraceContext::root(&mut rng));
        let bytes = traced.encode();
        assert!(String::from_utf8_lossy(&bytes).contains("\"trace\":\"00-"));
        assert_eq!(ServiceRequest::decode(&bytes), Ok(traced));
        let forged = br#"{"service":"echo","type":"echo","data":{},"deadline_ms":5,"trace":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}"#;
        assert!(matches!(
            ServiceRequest::decode(forged),
            Err(Malformed::Unreadable(why)) if why.contains("all zero")
        ));
        // Untraced requests are as before (no field on the wire).
        assert!(!String::from_utf8_lossy(&request().encode()).contains("trace"));
    }

    #[test]
    fn replies_round_trip_and_an_oversized_reply_becomes_a_refusal() {
        let ok = ServiceReply::Ok {
            data: json!([1, 2]),
            ms: 3,
        };
        assert_eq!(ServiceReply::decode(&ok.encode()).unwrap(), ok);
        let refused = ServiceReply::Refused {
            refusal: Refusal::BadData("/x: expected an integer".into()),
        };
        let text = String::from_utf8(refused.encode()).unwrap();
        assert!(text.contains("\"reason\":\"bad_data\""), "{text}");
        assert_eq!(ServiceReply::decode(text.as_bytes()).unwrap(), refused);
        let huge = ServiceReply::Ok {
            data: json!("x".repeat(MAX_MESSAGE_BYTES)),
            ms: 1,
        };
        match ServiceReply::decode(&huge.encode()).unwrap() {
            ServiceReply::Refused {
                refusal: Refusal::Failed(why),
            } => assert!(why.contains("at most"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(ServiceReply::decode(b"{\"status\":\"maybe\"}").is_err());
    }

    #[test]
    fn only_refusals_of_the_provider_not_of_the_call_send_the_call_elsewhere() {
        assert!(Refusal::UnknownService.try_another());
        assert!(Refusal::Overloaded("8 calls queued".into()).try_another());
        for final_ in [
            Refusal::BadData("x".into()),
            Refusal::UnknownType("x".into()),
            Refusal::Failed("x".into()),
            Refusal::TimedOut,
            Refusal::Malformed("x".into()),
        ] {
            assert!(!final_.try_another(), "{final_:?}");
        }
    }
}
