//! Calling a service: the caller's side of the rules in `tabmesh_core::services::calls`, driven
//! here: lookups and descriptor reads through the DHT, requests, failover, the answer, the spans.

use super::*;

impl Behaviour {
    /// Runs the caller's state machine and carries out its steps.
    pub(super) fn advance(&mut self, now: Instant) {
        // Each link is worked out when a call asks for it: this runs on every poll, and a
        // relay has thousands of peers (building a map of them all here took most of a relay's
        // CPU with 3,000 peers connected and no call under way).
        let (me, links) = (&self.me, &self.links);
        let steps = self.calls.advance(now, |p| link(me, links, p));
        for step in steps {
            self.carry_out(step, now);
        }
    }

    pub(super) fn carry_out(&mut self, step: Step, now: Instant) {
        match step {
            Step::FindProviders { service } => {
                let key = tabmesh_core::services::descriptor::provider_key(&service);
                self.ask_dht(DhtRequest::Providers { key }, Purpose::Providers(service));
            }
            Step::Describe { service, provider } => {
                let key = descriptor_key(&service, &provider);
                self.ask_dht(
                    DhtRequest::Get { key },
                    Purpose::Describe(service, provider),
                );
            }
            Step::Send {
                id,
                provider,
                link,
                mut request,
            } => {
                if let Some(outgoing) = self.outgoing.get(&id) {
                    let context = outgoing.context.child(&mut self.rng);
                    let mut span = Span::start(
                        context,
                        Some(outgoing.context.span_id),
                        &format!(
                            "service.request {}/{}",
                            request.service, request.message_type
                        ),
                        &self.me.to_base58(),
                        unix_now_ms(),
                    );
                    span.attribute(KIND, "client");
                    span.attribute(REMOTE, provider.to_base58());
                    span.attribute("link", format!("{link:?}").to_lowercase());
                    request.trace = self.traced.then_some(context);
                    self.attempts.insert(id, span);
                }
                if link == Link::Local {
                    self.admit(self.me, request, ReplyTo::Local(id), now);
                } else {
                    self.wire.sent(
                        Topic::Service,
                        Some(provider),
                        format!("call {}/{}", request.service, request.message_type),
                    );
                    let rid = self.transport.send_request(&provider, request.encode());
                    self.requests.insert(rid, (id, provider));
                    self.transport_work = true;
                }
            }
            Step::Done { id, result } => self.finish_call(id, result, now),
        }
    }

    /// Ends the open attempt span of call `id` (`Err`: why the attempt failed).
    pub(super) fn end_attempt(&mut self, id: CallId, outcome: Result<(), String>) {
        if let Some(mut span) = self.attempts.remove(&id) {
            let status = match outcome {
                Ok(()) => SpanStatus::Ok,
                Err(why) => SpanStatus::Error(why),
            };
            span.end(unix_now_ms(), status);
            self.events.push_back(Report::Span(span));
        }
    }

    pub(super) fn finish_call(
        &mut self,
        id: CallId,
        result: Result<Answered, CallError>,
        now: Instant,
    ) {
        let Some(mut outgoing) = self.outgoing.remove(&id) else {
            return;
        };
        // An attempt still open (the deadline passed while it waited) ends with the call.
        self.end_attempt(id, Err("abandoned: the call ended".to_owned()));
        let status = match &result {
            Ok(_) => SpanStatus::Ok,
            Err(e) => SpanStatus::Error(e.to_string()),
        };
        outgoing.span.end(unix_now_ms(), status);
        let trace_id = outgoing.span.trace_id.to_string();
        self.events.push_back(Report::Span(outgoing.span.clone()));
        let answer = result.map(|a| CallAnswer {
            trace_id: Some(trace_id.clone()),
            route: self.route(outgoing.request.origin.as_deref(), a.provider, a.link),
            provider: a.provider.to_base58(),
            provider_name: self.name_of(&a.provider),
            reply: a.data,
            link: a.link,
            duration_ms: a.duration_ms,
            attempts: a.attempts,
            provider_ms: a.provider_ms,
        });
        match &answer {
            Ok(a) => {
                self.wire.local(
                    Topic::Service,
                    None,
                    format!(
                        "{}/{} answered by {} in {} ms",
                        outgoing.request.service,
                        outgoing.request.message_type,
                        a.provider_name,
                        a.duration_ms
                    ),
                );
                self.record_made(
                    &outgoing.request,
                    Some(a.provider_name.clone()),
                    &a.route,
                    outgoing.started,
                    now,
                    Ok(()),
                    a.attempts,
                );
            }
            Err(e) => {
                self.wire.local(
                    Topic::Service,
                    None,
                    format!(
                        "{}/{} failed: {}",
                        outgoing.request.service,
                        outgoing.request.message_type,
                        truncate(&e.to_string(), 160)
                    ),
                );
                self.record_made(
                    &outgoing.request,
                    None,
                    &[],
                    outgoing.started,
                    now,
                    Err(e),
                    0,
                );
            }
        }
        let _ = outgoing.reply.send(answer);
    }

    pub(super) fn route(&self, origin: Option<&str>, provider: PeerId, link: Link) -> Vec<String> {
        let mut route: Vec<String> = origin.map(str::to_owned).into_iter().collect();
        route.push(self.label.clone());
        match link {
            Link::Local => return route,
            Link::Relayed => route.push("relay".to_owned()),
            Link::Direct | Link::None => {}
        }
        route.push(self.name_of(&provider));
        route
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_made(
        &mut self,
        request: &CallRequest,
        provider: Option<String>,
        route: &[String],
        started: Instant,
        now: Instant,
        outcome: Result<(), &CallError>,
        attempts: u32,
    ) {
        self.counters.made += 1;
        match outcome {
            Ok(()) => self.counters.answered += 1,
            Err(_) => self.counters.failed += 1,
        }
        self.push_record(CallRecord {
            at_ms: millis(now.saturating_duration_since(self.origin)),
            side: CallSide::Made,
            service: request.service.clone(),
            message_type: request.message_type.clone(),
            peer: provider.unwrap_or_else(|| "—".to_owned()),
            route: route.to_vec(),
            duration_ms: millis(now.saturating_duration_since(started)),
            attempts,
            ok: outcome.is_ok(),
            outcome: outcome.map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
        });
    }
}

/// How `peer` is reached from `me`, given the connections to each peer (connection id → whether
/// it is relayed).
fn link(me: &PeerId, links: &HashMap<PeerId, HashMap<ConnectionId, bool>>, peer: &PeerId) -> Link {
    if peer == me {
        return Link::Local;
    }
    match links.get(peer) {
        Some(conns) if conns.values().any(|relayed| !relayed) => Link::Direct,
        Some(conns) if !conns.is_empty() => Link::Relayed,
        _ => Link::None,
    }
}
