//! Serving calls: the provider's rules, as a state machine the node drives.
//!
//! 1. **Only what is offered, as declared**: a call is served only for a service this peer
//!    offers, a message type its descriptor declares and data of the declared shape. Anything
//!    else is refused with the reason ("does not offer the service", "unknown message type",
//!    "bad data: …") and the handler never sees it.
//! 2. **Bounded**: at most `max_running` calls of one service run at once and `max_queued` wait;
//!    one caller has at most `max_per_caller` calls running or waiting here. A call beyond these
//!    is refused at once as overloaded, so the caller can go elsewhere instead of timing out.
//! 3. **In order, within the deadline**: waiting calls start in arrival order as running ones
//!    finish; one whose deadline passes while it waits is answered "the deadline passed" without
//!    running.
//! 4. **Offers**: at most [`MAX_OFFERED`] services; offering a name again replaces its
//!    declaration; withdrawing a service answers its waiting calls "does not offer the service"
//!    (running ones finish).
//! 5. **Counted**: served, refused and failed calls per service.
//!
//! Time enters as `now`; the driver runs what [`Serving::admit`] and [`Serving::finished`] hand
//! it, and calls [`Serving::expire`] at [`Serving::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

use super::descriptor::{Descriptor, MAX_OFFERED, RequestError};
use super::message::{Refusal, ServiceRequest};

/// The provider's limits (rule 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Calls of one service running at once.
    pub max_running: usize,
    /// Calls of one service waiting to run.
    pub max_queued: usize,
    /// Calls of one caller running or waiting, over all services.
    pub max_per_caller: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_running: 4,
            max_queued: 32,
            max_per_caller: 16,
        }
    }
}

/// Who answers a service's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answerer {
    /// The node itself (a built-in service).
    Builtin,
    /// The program around the node: a handler written in the tab's JavaScript, or the host
    /// program of a native node.
    Host,
}

/// A service this peer offers, with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Its declaration.
    pub descriptor: Descriptor,
    /// Who answers.
    pub answerer: Answerer,
    /// Calls answered with data.
    pub served: u64,
    /// Calls refused before they ran (rules 1 to 3).
    pub refused: u64,
    /// Calls whose handler failed or ran past the deadline.
    pub failed: u64,
}

/// A call admitted to run, or waiting to.
#[derive(Debug)]
pub struct Job<J> {
    /// Who called.
    pub caller: PeerId,
    /// The call.
    pub request: ServiceRequest,
    /// When it arrived.
    pub received: Instant,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// The driver's handle to answer it.
    pub payload: J,
}

/// What [`Serving::admit`] decided.
#[derive(Debug)]
pub enum Admission<J> {
    /// Run it now.
    Run(Box<Job<J>>),
    /// It waits for a running call of the service to finish.
    Queued,
    /// Answer it with the refusal.
    Refused(J, Refusal),
}

/// How a running call ended (rule 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Answered with data.
    Served,
    /// The handler failed or ran past the deadline.
    Failed,
}

/// The services of one provider and the calls it is serving.
#[derive(Debug)]
pub struct Serving<J> {
    config: ServeConfig,
    offers: BTreeMap<String, Offer>,
    running: HashMap<String, usize>,
    queues: HashMap<String, VecDeque<Job<J>>>,
    per_caller: HashMap<PeerId, usize>,
}

impl<J> Serving<J> {
    /// Nothing offered yet.
    pub fn new(config: ServeConfig) -> Self {
        Self {
            config,
            offers: BTreeMap::new(),
            running: HashMap::new(),
            queues: HashMap::new(),
            per_caller: HashMap::new(),
        }
    }

    /// Offers a service, or replaces the declaration of one offered already (rule 4).
    pub fn offer(&mut self, descriptor: Descriptor, answerer: Answerer) -> Result<(), String> {
        descriptor.check().map_err(|e| e.to_string())?;
        if let Some(offer) = self.offers.get_mut(&descriptor.name) {
            offer.descriptor = descriptor;
            offer.answerer = answerer;
            return Ok(());
        }
        if self.offers.len() >= MAX_OFFERED {
            return Err(format!("a peer offers at most {MAX_OFFERED} services"));
        }
        self.offers.insert(
            descriptor.name.clone(),
            Offer {
                descriptor,
                answerer,
                served: 0,
                refused: 0,
                failed: 0,
            },
        );
        Ok(())
    }

    /// Stops offering `name`; returns whether it was offered, and its waiting calls with their
    /// answer (rule 4).
    pub fn withdraw(&mut self, name: &str) -> (bool, Vec<(J, Refusal)>) {
        let offered = self.offers.remove(name).is_some();
        let waiting = self.queues.remove(name).unwrap_or_default();
        let answers = waiting
            .into_iter()
            .map(|job| {
                self.release(&job.caller);
                (job.payload, Refusal::UnknownService)
            })
            .collect();
        (offered, answers)
    }

    /// The services offered, by name.
    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// The offer of `name`.
    pub fn offer_of(&self, name: &str) -> Option<&Offer> {
        self.offers.get(name)
    }

    /// Calls of `name` running and waiting.
    pub fn load(&self, name: &str) -> (usize, usize) {
        (
            self.running.get(name).copied().unwrap_or(0),
            self.queues.get(name).map_or(0, VecDeque::len),
        )
    }

    /// Decides what happens to a call that arrived (rules 1 to 3).
    pub fn admit(
        &mut self,
        caller: PeerId,
        request: ServiceRequest,
        payload: J,
        now: Instant,
    ) -> Admission<J> {
        let Some(offer) = self.offers.get_mut(&request.service) else {
            return Admission::Refused(payload, Refusal::UnknownService);
        };
        if let Err(e) = offer
            .descriptor
            .check_request(&request.message_type, &request.data)
        {
            offer.refused += 1;
            let refusal = match e {
                RequestError::UnknownType(u) => Refusal::UnknownType(u.to_string()),
                RequestError::BadData(why) => Refusal::BadData(why),
            };
            return Admission::Refused(payload, refusal);
        }
        let mine = self.per_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.config.max_per_caller {
            offer.refused += 1;
            return Admission::Refused(
                payload,
                Refusal::Overloaded(format!(
                    "{mine} of your calls are already here (at most {})",
                    self.config.max_per_caller
                )),
            );
        }
        let running = self.running.get(&request.service).copied().unwrap_or(0);
        let queue = self.queues.entry(request.service.clone()).or_default();
        if running >= self.config.max_running && queue.len() >= self.config.max_queued {
            offer.refused += 1;
            return Admission::Refused(
                payload,
                Refusal::Overloaded(format!(
                    "{running} calls running and {} waiting",
                    queue.len()
                )),
            );
        }
        *self.per_caller.entry(caller).or_default() += 1;
        let job = Job {
            caller,
            deadline: now + Duration::from_millis(request.deadline_ms),
            request,
            received: now,
            payload,
        };
        if running < self.config.max_running {
            *self.running.entry(job.request.service.clone()).or_default() += 1;
            Admission::Run(Box::new(job))
        } else {
            queue.push_back(job);
            Admission::Queued
        }
    }

    /// A running call of `service` from `caller` ended; returns the waiting call of the service
    /// to run next, if any (rule 3).
    pub fn finished(&mut self, service: &str, caller: &PeerId, ended: Ended) -> Option<Job<J>> {
        self.release(caller);
        if let Some(offer) = self.offers.get_mut(service) {
            match ended {
                Ended::Served => offer.served += 1,
                Ended::Failed => offer.failed += 1,
            }
        }
        let next = self.queues.get_mut(service).and_then(VecDeque::pop_front);
        match &next {
            // The slot passes to the next call.
            Some(_) => {}
            None => {
                if let Some(n) = self.running.get_mut(service) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.running.remove(service);
                    }
                }
            }
        }
        next
    }

    /// Answers the waiting calls whose deadline has passed (rule 3).
    pub fn expire(&mut self, now: Instant) -> Vec<(J, Refusal)> {
        let mut expired = Vec::new();
        for (service, queue) in &mut self.queues {
            let (late, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(queue)
                .into_iter()
                .partition(|j| j.deadline <= now);
            *queue = keep;
            if let Some(offer) = self.offers.get_mut(service) {
                offer.failed += late.len() as u64;
            }
            expired.extend(late);
        }
        self.queues.retain(|_, q| !q.is_empty());
        expired
            .into_iter()
            .map(|job| {
                self.release(&job.caller);
                (job.payload, Refusal::TimedOut)
            })
            .collect()
    }

    /// When [`expire`](Self::expire) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queues
            .values()
            .flat_map(|q| q.iter().map(|j| j.deadline))
            .min()
    }

    fn release(&mut self, caller: &PeerId) {
        if let Some(n) = self.per_caller.get_mut(caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_caller.remove(caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::descriptor::MessageType;
    use crate::services::shape::Shape;
    use serde_json::{Value, json};

    fn peer(seed: u8) -> PeerId {
        let mut bytes = [seed; 32];
        bytes[0] = 2;
        libp2p_identity::Keypair::ed25519_from_bytes(bytes)
            .expect("key")
            .public()
            .to_peer_id()
    }

    fn descriptor(name: &str) -> Descriptor {
        let request = Shape::parse(
            &json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        )
        .unwrap();
        Descriptor::new(
            name,
            "1",
            "",
            [(
                "go".to_owned(),
                MessageType {
                    request,
                    reply: Shape::any(),
                },
            )],
        )
        .unwrap()
    }

    fn request(service: &str, data: Value) -> ServiceRequest {
        ServiceRequest {
            service: service.into(),
            message_type: "go".into(),
            data,
            deadline_ms: 1_000,
            origin: None,
            trace: None,
        }
    }

    fn serving(config: ServeConfig) -> Serving<u32> {
        let mut s = Serving::new(config);
        s.offer(descriptor("work"), Answerer::Host).unwrap();
        s
    }

    fn refusal(a: Admission<u32>) -> Refusal {
        match a {
            Admission::Refused(_, r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_1_only_offered_services_and_declared_calls_reach_a_handler() {
        let mut s = serving(ServeConfig::default());
        let now = Instant::now();
        let caller = peer(1);
        assert_eq!(
            refusal(s.admit(caller, request("other", json!({"n": 1})), 1, now)),
            Refusal::UnknownService
        );
        let mut wrong_type = request("work", json!({"n": 1}));
        wrong_type.message_type = "stop".into();
        let r = refusal(s.admit(caller, wrong_type, 2, now));
        assert!(
            r.to_string().starts_with("unknown message type \"stop\""),
            "{r}"
        );
        let r = refusal(s.admit(caller, request("work", json!({"n": "x"})), 3, now));
        assert!(r.to_string().starts_with("bad data: /n"), "{r}");
        assert!(matches!(
            s.admit(caller, request("work", json!({"n": 1})), 4, now),
            Admission::Run(_)
        ));
        assert_eq!(s.offer_of("work").map(|o| o.refused), Some(2));
    }

    #[test]
    fn rule_2_beyond_the_bounds_a_call_is_refused_as_overloaded_at_once() {
        let config = ServeConfig {
            max_running: 1,
            max_queued: 2,
            max_per_caller: 10,
        };
        let mut s = serving(config);
        let now = Instant::now();
        let call = |s: &mut Serving<u32>, who: u8, n: u32| {
            s.admit(peer(who), request("work", json!({"n": n})), n, now)
        };
        assert!(matches!(call(&mut s, 1, 1), Admission::Run(_)));
        assert!(matches!(call(&mut s, 2, 2), Admission::Queued));
        assert!(matches!(call(&mut s, 3, 3), Admission::Queued));
        let r = refusal(call(&mut s, 4, 4));
        assert!(
            r.try_another() && r.to_string() == "overloaded: 1 calls running and 2 waiting",
            "{r}"
        );
        assert_eq!(s.load("work"), (1, 2));
        // One caller cannot take all the places.
        let config = ServeConfig {
            max_running: 8,
            max_queued: 8,
            max_per_caller: 2,
        };
        let mut s = serving(config);
        assert!(matches!(call(&mut s, 1, 1), Admission::Run(_)));
        assert!(matches!(call(&mut s, 1, 2), Admission::Run(_)));
        assert!(
            refusal(call(&mut s, 1, 3))
                .to_string()
                .contains("2 of your calls")
        );
        assert!(matches!(call(&mut s, 2, 4), Admission::Run(_)));
        // A finished call frees the caller's place.
        assert!(s.finished("work", &peer(1), Ended::Served).is_none());
        assert!(matches!(call(&mut s, 1, 5), Admission::Run(_)));
    }

    #[test]
    fn rule_3_waiting_calls_run_in_order_or_time_out_without_running() {
        let config = ServeConfig {
            max_running: 1,
            max_queued: 4,
            max_per_caller: 10,
        };
        let mut s = serving(config);
        let now = Instant::now();
        let mut short = request("work", json!({"n": 2}));
        short.deadline_ms = 100;
        assert!(matches!(
            s.admit(peer(1), request("work", json!({"n": 1})), 1, now),
            Admission::Run(_)
        ));
        assert!(matches!(s.admit(peer(2), short, 2, now), Admission::Queued));
        assert!(matches!(
            s.admit(peer(3), request("work", json!({"n": 3})), 3, now),
            Admission::Queued
        ));
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(100)));
        let expired = s.expire(now + Duration::from_millis(100));
        assert_eq!(expired, vec![(2, Refusal::TimedOut)]);
        let next = s
            .finished("work", &peer(1), Ended::Served)
            .expect("the next waiting call");
        assert_eq!(next.payload, 3);
        assert_eq!(s.load("work"), (1, 0));
        assert!(s.finished("work", &peer(3), Ended::Failed).is_none());
        assert_eq!(s.load("work"), (0, 0));
        let offer = s.offer_of("work").unwrap();
        assert_eq!((offer.served, offer.failed), (1, 2));
    }

    #[test]
    fn rule_4_offers_are_bounded_replaced_and_withdrawn() {
        let mut s: Serving<u32> = Serving::new(ServeConfig {
            max_running: 1,
            ..ServeConfig::default()
        });
        for i in 0..MAX_OFFERED {
            s.offer(descriptor(&format!("s{i}")), Answerer::Builtin)
                .unwrap();
        }
        assert!(s.offer(descriptor("one-more"), Answerer::Host).is_err());
        s.offer(descriptor("s0"), Answerer::Host).unwrap();
        assert_eq!(s.offer_of("s0").map(|o| o.answerer), Some(Answerer::Host));
        let now = Instant::now();
        assert!(matches!(
            s.admit(peer(1), request("s0", json!({"n": 1})), 1, now),
            Admission::Run(_)
        ));
        assert!(matches!(
            s.admit(peer(2), request("s0", json!({"n": 2})), 2, now),
            Admission::Queued
        ));
        let (was, answers) = s.withdraw("s0");
        assert!(was);
        assert_eq!(answers, vec![(2, Refusal::UnknownService)]);
        assert_eq!(
            refusal(s.admit(peer(1), request("s0", json!({"n": 1})), 3, now)),
            Refusal::UnknownService
        );
        assert!(!s.withdraw("s0").0);
    }
}
