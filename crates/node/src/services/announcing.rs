//! Offering, announcing and withdrawing services in the DHT, and the catalog survey.

use super::*;

impl Behaviour {
    pub(super) fn offer(
        &mut self,
        descriptor: Descriptor,
        answerer: Answerer,
        now: Instant,
    ) -> Result<(), String> {
        let name = descriptor.name.clone();
        self.serving.offer(descriptor.clone(), answerer)?;
        self.wire.local(
            Topic::Service,
            None,
            format!(
                "offering {name} {} ({})",
                descriptor.version,
                types_of(&descriptor)
            ),
        );
        let announcements = self.announcer.on_offer(descriptor, now);
        self.announce(announcements);
        Ok(())
    }

    pub(super) fn withdraw(&mut self, name: &str) -> Result<(), String> {
        let (was, waiting) = self.serving.withdraw(name);
        if !was {
            return Err(format!("\"{name}\" is not offered here"));
        }
        self.hosts.remove(name);
        for (responder, refusal) in waiting {
            self.respond(responder, self.me, Err(refusal), 0);
        }
        self.wire
            .local(Topic::Service, None, format!("withdrew {name}"));
        let announcements = self.announcer.on_withdraw(name);
        self.announce(announcements);
        Ok(())
    }

    pub(super) fn announce(&mut self, announcements: Vec<Announcement>) {
        for a in announcements {
            let (request, key) = match a {
                Announcement::Provide(key) => (DhtRequest::Provide { key: key.clone() }, key),
                Announcement::StopProviding(key) => {
                    self.events.push_back(Report::StopProviding(key));
                    continue;
                }
                Announcement::Put { key, value, ttl_ms } => (
                    DhtRequest::Put {
                        key: key.clone(),
                        value,
                        ttl_ms: Some(ttl_ms),
                    },
                    key,
                ),
                Announcement::Remove(key) => (DhtRequest::Remove { key: key.clone() }, key),
            };
            self.ask_dht(request, Purpose::Announce(key));
        }
    }

    pub(super) fn ask_dht(&mut self, request: DhtRequest, purpose: Purpose) {
        let (tx, rx) = oneshot::channel();
        self.events.push_back(Report::Dht { request, reply: tx });
        self.dht.push(
            async move {
                let result = rx.await.unwrap_or(Err(DhtError::Stopped));
                (purpose, result)
            }
            .boxed_local(),
        );
    }

    pub(super) fn survey_lookup(&mut self, lookup: Lookup) {
        let request = match &lookup {
            Lookup::Providers(key) => DhtRequest::Providers { key: key.clone() },
            Lookup::Record(key) => DhtRequest::Get { key: key.clone() },
        };
        self.ask_dht(request, Purpose::Survey(lookup));
    }

    pub(super) fn on_dht(
        &mut self,
        purpose: Purpose,
        result: Result<DhtReply, DhtError>,
        now: Instant,
    ) {
        match purpose {
            Purpose::Providers(service) => {
                let found = match result {
                    Ok(DhtReply::Providers { providers, .. }) => Ok(providers
                        .iter()
                        .filter_map(|p| p.peer_id.parse().ok())
                        .collect()),
                    Ok(_) => Ok(Vec::new()),
                    Err(e) => Err(e.to_string()),
                };
                self.calls.on_providers(&service, found, now);
            }
            Purpose::Describe(service, provider) => {
                let descriptor = match result {
                    Ok(DhtReply::Get {
                        record: Some(record),
                        ..
                    }) if !record.tombstone => record
                        .value
                        .and_then(|v| Descriptor::decode(v.as_bytes()).ok()),
                    _ => None,
                };
                self.calls
                    .on_descriptor(&service, provider, descriptor, now);
            }
            Purpose::Announce(key) => match result {
                Ok(reply) => {
                    tracing::debug!(key, summary = reply.summary(), "service announcement");
                }
                Err(DhtError::Refused(why)) => {
                    self.wire.local(
                        Topic::Service,
                        None,
                        format!("announcing {key} refused: {}", truncate(&why, 120)),
                    );
                }
                Err(e) => {
                    tracing::debug!(key, %e, "service announcement failed; retrying soon");
                    self.announcer.on_failed(now);
                }
            },
            Purpose::Survey(lookup) => self.on_survey(lookup, result),
        }
        self.advance(now);
    }

    pub(super) fn on_survey(&mut self, lookup: Lookup, result: Result<DhtReply, DhtError>) {
        let Some((survey, _)) = &mut self.survey else {
            return;
        };
        let next = match (&lookup, result) {
            (Lookup::Providers(key), Ok(DhtReply::Providers { providers, .. })) => {
                let peers: Vec<PeerId> = providers
                    .iter()
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                survey.on_providers(key, &peers)
            }
            (Lookup::Providers(key), _) => survey.on_providers(key, &[]),
            (
                Lookup::Record(key),
                Ok(DhtReply::Get {
                    record: Some(record),
                    ..
                }),
            ) if !record.tombstone => {
                survey.on_record(key, record.value.as_deref().map(str::as_bytes))
            }
            (Lookup::Record(key), _) => survey.on_record(key, None),
        };
        let done = survey.is_done();
        for lookup in next {
            self.survey_lookup(lookup);
        }
        if done && let Some((survey, waiting)) = self.survey.take() {
            let catalog = survey.catalog();
            for reply in waiting {
                let _ = reply.send(Ok(catalog.clone()));
            }
        }
    }
}
