//! Calling a service: the caller's rules, as a state machine the node drives.
//!
//! 1. **Checked before anything leaves**: valid names, data of at most
//!    [`MAX_MESSAGE_BYTES`], a deadline within bounds
//!    (`default_deadline` when none is given), and at most `max_in_flight` calls of this caller
//!    at once.
//! 2. **Providers come from the DHT** (the provider records under `svc/<name>`), kept for
//!    `provider_cache`; one lookup serves every call waiting for the same service.
//! 3. **Choice**: a provider we are connected to (ourselves, then any live connection) before one
//!    we would have to dial; among those, the one with the fewest of our calls in flight, then the
//!    one we sent the fewest calls (so the load spreads), then the lowest peer id.
//! 4. **The descriptor first**: before the first call to a provider, the caller reads the
//!    provider's descriptor (cached for `descriptor_cache`) and checks the message type and the
//!    data against it; a call that does not fit never leaves ("unknown message type",
//!    "bad data: …"). A provider without a readable descriptor is still tried: it checks too.
//! 5. **Failover**: a provider that cannot be reached, goes away mid-call, says it is overloaded
//!    or no longer offers the service, or answers something unreadable is set aside and the next
//!    one is tried, up to `max_attempts`; a cached provider list that runs out is looked up
//!    afresh once. With nobody left, the call fails with "no provider". A connection that closes
//!    under a call while another one to the provider stays up (the relayed one giving way to a
//!    direct one) does not set the provider aside: the call is sent to it again over that one,
//!    once per provider.
//! 6. **Deadline**: every call ends by its deadline ("timed out after N ms"), whatever it waits
//!    for; a reply that comes later is dropped.
//!
//! Time enters as `now`; the driver calls [`Calls::advance`] after every input and at
//! [`Calls::poll_timeout`], and carries out the [`Step`]s it returns.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use web_time::{Duration, Instant};

use super::descriptor::{Descriptor, RequestError, check_name};
use super::message::{MAX_DEADLINE_MS, MAX_MESSAGE_BYTES, MAX_ORIGIN_LEN, Refusal, ServiceRequest};
use crate::names::peer_name;
use crate::peers::millis;

/// The caller's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Deadline of a call that names none.
    pub default_deadline: Duration,
    /// Calls of this caller in flight at once, at most (rule 1).
    pub max_in_flight: usize,
    /// Providers tried per call, at most (rule 5).
    pub max_attempts: u32,
    /// How long a provider list is reused (rule 2).
    pub provider_cache: Duration,
    /// How long a descriptor is reused (rule 4).
    pub descriptor_cache: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
            max_in_flight: 32,
            max_attempts: 4,
            provider_cache: Duration::from_secs(30),
            descriptor_cache: Duration::from_secs(60),
        }
    }
}

/// A call as a user makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The service.
    pub service: String,
    /// The message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The message data.
    #[serde(default)]
    pub data: Value,
    /// How long to wait at most, in ms (default: the caller's configured deadline).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Whom the call is for, when this peer is an entry node (shown to the provider).
    #[serde(default)]
    pub origin: Option<String>,
}

/// How this peer reaches a provider right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// It is this peer.
    Local,
    /// A direct connection.
    Direct,
    /// A connection through the relay.
    Relayed,
    /// No connection yet: it has to be dialed.
    None,
}

/// Identifies a call of one caller.
pub type CallId = u64;

/// How an attempt ended without a reply (beside a provider's [`Refusal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It could not be reached.
    Unreachable(String),
    /// The connection the attempt went over closed before the reply; `still_linked`: another
    /// connection to the provider is up.
    ConnectionClosed {
        /// Another connection to the provider is up.
        still_linked: bool,
    },
    /// It answered something unreadable (a violation, reported separately).
    Malformed(String),
    /// It refused the call.
    Refused(Refusal),
}

impl Failure {
    fn try_another(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::ConnectionClosed { .. } | Self::Malformed(_) => true,
            Self::Refused(refusal) => refusal.try_another(),
        }
    }

    /// What went wrong, in a few words.
    pub fn summary(&self) -> String {
        match self {
            Self::Unreachable(why) => why.clone(),
            Self::ConnectionClosed { .. } => "connection closed".to_owned(),
            Self::Malformed(why) => format!("answered garbage ({why})"),
            Self::Refused(refusal) => refusal.to_string(),
        }
    }
}

/// Why a call failed. The text is what the caller sees; it starts with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nobody offers the service.
    #[error("no provider: nobody offers \"{service}\"")]
    NotOffered {
        /// The service.
        service: String,
    },
    /// Providers exist but none could serve the call.
    #[error("no provider of \"{service}\" answered (tried {})", tried.join("; "))]
    NoProvider {
        /// The service.
        service: String,
        /// Each provider tried, with what went wrong.
        tried: Vec<String>,
    },
    /// The service does not answer that message type.
    #[error("{0}")]
    UnknownType(String),
    /// The data does not have the declared shape.
    #[error("bad data: {0}")]
    BadData(String),
    /// The deadline passed.
    #[error("timed out after {ms} ms {waiting}")]
    TimedOut {
        /// The deadline, in ms.
        ms: u64,
        /// What the call was waiting for then ("waiting for the DHT to name providers", "for a
        /// relayed provider to answer", ...): what was slow.
        waiting: String,
    },
    /// The provider refused the call itself (its handler failed, or the deadline passed there).
    #[error("provider refused: {0}")]
    Refused(String),
    /// Too many calls of this caller in flight.
    #[error("too many calls in flight (at most {0})")]
    Busy(usize),
    /// The call is not well formed (a name, a size, a deadline).
    #[error("invalid call: {0}")]
    Invalid(String),
}

impl CallError {
    /// A stable code for programs (the HTTP gateway's `error` field, the JS error's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotOffered { .. } => "unknown_service",
            Self::NoProvider { .. } => "no_provider",
            Self::UnknownType(_) => "unknown_message_type",
            Self::BadData(_) => "bad_data",
            Self::TimedOut { .. } => "timed_out",
            Self::Refused(_) => "refused",
            Self::Busy(_) => "busy",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl From<RequestError> for CallError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::UnknownType(u) => Self::UnknownType(u.to_string()),
            RequestError::BadData(why) => Self::BadData(why),
        }
    }
}

/// A call that was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The reply data.
    pub data: Value,
    /// Who answered.
    pub provider: PeerId,
    /// How we reached it.
    pub link: Link,
    /// Providers tried, this one included.
    pub attempts: u32,
    /// Time from the call to the reply, ms.
    pub duration_ms: u64,
    /// Time the provider spent, ms.
    pub provider_ms: u64,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Look up the providers of `service` in the DHT, then [`Calls::on_providers`].
    FindProviders {
        /// The service.
        service: String,
    },
    /// Read the descriptor `provider` published for `service`, then [`Calls::on_descriptor`].
    Describe {
        /// The service.
        service: String,
        /// The provider.
        provider: PeerId,
    },
    /// Send `request` to `provider` (serve it here if the link is [`Link::Local`]), then
    /// [`Calls::on_reply`].
    Send {
        /// The call.
        id: CallId,
        /// To whom.
        provider: PeerId,
        /// How we reach it.
        link: Link,
        /// The request, with the deadline left.
        request: ServiceRequest,
    },
    /// The call is over.
    Done {
        /// The call.
        id: CallId,
        /// Its outcome.
        result: Result<Answered, CallError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Providers,
    Descriptor(PeerId),
    Reply(PeerId, Link),
}

impl Waiting {
    /// What a call that timed out was waiting for, in words.
    fn describe(self) -> &'static str {
        match self {
            Self::Nothing => "before anything could be sent",
            Self::Providers => "waiting for the DHT to name providers",
            Self::Descriptor(_) => "waiting for the DHT to give a provider's descriptor",
            Self::Reply(_, Link::Local) => "waiting for this peer's own handler",
            Self::Reply(_, Link::Direct) => "waiting for a provider to answer (direct)",
            Self::Reply(_, Link::Relayed) => "waiting for a provider to answer (relayed)",
            Self::Reply(_, Link::None) => "waiting for a provider to be dialed and answer",
        }
    }
}

#[derive(Debug)]
struct Call {
    request: CallRequest,
    started: Instant,
    deadline: Instant,
    providers: Option<Vec<PeerId>>,
    looked_up: bool,
    tried: Vec<(PeerId, String)>,
    /// Providers the call was sent to again after its connection closed (rule 5).
    resent: Vec<PeerId>,
    /// The provider to send to next, its connection having closed under the call.
    again: Option<PeerId>,
    waiting: Waiting,
}

#[derive(Debug, Default, Clone, Copy)]
struct Load {
    in_flight: u32,
    sent: u64,
}

/// The calls of one caller, and what it remembers about providers.
#[derive(Debug)]
pub struct Calls {
    config: CallConfig,
    next_id: CallId,
    calls: BTreeMap<CallId, Call>,
    load: HashMap<PeerId, Load>,
    providers: HashMap<String, (Instant, Vec<PeerId>)>,
    descriptors: HashMap<(String, PeerId), (Instant, Option<Descriptor>)>,
    lookups: HashSet<String>,
    describing: HashSet<(String, PeerId)>,
}

impl Calls {
    /// No calls yet.
    pub fn new(config: CallConfig) -> Self {
        Self {
            config,
            next_id: 1,
            calls: BTreeMap::new(),
            load: HashMap::new(),
            providers: HashMap::new(),
            descriptors: HashMap::new(),
            lookups: HashSet::new(),
            describing: HashSet::new(),
        }
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Starts a call (rule 1); [`advance`](Self::advance) says what to do for it.
    pub fn start(&mut self, request: CallRequest, now: Instant) -> Result<CallId, CallError> {
        check_name("service", &request.service).map_err(|e| CallError::Invalid(e.to_string()))?;
        check_name("message type", &request.message_type)
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        let size = serde_json::to_vec(&request.data).map_or(0, |b| b.len());
        if size > MAX_MESSAGE_BYTES - 1024 {
            return Err(CallError::Invalid(format!(
                "the data is {size} bytes; at most {} are sent",
                MAX_MESSAGE_BYTES - 1024
            )));
        }
        let deadline_ms = request
            .deadline_ms
            .unwrap_or_else(|| millis(self.config.default_deadline));
        if deadline_ms == 0 || deadline_ms > MAX_DEADLINE_MS {
            return Err(CallError::Invalid(format!(
                "a deadline of {deadline_ms} ms (1 to {MAX_DEADLINE_MS})"
            )));
        }
        if request
            .origin
            .as_ref()
            .is_some_and(|o| o.len() > MAX_ORIGIN_LEN)
        {
            return Err(CallError::Invalid("origin too long".into()));
        }
        if self.calls.len() >= self.config.max_in_flight {
            return Err(CallError::Busy(self.config.max_in_flight));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(
            id,
            Call {
                request,
                started: now,
                deadline: now + Duration::from_millis(deadline_ms),
                providers: None,
                looked_up: false,
                tried: Vec::new(),
                resent: Vec::new(),
                again: None,
                waiting: Waiting::Nothing,
            },
        );
        Ok(id)
    }

    /// What to do now for every call that can move: lookups, descriptor reads and sends to
    /// start, and calls that are over (answered, failed or past their deadline). `link` says
    /// how each provider is reached right now.
    pub fn advance(&mut self, now: Instant, link: impl Fn(&PeerId) -> Link) -> Vec<Step> {
        let mut steps = Vec::new();
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(step) = self.advance_one(id, now, &link) {
                if let Step::Done { .. } = step {
                    self.finish(id);
                }
                steps.push(step);
            }
        }
        steps
    }

    fn advance_one(
        &mut self,
        id: CallId,
        now: Instant,
        link: &impl Fn(&PeerId) -> Link,
    ) -> Option<Step> {
        let config = self.config.clone();
        let call = self.calls.get_mut(&id)?;
        if now >= call.deadline {
            let ms = millis(call.deadline.saturating_duration_since(call.started));
            let waiting = call.waiting.describe().to_owned();
            return Some(Step::Done {
                id,
                result: Err(CallError::TimedOut { ms, waiting }),
            });
        }
        match call.waiting {
            Waiting::Nothing => {}
            Waiting::Providers | Waiting::Descriptor(_) | Waiting::Reply(..) => return None,
        }
        let service = call.request.service.clone();
        // Rule 2: providers from the cache or a lookup.
        if call.providers.is_none() {
            match self.providers.get(&service) {
                Some((at, list)) if now.saturating_duration_since(*at) < config.provider_cache => {
                    call.providers = Some(list.clone());
                }
                _ => {
                    call.waiting = Waiting::Providers;
                    call.looked_up = true;
                    return self
                        .lookups
                        .insert(service.clone())
                        .then_some(Step::FindProviders { service });
                }
            }
        }
        // Rule 3: the best provider not tried yet.
        let tried: HashSet<PeerId> = call.tried.iter().map(|(p, _)| *p).collect();
        let load = &self.load;
        let again = call.again.take().map(|p| (p, link(&p)));
        let best = again.or_else(|| {
            call.providers
                .iter()
                .flatten()
                .filter(|p| !tried.contains(p))
                .map(|p| {
                    let l = load.get(p).copied().unwrap_or_default();
                    let reach = link(p);
                    (
                        (
                            reach == Link::None,
                            reach != Link::Local,
                            l.in_flight,
                            l.sent,
                            p.to_bytes(),
                        ),
                        *p,
                        reach,
                    )
                })
                .min_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, p, reach)| (p, reach))
        });
        let attempts = u32::try_from(call.tried.len()).unwrap_or(u32::MAX);
        let Some((provider, reach)) = best.filter(|_| attempts < config.max_attempts) else {
            // Rule 5: a cached list that ran out is looked up afresh, once.
            if !call.looked_up && attempts < config.max_attempts {
                call.providers = None;
                self.providers.remove(&service);
                call.looked_up = true;
                call.waiting = Waiting::Providers;
                return self
                    .lookups
                    .insert(service.clone())
                    .then_some(Step::FindProviders { service });
            }
            let result = if call.tried.is_empty() {
                Err(CallError::NotOffered { service })
            } else {
                Err(CallError::NoProvider {
                    service,
                    tried: call
                        .tried
                        .iter()
                        .map(|(p, why)| format!("{}: {why}", peer_name(p)))
                        .collect(),
                })
            };
            return Some(Step::Done { id, result });
        };
        // Rule 4: the provider's descriptor, then the check.
        let key = (service.clone(), provider);
        match self.descriptors.get(&key) {
            Some((at, descriptor))
                if now.saturating_duration_since(*at) < config.descriptor_cache =>
            {
                if let Some(descriptor) = descriptor
                    && let Err(e) =
                        descriptor.check_request(&call.request.message_type, &call.request.data)
                {
                    return Some(Step::Done {
                        id,
                        result: Err(e.into()),
                    });
                }
            }
            _ => {
                call.waiting = Waiting::Descriptor(provider);
                return self
                    .describing
                    .insert(key)
                    .then_some(Step::Describe { service, provider });
            }
        }
        call.waiting = Waiting::Reply(provider, reach);
        let load = self.load.entry(provider).or_default();
        load.in_flight += 1;
        load.sent += 1;
        Some(Step::Send {
            id,
            provider,
            link: reach,
            request: ServiceRequest {
                service,
                message_type: call.request.message_type.clone(),
                data: call.request.data.clone(),
                deadline_ms: millis(call.deadline.saturating_duration_since(now)).max(1),
                origin: call.request.origin.clone(),
                trace: None,
            },
        })
    }

    /// The providers of `service` were looked up (`Err`: the lookup failed, said why).
    pub fn on_providers(
        &mut self,
        service: &str,
        found: Result<Vec<PeerId>, String>,
        now: Instant,
    ) {
        self.lookups.remove(service);
        let list = match found {
            Ok(list) => {
                self.providers
                    .insert(service.to_owned(), (now, list.clone()));
                list
            }
            Err(_) => Vec::new(),
        };
        for call in self.calls.values_mut() {
            if call.waiting == Waiting::Providers && call.request.service == service {
                call.providers = Some(list.clone());
                call.waiting = Waiting::Nothing;
            }
        }
    }

    /// The descriptor `provider` published for `service` was read (`None`: none found).
    pub fn on_descriptor(
        &mut self,
        service: &str,
        provider: PeerId,
        descriptor: Option<Descriptor>,
        now: Instant,
    ) {
        let key = (service.to_owned(), provider);
        self.describing.remove(&key);
        self.descriptors.insert(key, (now, descriptor));
        for call in self.calls.values_mut() {
            if call.waiting == Waiting::Descriptor(provider) && call.request.service == service {
                call.waiting = Waiting::Nothing;
            }
        }
    }

    /// The attempt of call `id` at `provider` ended: with the reply data and the provider's
    /// time (`Ok`), or without. Returns the call's end when this ends it (a late answer to a
    /// call that is over returns nothing).
    pub fn on_reply(
        &mut self,
        id: CallId,
        provider: PeerId,
        outcome: Result<(Value, u64), Failure>,
        now: Instant,
    ) -> Option<Step> {
        let call = self.calls.get_mut(&id)?;
        let Waiting::Reply(waited_for, link) = call.waiting else {
            return None;
        };
        if waited_for != provider {
            return None;
        }
        if let Some(load) = self.load.get_mut(&provider) {
            load.in_flight = load.in_flight.saturating_sub(1);
        }
        call.waiting = Waiting::Nothing;
        let step = match outcome {
            Ok((data, provider_ms)) => Some(Step::Done {
                id,
                result: Ok(Answered {
                    data,
                    provider,
                    link,
                    attempts: u32::try_from(call.tried.len() + 1).unwrap_or(u32::MAX),
                    duration_ms: millis(now.saturating_duration_since(call.started)),
                    provider_ms,
                }),
            }),
            // Rule 5: the provider is still linked; the call goes to it again over that link.
            Err(Failure::ConnectionClosed { still_linked: true })
                if !call.resent.contains(&provider) =>
            {
                call.resent.push(provider);
                call.again = Some(provider);
                None
            }
            Err(failure) if failure.try_another() => {
                call.tried.push((provider, failure.summary()));
                // A provider that is gone or no longer offers the service leaves the cache.
                let service = call.request.service.clone();
                if let Some((_, list)) = self.providers.get_mut(&service) {
                    list.retain(|p| *p != provider);
                }
                None
            }
            Err(Failure::Refused(refusal)) => Some(Step::Done {
                id,
                result: Err(match refusal {
                    Refusal::UnknownType(why) => CallError::UnknownType(why),
                    Refusal::BadData(why) => CallError::BadData(why),
                    other => CallError::Refused(other.to_string()),
                }),
            }),
            Err(other) => Some(Step::Done {
                id,
                result: Err(CallError::Refused(other.summary())),
            }),
        };
        if step.is_some() {
            self.finish(id);
        }
        step
    }

    /// When [`advance`](Self::advance) must run again at the latest (the next deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.values().map(|c| c.deadline).min()
    }

    fn finish(&mut self, id: CallId) {
        if let Some(call) = self.calls.remove(&id)
            && let Waiting::Reply(provider, _) = call.waiting
            && let Some(load) = self.load.get_mut(&provider)
        {
            load.in_flight = load.in_flight.saturating_sub(1);
        }
        // Forget the load of providers nobody calls now and the cache entries past their use.
        self.load.retain(|_, l| l.in_flight > 0 || l.sent > 0);
        if self.load.len() > 4 * self.config.max_in_flight.max(64) {
            self.load.retain(|_, l| l.in_flight > 0);
        }
    }

    /// Drops cache entries older than their lifetime (call now and then).
    pub fn expire_caches(&mut self, now: Instant) {
        let (pc, dc) = (self.config.provider_cache, self.config.descriptor_cache);
        self.providers
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < pc);
        self.descriptors
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < dc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::descriptor::MessageType;
    use crate::services::shape::Shape;
    use serde_json::json;

    fn peer(seed: u8) -> PeerId {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        libp2p_identity::Keypair::ed25519_from_bytes(bytes)
            .expect("key")
            .public()
            .to_peer_id()
    }

    fn echo() -> Descriptor {
        let request = Shape::parse(
            &json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        )
        .unwrap();
        Descriptor::new(
            "echo",
            "1",
            "",
            [(
                "echo".to_owned(),
                MessageType {
                    request,
                    reply: Shape::any(),
                },
            )],
        )
        .unwrap()
    }

    fn call(data: Value) -> CallRequest {
        CallRequest {
            service: "echo".into(),
            message_type: "echo".into(),
            data,
            deadline_ms: Some(5_000),
            origin: None,
        }
    }

    fn connected(_: &PeerId) -> Link {
        Link::Direct
    }

    /// Runs lookups and descriptor reads with `providers` and their descriptors until a send or
    /// an end.
    fn drive(
        calls: &mut Calls,
        providers: &[PeerId],
        now: Instant,
        link: impl Fn(&PeerId) -> Link,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        for _ in 0..10 {
            let steps = calls.advance(now, &link);
            let mut progressed = false;
            for step in steps {
                match step {
                    Step::FindProviders { service } => {
                        calls.on_providers(&service, Ok(providers.to_vec()), now);
                        progressed = true;
                    }
                    Step::Describe { service, provider } => {
                        calls.on_descriptor(&service, provider, Some(echo()), now);
                        progressed = true;
                    }
                    other => out.push(other),
                }
            }
            if !progressed {
                return out;
            }
        }
        panic!("no progress");
    }

    fn sent_to(steps: &[Step]) -> Vec<PeerId> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send { provider, .. } => Some(*provider),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rule_1_bad_calls_never_start() {
        let mut calls = Calls::new(CallConfig {
            max_in_flight: 1,
            ..CallConfig::default()
        });
        let now = Instant::now();
        let mut bad = call(json!({}));
        bad.service = "No Such".into();
        assert!(matches!(calls.start(bad, now), Err(CallError::Invalid(_))));
        let mut late = call(json!({}));
        late.deadline_ms = Some(MAX_DEADLINE_MS + 1);
        assert!(matches!(calls.start(late, now), Err(CallError::Invalid(_))));
        let big = call(json!("x".repeat(MAX_MESSAGE_BYTES)));
        assert!(matches!(calls.start(big, now), Err(CallError::Invalid(_))));
        calls.start(call(json!({"n": 1})), now).unwrap();
        let busy = calls.start(call(json!({"n": 1})), now).unwrap_err();
        assert_eq!(busy.to_string(), "too many calls in flight (at most 1)");
    }

    #[test]
    fn rule_2_one_lookup_serves_every_waiting_call_and_is_cached() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        calls.start(call(json!({"n": 1})), now).unwrap();
        calls.start(call(json!({"n": 2})), now).unwrap();
        let steps = calls.advance(now, connected);
        let lookups = steps
            .iter()
            .filter(|s| matches!(s, Step::FindProviders { .. }))
            .count();
        assert_eq!(lookups, 1, "{steps:?}");
        let a = peer(1);
        calls.on_providers("echo", Ok(vec![a]), now);
        let sends = drive(&mut calls, &[a], now, connected);
        assert_eq!(sent_to(&sends), vec![a, a]);
        // A call within the cache lifetime goes without a lookup; after it, with one.
        // (The first two calls time out meanwhile; only the new call's steps matter here.)
        let later = now + Duration::from_secs(10);
        calls.start(call(json!({"n": 3})), later).unwrap();
        let steps = calls.advance(later, connected);
        assert_eq!(sent_to(&steps), vec![a], "{steps:?}");
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::FindProviders { .. }))
        );
        let much_later = now + CallConfig::default().provider_cache + Duration::from_secs(1);
        calls.start(call(json!({"n": 4})), much_later).unwrap();
        let steps = calls.advance(much_later, connected);
        assert!(
            matches!(&steps[..], [.., Step::FindProviders { .. }]) && sent_to(&steps).is_empty(),
            "{steps:?}"
        );
    }

    #[test]
    fn rule_3_connected_providers_first_then_the_load_spreads() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let (a, b, far) = (peer(1), peer(2), peer(3));
        let link = |p: &PeerId| {
            if *p == far {
                Link::None
            } else if *p == a {
                Link::Relayed
            } else {
                Link::Direct
            }
        };
        for n in 0..4 {
            calls.start(call(json!({"n": n})), now).unwrap();
        }
        let sends = sent_to(&drive(&mut calls, &[far, a, b], now, link));
        assert_eq!(sends.len(), 4);
        assert!(
            !sends.contains(&far),
            "a provider to dial is not chosen while connected ones are free"
        );
        let to_a = sends.iter().filter(|p| **p == a).count();
        assert_eq!(
            to_a, 2,
            "calls alternate between the connected providers: {sends:?}"
        );
        // Ourselves first when we offer it too.
        let mut calls = Calls::new(CallConfig::default());
        calls.start(call(json!({"n": 1})), now).unwrap();
        let me = peer(9);
        let local = |p: &PeerId| if *p == me { Link::Local } else { Link::Direct };
        let steps = drive(&mut calls, &[a, me], now, local);
        assert!(
            matches!(&steps[..], [Step::Send { provider, link: Link::Local, .. }] if *provider == me)
        );
    }

    #[test]
    fn rule_4_calls_that_do_not_fit_the_descriptor_never_leave() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        calls.start(call(json!({"n": "one"})), now).unwrap();
        let mut unknown = call(json!({"n": 1}));
        unknown.message_type = "ping".into();
        calls.start(unknown, now).unwrap();
        let steps = drive(&mut calls, &[peer(1)], now, connected);
        let errors: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Done { result: Err(e), .. } => Some(e.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 2, "{steps:?}");
        assert!(errors[0].starts_with("bad data: /n"), "{errors:?}");
        assert!(
            errors[1].starts_with("unknown message type \"ping\""),
            "{errors:?}"
        );
        assert_eq!(calls.in_flight(), 0);
        // No descriptor found: the provider is tried anyway (it checks too).
        let mut calls = Calls::new(CallConfig::default());
        calls.start(call(json!({"n": 1})), now).unwrap();
        let steps = calls.advance(now, connected);
        assert!(matches!(&steps[..], [Step::FindProviders { .. }]));
        calls.on_providers("echo", Ok(vec![peer(1)]), now);
        let steps = calls.advance(now, connected);
        assert!(matches!(&steps[..], [Step::Describe { .. }]));
        calls.on_descriptor("echo", peer(1), None, now);
        assert!(matches!(
            &calls.advance(now, connected)[..],
            [Step::Send { .. }]
        ));
    }

    #[test]
    fn rule_5_failover_to_the_next_provider_and_a_clear_error_when_none_is_left() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let first = sent_to(&drive(&mut calls, &[a, b], now, connected))[0];
        let second_choice = if first == a { b } else { a };
        let gone = Failure::Unreachable("connection closed".into());
        assert_eq!(calls.on_reply(id, first, Err(gone), now), None);
        // The next provider: its descriptor is read first, then the call goes to it.
        let retry = drive(&mut calls, &[a, b], now, connected);
        assert_eq!(sent_to(&retry), vec![second_choice]);
        let overloaded = Failure::Refused(Refusal::Overloaded("16 queued".into()));
        assert_eq!(
            calls.on_reply(id, second_choice, Err(overloaded), now),
            None
        );
        // The list was fresh from the DHT and everyone on it was tried: the call fails.
        match &calls.advance(now, connected)[..] {
            [
                Step::Done {
                    result: Err(e @ CallError::NoProvider { .. }),
                    ..
                },
            ] => {
                let text = e.to_string();
                assert!(
                    text.starts_with("no provider of \"echo\" answered"),
                    "{text}"
                );
                assert!(
                    text.contains("connection closed") && text.contains("overloaded"),
                    "{text}"
                );
                assert_eq!(e.code(), "no_provider");
            }
            other => panic!("{other:?}"),
        }
        // Both failed providers left the cache; a call that finds the cached list empty looks
        // the providers up afresh (once) instead of failing on stale knowledge.
        calls.start(call(json!({"n": 2})), now).unwrap();
        let steps = calls.advance(now, connected);
        assert!(
            matches!(&steps[..], [Step::FindProviders { .. }]),
            "{steps:?}"
        );
        calls.on_providers("echo", Ok(vec![b]), now);
        assert_eq!(sent_to(&calls.advance(now, connected)), vec![b]);
        // Nobody offers it at all.
        let mut calls = Calls::new(CallConfig::default());
        calls.start(call(json!({"n": 1})), now).unwrap();
        match &drive(&mut calls, &[], now, connected)[..] {
            [Step::Done { result: Err(e), .. }] => {
                assert_eq!(e.to_string(), "no provider: nobody offers \"echo\"");
                assert_eq!(e.code(), "unknown_service");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_5_a_connection_that_closes_under_a_call_while_another_is_up_is_not_a_failover() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let first = sent_to(&drive(&mut calls, &[a, b], now, connected))[0];
        let other = if first == a { b } else { a };
        // The relayed connection closed (the direct one took over): the same provider is asked
        // again, although the other one has fewer calls sent.
        let replaced = Failure::ConnectionClosed { still_linked: true };
        assert_eq!(calls.on_reply(id, first, Err(replaced.clone()), now), None);
        assert_eq!(sent_to(&calls.advance(now, connected)), vec![first]);
        // Once per provider: a second close sets it aside like any failure.
        assert_eq!(calls.on_reply(id, first, Err(replaced), now), None);
        assert_eq!(
            sent_to(&drive(&mut calls, &[a, b], now, connected)),
            vec![other]
        );
        // A close that leaves no link is a failover at once.
        let gone = Failure::ConnectionClosed {
            still_linked: false,
        };
        assert_eq!(calls.on_reply(id, other, Err(gone), now), None);
        match &calls.advance(now, connected)[..] {
            [Step::Done { result: Err(e), .. }] => {
                assert_eq!(
                    e.to_string(),
                    format!(
                        "no provider of \"echo\" answered (tried {}: connection closed; {}: connection closed)",
                        peer_name(&first),
                        peer_name(&other)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_5_refusals_of_the_call_itself_are_final() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let p = sent_to(&drive(&mut calls, &[peer(1), peer(2)], now, connected))[0];
        let failed = Failure::Refused(Refusal::Failed("division by zero".into()));
        match calls.on_reply(id, p, Err(failed), now) {
            Some(Step::Done { result: Err(e), .. }) => {
                assert_eq!(e.to_string(), "provider refused: division by zero");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(calls.in_flight(), 0);
    }

    #[test]
    fn rule_5_attempts_are_bounded() {
        let mut calls = Calls::new(CallConfig {
            max_attempts: 2,
            ..CallConfig::default()
        });
        let now = Instant::now();
        let providers: Vec<PeerId> = (1..=5).map(peer).collect();
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let mut steps = drive(&mut calls, &providers, now, connected);
        for _ in 0..2 {
            let p = sent_to(&steps)[0];
            calls.on_reply(id, p, Err(Failure::Malformed("not json".into())), now);
            steps = drive(&mut calls, &providers, now, connected);
        }
        assert!(
            matches!(&steps[..], [Step::Done { result: Err(CallError::NoProvider { tried, .. }), .. }] if tried.len() == 2),
            "{steps:?}"
        );
    }

    #[test]
    fn rule_6_every_call_ends_by_its_deadline_and_late_replies_are_dropped() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let p = sent_to(&drive(&mut calls, &[peer(1)], now, connected))[0];
        assert_eq!(calls.poll_timeout(), Some(now + Duration::from_secs(5)));
        assert!(
            calls
                .advance(now + Duration::from_millis(4_999), connected)
                .is_empty()
        );
        match &calls.advance(now + Duration::from_secs(5), connected)[..] {
            [Step::Done { result: Err(e), .. }] => {
                assert_eq!(
                    e.to_string(),
                    "timed out after 5000 ms waiting for a provider to answer (direct)"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            calls.on_reply(id, p, Ok((json!(1), 1)), now + Duration::from_secs(6)),
            None
        );
        // A call waiting for its lookup times out as well.
        let mut calls = Calls::new(CallConfig::default());
        calls.start(call(json!({"n": 1})), now).unwrap();
        assert!(matches!(
            &calls.advance(now, connected)[..],
            [Step::FindProviders { .. }]
        ));
        let steps = calls.advance(now + Duration::from_secs(5), connected);
        match &steps[..] {
            [Step::Done { result: Err(e), .. }] => assert_eq!(
                e.to_string(),
                "timed out after 5000 ms waiting for the DHT to name providers"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_reports_provider_link_attempts_and_times() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let id = calls.start(call(json!({"n": 1})), now).unwrap();
        let first = sent_to(&drive(&mut calls, &[a, b], now, connected))[0];
        calls.on_reply(
            id,
            first,
            Err(Failure::Unreachable("dial failed".into())),
            now,
        );
        let second = sent_to(&drive(&mut calls, &[a, b], now, connected))[0];
        let later = now + Duration::from_millis(40);
        match calls.on_reply(id, second, Ok((json!({"n": 1}), 7)), later) {
            Some(Step::Done {
                result: Ok(answer), ..
            }) => {
                assert_eq!(answer.provider, second);
                assert_eq!(answer.link, Link::Direct);
                assert_eq!(
                    (answer.attempts, answer.duration_ms, answer.provider_ms),
                    (2, 40, 7)
                );
            }
            other => panic!("{other:?}"),
        }
        // The provider that failed left the cache: the next call goes straight to the other.
        calls.start(call(json!({"n": 2})), later).unwrap();
        assert_eq!(sent_to(&calls.advance(later, connected)), vec![second]);
    }
}
