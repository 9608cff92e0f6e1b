//! Serving calls: admission by `tabmesh_core::services::serving`, the handlers (built-in or the
//! host's), the answers, the provider's spans.

use super::*;

impl Behaviour {
    /// A call arrived (from a peer, or from ourselves): admit it and run it, queue it or refuse it.
    pub(super) fn admit(
        &mut self,
        caller: PeerId,
        request: ServiceRequest,
        to: ReplyTo,
        now: Instant,
    ) {
        let (service, message_type) = (request.service.clone(), request.message_type.clone());
        // The provider's span: a child of the caller's attempt, when it traces the call.
        let span = request.trace.map(|context| {
            let mut span = Span::start(
                context.child(&mut self.rng),
                Some(context.span_id),
                &format!("service.serve {service}/{message_type}"),
                &self.me.to_base58(),
                unix_now_ms(),
            );
            span.attribute(KIND, "server");
            span.attribute("peer.caller", caller.to_base58());
            span
        });
        let responder = Responder { to, span };
        match self.serving.admit(caller, request, responder, now) {
            Admission::Run(job) => self.run(*job, now),
            Admission::Queued => {}
            Admission::Refused(responder, refusal) => {
                self.wire.local(
                    Topic::Service,
                    (caller != self.me).then_some(caller),
                    format!(
                        "refused {service}/{message_type}: {}",
                        truncate(&refusal.to_string(), 120)
                    ),
                );
                self.counters.refused += 1;
                self.push_record(CallRecord {
                    at_ms: millis(now.saturating_duration_since(self.origin)),
                    side: CallSide::Served,
                    service,
                    message_type,
                    peer: self.name_of(&caller),
                    route: Vec::new(),
                    duration_ms: 0,
                    attempts: 1,
                    ok: false,
                    outcome: refusal.to_string(),
                });
                self.respond(responder, caller, Err(refusal), 0);
            }
        }
    }

    /// Starts the handler of an admitted call.
    pub(super) fn run(&mut self, job: Job<Responder>, now: Instant) {
        let Job {
            caller,
            request,
            received,
            deadline,
            payload,
        } = job;
        let ServiceRequest {
            service,
            message_type,
            data,
            origin,
            ..
        } = request;
        let caller_name = self.name_of(&caller);
        let handler: LocalBoxFuture<'static, Result<Value, String>> =
            match self.serving.offer_of(&service).map(|o| o.answerer) {
                Some(Answerer::Builtin) => builtin::run(&service, &data, &self.status),
                _ => match self.hosts.get_mut(&service) {
                    Some(host) => {
                        let (tx, rx) = oneshot::channel();
                        let call = HostCall {
                            service: service.clone(),
                            message_type: message_type.clone(),
                            data,
                            caller: caller_name,
                            deadline_ms: millis(deadline.saturating_duration_since(now)),
                            reply: tx,
                        };
                        match host.try_send(call) {
                            Ok(()) => async move {
                                rx.await
                                    .unwrap_or_else(|_| Err("the handler went away".to_owned()))
                            }
                            .boxed_local(),
                            Err(_) => async { Err("the handler is not keeping up".to_owned()) }
                                .boxed_local(),
                        }
                    }
                    None => async { Err("no handler".to_owned()) }.boxed_local(),
                },
            };
        let wait = futures_timer::Delay::new(deadline.saturating_duration_since(now));
        self.running.push(
            async move {
                let result = futures::select! {
                    result = handler.fuse() => result.map_err(Refusal::Failed),
                    () = wait.fuse() => Err(Refusal::TimedOut),
                };
                Finished {
                    service,
                    message_type,
                    caller,
                    origin,
                    received,
                    responder: payload,
                    result,
                }
            }
            .boxed_local(),
        );
    }

    pub(super) fn on_finished(&mut self, done: Finished, now: Instant) {
        let ms = millis(now.saturating_duration_since(done.received));
        let ended = if done.result.is_ok() {
            Ended::Served
        } else {
            Ended::Failed
        };
        match &done.result {
            Ok(_) => self.counters.served += 1,
            Err(_) => self.counters.refused += 1,
        }
        let who = self.name_of(&done.caller);
        let peer = match &done.origin {
            Some(origin) => format!("{who} for {origin}"),
            None => who,
        };
        let outcome = match &done.result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.wire.local(
            Topic::Service,
            (done.caller != self.me).then_some(done.caller),
            format!(
                "served {}/{} in {ms} ms: {}",
                done.service,
                done.message_type,
                truncate(&outcome, 120)
            ),
        );
        self.push_record(CallRecord {
            at_ms: millis(now.saturating_duration_since(self.origin)),
            side: CallSide::Served,
            service: done.service.clone(),
            message_type: done.message_type,
            peer,
            route: Vec::new(),
            duration_ms: ms,
            attempts: 1,
            ok: done.result.is_ok(),
            outcome,
        });
        self.respond(done.responder, done.caller, done.result, ms);
        if let Some(next) = self.serving.finished(&done.service, &done.caller, ended) {
            self.run(next, now);
        }
    }

    /// Answers a served call.
    pub(super) fn respond(
        &mut self,
        responder: Responder,
        caller: PeerId,
        result: Result<Value, Refusal>,
        ms: u64,
    ) {
        let Responder { to, span } = responder;
        if let Some(mut span) = span {
            let status = match &result {
                Ok(_) => SpanStatus::Ok,
                Err(refusal) => SpanStatus::Error(refusal.to_string()),
            };
            span.end(unix_now_ms(), status);
            self.events.push_back(Report::Span(span));
        }
        match to {
            ReplyTo::Remote(channel) => {
                let reply = match result {
                    Ok(data) => ServiceReply::Ok { data, ms },
                    Err(refusal) => ServiceReply::Refused { refusal },
                };
                if self
                    .transport
                    .send_response(channel, reply.encode())
                    .is_err()
                {
                    tracing::debug!(%caller, "the caller went away before the reply");
                }
                self.transport_work = true;
            }
            ReplyTo::Local(id) => {
                let outcome = result.map(|data| (data, ms)).map_err(Failure::Refused);
                self.end_attempt(id, outcome.as_ref().map(|_| ()).map_err(Failure::summary));
                if let Some(step) = self.calls.on_reply(id, self.me, outcome, Instant::now()) {
                    self.carry_out(step, Instant::now());
                }
            }
        }
    }
}
