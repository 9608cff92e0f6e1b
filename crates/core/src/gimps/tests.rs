//! One test per protocol rule, driven with injected time, and simulations of many nodes.

use libp2p_identity::{Keypair, PeerId};
use web_time::{Duration, Instant};

use super::lucas_lehmer::KNOWN_MERSENNE_EXPONENTS;
use super::message::{GossipMessage, MsgType};
use super::node::{GossipAction, GossipConfig, GossipNode, MAX_MISBEHAVING, mersenne_digits};
use super::sim::{SimConfig, Simulation, cooperative_search, flood, flood_without_pruning};
use crate::ledger::{Ledger, LedgerConfig, Verdict};
use crate::wire_log::Topic;

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("32 bytes")
}

fn id(seed: u8) -> PeerId {
    key(seed).public().to_peer_id()
}

/// The exercise's rules as stated: the first search round starts at once, without settling
/// into the group first (which has its own test).
fn exercise() -> GossipConfig {
    GossipConfig {
        settle: Duration::ZERO,
        ..GossipConfig::default()
    }
}

fn node(t0: Instant) -> GossipNode {
    GossipNode::new(key(1), exercise(), t0, t0)
}

fn sends(actions: &[GossipAction]) -> Vec<(PeerId, &GossipMessage)> {
    actions
        .iter()
        .filter_map(|a| match a {
            GossipAction::Send { to, message } => Some((*to, message)),
            _ => None,
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn rule_1_search_rounds_test_successive_prime_exponents_and_announce_finds() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    assert_eq!(n.next_candidate(), None, "no round before the first tick");
    n.on_tick(t0);
    let tested: Vec<u32> = (0..5).filter_map(|_| n.next_candidate()).collect();
    assert_eq!(tested, vec![2, 3, 5, 7, 11]);
    // 11 is not a Mersenne exponent; the round goes on. Say 13 is found:
    assert!(n.on_tested(t0, 11, false).is_empty());
    assert_eq!(n.next_candidate(), Some(13));
    let actions = n.on_tested(t0, 13, true);
    let sent = sends(&actions);
    assert_eq!(sent.len(), 1);
    let (to, msg) = sent[0];
    assert_eq!(to, id(2));
    assert_eq!(
        (msg.msg_type, msg.exponent, msg.ttl),
        (MsgType::Prime, Some(13), 2)
    );
    msg.verify().expect("signed");
    assert_eq!(n.biggest(), Some((13, id(1))));
    // The round is over until the next search tick, 10 s later, which starts above 13.
    assert_eq!(n.next_candidate(), None);
    n.on_tick(t0 + secs(9));
    assert_eq!(n.next_candidate(), None);
    n.on_tick(t0 + secs(10));
    assert_eq!(n.next_candidate(), Some(17));
    assert_eq!(n.view(t0).my_primes, vec![13]);
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn a_new_node_settles_into_the_group_before_its_first_search_round() {
    let t0 = Instant::now();
    let config = GossipConfig::default();
    assert_eq!(config.settle, secs(2), "on by default");
    let mut n = GossipNode::new(key(1), config, t0, t0);
    n.on_tick(t0);
    assert_eq!(n.next_candidate(), None, "settling: no round at the start");
    assert!(n.view(t0).settling);
    // Each peer that connects pushes the first round back to `settle` after it.
    n.on_peer_connected(t0 + ms(1500), id(2));
    n.on_tick(t0 + ms(2000));
    assert_eq!(n.next_candidate(), None, "a peer arrived 0.5 s ago");
    n.on_peer_connected(t0 + ms(3000), id(3));
    // A peer we know connecting again is no arrival; nor is an originator we only heard of.
    n.on_peer_connected(t0 + ms(4000), id(2));
    n.on_tick(t0 + ms(4999));
    assert_eq!(n.next_candidate(), None);
    // The cooperative mode, switched on meanwhile, waits too.
    n.set_cooperative(true);
    assert_eq!(n.next_candidate(), None);
    n.on_tick(t0 + ms(5000));
    assert!(!n.view(t0).settling);
    assert!(
        n.next_candidate().is_some(),
        "2 s without arrivals: the round starts"
    );
    // Settled once: later arrivals change nothing.
    n.on_peer_connected(t0 + ms(5100), id(4));
    assert!(n.next_candidate().is_some());
}

#[test]
fn arrivals_that_never_stop_hold_the_first_round_back_by_one_search_interval_at_most() {
    let t0 = Instant::now();
    let config = GossipConfig::default();
    let interval = config.search_interval;
    let mut n = GossipNode::new(key(1), config, t0, t0);
    let mut started = None;
    for s in 1..=20u8 {
        let now = t0 + secs(u64::from(s));
        n.on_peer_connected(now, id(s + 1));
        n.on_tick(now);
        if n.next_candidate().is_some() {
            started = Some(now);
            break;
        }
    }
    assert_eq!(started, Some(t0 + interval));
}

#[test]
fn rule_2_silent_peers_are_evicted_after_the_stale_timeout() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_peer_connected(t0 + secs(5), id(3));
    for s in 1..=10 {
        let evicted: Vec<_> = n
            .on_tick(t0 + secs(s))
            .into_iter()
            .filter(|a| matches!(a, GossipAction::Evicted(_)))
            .collect();
        assert!(evicted.is_empty(), "nobody is stale at {s} s");
    }
    let actions = n.on_tick(t0 + secs(11));
    assert!(actions.contains(&GossipAction::Evicted(id(2))));
    assert!(!n.knows(&id(2)) && n.knows(&id(3)));
    assert_eq!(n.counters().evicted, 1);
}

#[test]
fn rule_3_every_peer_is_pinged_every_ping_interval_with_fresh_ids() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_peer_connected(t0, id(3));
    assert!(sends(&n.on_tick(t0 + secs(4))).is_empty());
    let first = n.on_tick(t0 + secs(5));
    let pings = sends(&first);
    assert_eq!(pings.len(), 2);
    assert!(
        pings
            .iter()
            .all(|(_, m)| m.msg_type == MsgType::Ping && m.ttl == 0)
    );
    let ids: Vec<u64> = pings.iter().map(|(_, m)| m.msg_id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(sends(&n.on_tick(t0 + secs(9))).is_empty());
    assert_eq!(sends(&n.on_tick(t0 + secs(10))).len(), 2);
}

#[test]
fn a_peer_that_does_not_search_never_tests_but_still_pings_and_forwards() {
    let t0 = Instant::now();
    let config = GossipConfig {
        search: false,
        ..exercise()
    };
    let mut n = GossipNode::new(key(1), config, t0, t0);
    for p in [2, 3] {
        n.on_peer_connected(t0, id(p));
    }
    let mut pings = 0;
    // Within the stale timeout (the peers never answer here), so they stay listed.
    for s in 0..10 {
        let actions = n.on_tick(t0 + secs(s));
        pings += sends(&actions)
            .iter()
            .filter(|(_, m)| m.msg_type == MsgType::Ping)
            .count();
        assert_eq!(n.next_candidate(), None, "no round at {s} s");
    }
    assert_eq!(pings, 2, "a round of pings (at 5 s) reaches both peers");
    let prime = GossipMessage::prime(&key(5), 1, 4423, 2, &[]).forwarded_by(id(2));
    let actions = n.on_message(t0 + secs(9), id(2), &prime.encode());
    assert_eq!(n.biggest(), Some((4423, id(5))));
    let forwarded: Vec<PeerId> = sends(&actions).iter().map(|(to, _)| *to).collect();
    assert_eq!(forwarded, [id(3)], "and forwards what it hears");
    assert_eq!(n.next_candidate(), None, "a find elsewhere starts no round");
}

#[test]
fn rule_4_receiving_updates_the_forwarder_and_drops_duplicates() {
    let t0 = Instant::now();
    let mut n = node(t0);
    let ping = GossipMessage::probe(MsgType::Ping, 1, id(2), 0).encode();
    n.on_message(t0 + secs(3), id(2), &ping);
    assert_eq!(
        n.view(t0 + secs(4)).peers[0].heard_ms_ago,
        1000,
        "added with a fresh timestamp"
    );
    assert!(
        n.on_message(t0 + secs(4), id(2), &ping).is_empty(),
        "duplicate dropped"
    );
    assert_eq!(n.counters().duplicates, 1);
    assert_eq!(
        n.view(t0 + secs(4)).peers[0].heard_ms_ago,
        0,
        "a duplicate still shows liveness"
    );
}

#[test]
fn rule_4_ping_is_answered_with_a_pong_and_a_pong_with_nothing() {
    let t0 = Instant::now();
    let mut n = node(t0);
    let actions = n.on_message(
        t0,
        id(2),
        &GossipMessage::probe(MsgType::Ping, 9, id(2), 0).encode(),
    );
    let sent = sends(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, id(2));
    assert_eq!(
        (sent[0].1.msg_type, sent[0].1.ttl, sent[0].1.msg_originator),
        (MsgType::Pong, 0, id(1))
    );
    let pong = GossipMessage::probe(MsgType::Pong, 4, id(2), 0).encode();
    assert!(n.on_message(t0, id(2), &pong).is_empty());
    let log = n.view(t0).log;
    let kinds: Vec<_> = log
        .iter()
        .map(|l| (l.direction.as_str(), l.msg_type))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("RECEIVED", MsgType::Ping),
            ("SENT", MsgType::Pong),
            ("RECEIVED", MsgType::Pong)
        ]
    );
}

#[test]
fn rule_4_a_larger_prime_credits_the_originator_and_is_forwarded_with_one_hop_less() {
    let t0 = Instant::now();
    let mut n = node(t0);
    for p in [2, 3, 4] {
        n.on_peer_connected(t0, id(p));
    }
    // Originated by 5 (not in our list), forwarded to us by 2.
    let prime = GossipMessage::prime(&key(5), 1, 4423, 2, &[]).forwarded_by(id(2));
    let actions = n.on_message(t0, id(2), &prime.encode());
    assert!(actions.contains(&GossipAction::NewBiggest {
        exponent: 4423,
        originator: id(5)
    }));
    assert_eq!(
        n.biggest(),
        Some((4423, id(5))),
        "credit goes to the originator"
    );
    assert!(n.knows(&id(5)), "the originator joins the peer list");
    let forwards = sends(&actions);
    let targets: Vec<PeerId> = forwards.iter().map(|(to, _)| *to).collect();
    assert_eq!(targets.len(), 2);
    assert!(
        targets.contains(&id(3)) && targets.contains(&id(4)),
        "not back to 2, not to 5"
    );
    for (_, m) in &forwards {
        assert_eq!(
            (m.ttl, m.msg_forwarder, m.msg_originator),
            (0, id(1), id(5))
        );
        m.verify()
            .expect("the originator's signature travels along");
    }
    // A smaller prime is not recorded but still forwarded; TTL 0 is not forwarded.
    let smaller = GossipMessage::prime(&key(3), 1, 521, 2, &[]).forwarded_by(id(3));
    let actions = n.on_message(t0, id(3), &smaller.encode());
    assert_eq!(n.biggest(), Some((4423, id(5))));
    assert_eq!(
        sends(&actions).len(),
        3,
        "to 2, 4 and 5 (now in the list), not back to 3"
    );
    let last = GossipMessage::prime(&key(4), 1, 9941, 0, &[]).forwarded_by(id(4));
    let actions = n.on_message(t0, id(4), &last.encode());
    assert_eq!(n.biggest(), Some((9941, id(4))));
    assert!(sends(&actions).is_empty(), "TTL 0 stops here");
    let view = n.view(t0).biggest.expect("known");
    assert_eq!((view.exponent, view.digits), (9941, 2993));
}

#[test]
fn another_copy_of_a_checked_message_is_dropped_unchecked_and_a_forged_first_copy_is_still_refused()
{
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_peer_connected(t0, id(3));
    let prime = GossipMessage::prime(&key(2), 7, 127, 2, &[]);
    // A forgery that arrives first (a message of 2's, signed by 3) is refused and leaves no
    // trace: the real message is still new when it comes.
    let mut forged = GossipMessage::prime(&key(3), 7, 127, 2, &[]);
    forged.msg_originator = id(2);
    let forged = forged.forwarded_by(id(3));
    let refused = n.on_message(t0, id(3), &forged.encode());
    assert!(
        refused
            .iter()
            .any(|a| matches!(a, GossipAction::Rejected { from, .. } if *from == id(3))),
        "{refused:?}"
    );
    let first = n.on_message(t0 + secs(1), id(2), &prime.encode());
    assert_eq!(n.biggest(), Some((127, id(2))));
    assert_eq!(sends(&first).len(), 1, "forwarded to 3");
    // Every other copy is dropped before its signature is checked: a forwarded copy, and one
    // whose signature was spoilt on the way, both count as duplicates only.
    let copy = prime.forwarded_by(id(3));
    let mut spoilt = copy.clone();
    spoilt.signature = vec![0; 64];
    for again in [copy, spoilt] {
        let actions = n.on_message(t0 + secs(2), id(3), &again.encode());
        assert!(sends(&actions).is_empty(), "{actions:?}");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, GossipAction::Rejected { .. })),
            "{actions:?}"
        );
    }
    let c = n.counters();
    assert_eq!((c.received, c.duplicates, c.rejected_signature), (1, 2, 1));
    assert_eq!(
        n.biggest(),
        Some((127, id(2))),
        "nothing already stored is lost"
    );
}

#[test]
fn forged_credit_fake_primes_excess_ttl_and_garbage_are_rejected_and_counted() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    // Every rejection is a strike in the node's misbehaviour ledger (default policy).
    let mut ledger = Ledger::new(LedgerConfig::default());
    let mut rejected = |actions: &[GossipAction]| {
        actions.iter().find_map(|a| match a {
            GossipAction::Rejected { from, reason } => {
                let verdict = ledger.strike(t0, *from, Topic::Gimps, reason);
                Some((reason.clone(), matches!(verdict, Verdict::Ban(_))))
            }
            _ => None,
        })
    };
    // Credit stolen: 2 signs, claims 6 originated it.
    let mut forged = GossipMessage::prime(&key(2), 1, 4423, 2, &[]);
    forged.msg_originator = id(6);
    let (why, _) = rejected(&n.on_message(t0, id(2), &forged.encode())).expect("rejected");
    assert!(why.contains("bad signature"), "{why}");
    // A validly signed but fake prime: 2^4421 - 1 is not prime.
    let fake = GossipMessage::prime(&key(2), 2, 4421, 2, &[]);
    let (why, _) = rejected(&n.on_message(t0, id(2), &fake.encode())).expect("rejected");
    assert!(why.contains("not a Mersenne prime"), "{why}");
    assert_eq!(n.view(t0).misbehaving, vec![id(2).to_base58()]);
    assert_eq!(n.biggest(), None, "nothing stored from rejected input");
    // TTL above the maximum.
    let greedy = GossipMessage::prime(&key(3), 1, 127, 200, &[]).forwarded_by(id(3));
    let (why, _) = rejected(&n.on_message(t0, id(3), &greedy.encode())).expect("rejected");
    assert!(why.contains("TTL"), "{why}");
    // Forwarder that is not the sender.
    let relayed = GossipMessage::probe(MsgType::Ping, 1, id(4), 0);
    let (why, banned) = rejected(&n.on_message(t0, id(3), &relayed.encode())).expect("rejected");
    assert!(why.contains("not the sender") && !banned, "{why}");
    // Garbage, and the third strike for peer 2 bans it (disconnect, refused on return).
    let (why, banned) = rejected(&n.on_message(t0, id(2), b"\x00garbage")).expect("rejected");
    assert!(why.contains("malformed") && banned, "{why}");
    let c = n.counters();
    assert_eq!(
        (
            c.rejected_signature,
            c.rejected_fake_prime,
            c.rejected_ttl,
            c.rejected_forged_forwarder,
            c.rejected_malformed
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(c.received, 0);
}

#[test]
fn asleep_a_node_neither_answers_nor_sends_and_wakes_up_where_it_was() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.sleep();
    assert!(
        n.on_message(
            t0,
            id(2),
            &GossipMessage::probe(MsgType::Ping, 1, id(2), 0).encode()
        )
        .is_empty()
    );
    assert!(n.on_tick(t0 + secs(30)).is_empty());
    assert_eq!(n.next_candidate(), None);
    assert_eq!(n.counters().ignored_asleep, 1);
    n.wake(t0 + secs(30));
    assert!(n.knows(&id(2)), "not evicted by its own sleep");
    let pings = n.on_tick(t0 + secs(30));
    assert_eq!(sends(&pings).len(), 1, "pings at once on waking");
    assert!(n.next_candidate().is_some(), "and searches again");
}

#[test]
fn reset_forgets_what_was_learnt_but_never_reuses_message_ids() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_tick(t0 + secs(5));
    let before = n.view(t0).msg_id;
    n.on_message(
        t0,
        id(2),
        &GossipMessage::prime(&key(2), 1, 127, 0, &[]).encode(),
    );
    n.reset(t0 + secs(6));
    let v = n.view(t0 + secs(6));
    assert_eq!((v.biggest, v.peers.len(), v.log.len()), (None, 0, 0));
    assert_eq!(v.msg_id, before);
    // The same PRIME is accepted again after a reset (the dedupe cache is gone too).
    n.on_message(
        t0 + secs(6),
        id(2),
        &GossipMessage::prime(&key(2), 1, 127, 0, &[]).encode(),
    );
    assert_eq!(n.biggest(), Some((127, id(2))));
}

#[test]
fn equal_claims_are_credited_to_the_smaller_peer_id_in_any_order() {
    let t0 = Instant::now();
    let (a, b) = (key(7), key(8));
    let (small, large) = if a.public().to_peer_id().to_bytes() < b.public().to_peer_id().to_bytes()
    {
        (a, b)
    } else {
        (b, a)
    };
    let small_claim = GossipMessage::prime(&small, 1, 127, 0, &[]).encode();
    let large_claim = GossipMessage::prime(&large, 1, 127, 0, &[]).encode();
    for order in [[&small_claim, &large_claim], [&large_claim, &small_claim]] {
        let mut n = node(t0);
        for claim in order {
            let from = GossipMessage::decode(claim).unwrap().msg_forwarder;
            n.on_message(t0, from, claim);
        }
        assert_eq!(n.biggest(), Some((127, small.public().to_peer_id())));
    }
}

#[test]
fn digit_counts_match_known_values() {
    assert_eq!(mersenne_digits(2), 1);
    assert_eq!(mersenne_digits(127), 39);
    assert_eq!(mersenne_digits(4423), 1332);
    assert_eq!(mersenne_digits(82_589_933), 24_862_048);
}

#[test]
fn simulated_nodes_converge_on_the_same_largest_prime_and_finder() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 16,
        degree: 4,
        seed: 7,
        ..SimConfig::default()
    });
    // One find per node per 10 s round at most (the exercise's pace): 2 minutes reach 2^61 - 1.
    sim.run_for(secs(120));
    sim.stop_search();
    sim.run_for(secs(5));
    let (p, finder) = sim.nodes()[0].biggest().expect("something was found");
    assert!(
        p >= 61,
        "two minutes of rounds reach at least 2^61 - 1 (got {p})"
    );
    for n in sim.nodes() {
        assert_eq!(n.biggest(), Some((p, finder)), "all agree");
    }
    let finder_node = sim
        .nodes()
        .iter()
        .find(|n| n.peer_id() == finder)
        .expect("finder is a node");
    assert!(finder_node.view(sim.now()).my_primes.contains(&p));
}

#[test]
fn simulation_is_repeatable_from_its_seed() {
    let run = |seed| {
        let mut sim = Simulation::new(SimConfig {
            nodes: 10,
            seed,
            ..SimConfig::default()
        });
        sim.run_for(secs(30));
        (sim.nodes()[3].biggest(), sim.messages)
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn a_sleeping_node_is_evicted_within_the_stale_timeout_and_rejoins_on_waking() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 6,
        degree: 5,
        seed: 2,
        search: false,
        ..SimConfig::default()
    });
    sim.run_for(secs(6));
    let sleeper = sim.nodes()[0].peer_id();
    assert!(sim.nodes()[1..].iter().all(|n| n.knows(&sleeper)));
    sim.node_mut(0).sleep();
    // Stale after 10 s of silence, checked every second, plus one network latency.
    sim.run_for(secs(12));
    assert!(
        sim.nodes()[1..].iter().all(|n| !n.knows(&sleeper)),
        "evicted by everyone"
    );
    let now = sim.now();
    sim.node_mut(0).wake(now);
    sim.run_for(secs(1));
    assert!(
        sim.nodes()[1..].iter().all(|n| n.knows(&sleeper)),
        "back after its first pings"
    );
}

#[test]
fn flooding_reaches_more_nodes_with_more_ttl() {
    let reach: Vec<f64> = (1..=4).map(|ttl| flood(64, 4, ttl, 1).reach).collect();
    assert!(reach.windows(2).all(|w| w[0] <= w[1]), "{reach:?}");
    assert!(reach[3] > reach[0], "{reach:?}");
    let full = flood(8, 7, 1, 1);
    assert_eq!(full.reach, 1.0, "a full mesh needs one hop");
    assert_eq!(
        full.messages, 7,
        "and one copy per peer, as the others are pruned"
    );
}

#[test]
fn pruning_keeps_the_reach_of_a_flood_and_saves_the_copies_a_dense_mesh_would_duplicate() {
    // The same network (topology and link latencies) flooded both ways: no peer is reached
    // less. (A peer's first copy decides how many hops it passes on; pruning only removes
    // copies to the finder's own neighbours, whose first copy is then the finder's, with the
    // most hops left, so a pruned flood can even reach further, and send more for it.)
    for (nodes, degree) in [(8, 7), (16, 15), (64, 4), (64, 16), (256, 8)] {
        for ttl in 1..=4 {
            let pruned = flood(nodes, degree, ttl, 1);
            let plain = flood_without_pruning(nodes, degree, ttl, 1);
            assert!(
                pruned.reach >= plain.reach,
                "{nodes}/{degree} TTL {ttl}: {pruned:?} vs {plain:?}"
            );
        }
    }
    // Where the finder knows every peer, one copy per peer; the exercise's flood sends several
    // times as many (each first receiver copies to every peer it knows).
    for n in [8, 16] {
        let (pruned, plain) = (flood(n, n - 1, 2, 1), flood_without_pruning(n, n - 1, 2, 1));
        assert_eq!((pruned.reach, plain.reach), (1.0, 1.0));
        assert_eq!(pruned.messages, n as u64 - 1, "{pruned:?}");
        assert!(plain.messages > 5 * pruned.messages, "{plain:?}");
    }
}

fn cooperative(seed: u8, t0: Instant) -> GossipNode {
    GossipNode::new(
        key(seed),
        GossipConfig {
            cooperative: true,
            ..exercise()
        },
        t0,
        t0,
    )
}

/// Two cooperative nodes (ids 1 and 2), connected to each other at `t0`.
fn cooperative_pair(t0: Instant) -> (GossipNode, GossipNode) {
    let (mut a, mut b) = (cooperative(1, t0), cooperative(2, t0));
    a.on_peer_connected(t0, id(2));
    b.on_peer_connected(t0, id(1));
    (a, b)
}

/// The `TESTED` reports among `actions`.
fn tested_reports(actions: &[GossipAction]) -> Vec<&GossipMessage> {
    sends(actions)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.msg_type == MsgType::Tested)
        .collect()
}

/// Hands `to` every `TESTED` among `actions`, as received from `from` at `now`.
fn deliver_reports(actions: &[GossipAction], from: PeerId, to: &mut GossipNode, now: Instant) {
    for report in tested_reports(actions) {
        to.on_message(now, from, &report.encode());
    }
}

/// The next `n` candidates `node` tests (each reported composite).
fn take_candidates(node: &mut GossipNode, now: Instant, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let p = node.next_candidate().expect("searching");
            node.on_tested(now, p, false);
            p
        })
        .collect()
}

/// The `n` smallest primes from `from` on.
fn primes_from(from: u32, n: usize) -> Vec<u32> {
    (from..)
        .filter(|p| super::lucas_lehmer::is_prime(*p))
        .take(n)
        .collect()
}

#[test]
fn cooperative_peers_divide_the_exponents_without_overlap_or_gaps() {
    let t0 = Instant::now();
    let (mut a, mut b) = cooperative_pair(t0);
    // Each one's first tick says, with an empty TESTED, that it takes part.
    let (from_a, from_b) = (a.on_tick(t0), b.on_tick(t0));
    deliver_reports(&from_a, id(1), &mut b, t0);
    deliver_reports(&from_b, id(2), &mut a, t0);
    let mut mine_a = Vec::new();
    let mut mine_b = Vec::new();
    for _ in 0..20 {
        let pa = a.next_candidate().expect("a searches");
        a.on_tested(t0, pa, false);
        mine_a.push(pa);
        let pb = b.next_candidate().expect("b searches");
        b.on_tested(t0, pb, false);
        mine_b.push(pb);
    }
    assert!(
        mine_a.iter().all(|p| !mine_b.contains(p)),
        "{mine_a:?} / {mine_b:?}"
    );
    let mut all: Vec<u32> = mine_a.iter().chain(&mine_b).copied().collect();
    all.sort_unstable();
    let lowest_primes = primes_from(2, all.len());
    // Together they tested the smallest primes, give or take the window each is ahead.
    assert!(
        all.iter().filter(|p| lowest_primes.contains(p)).count() >= all.len() * 3 / 4,
        "{all:?}"
    );
}

#[test]
fn cooperative_reports_spread_coverage_and_advance_the_bound() {
    let t0 = Instant::now();
    let (mut a, mut b) = cooperative_pair(t0);
    a.on_tick(t0);
    let tested = take_candidates(&mut a, t0, 5);
    let actions = a.on_tick(t0 + secs(1));
    let reports = tested_reports(&actions);
    assert_eq!(reports.len(), 1);
    reports[0].verify().expect("signed");
    assert_eq!(
        reports[0].coverage.as_ref().map(|c| c.tested.clone()),
        Some(tested.clone())
    );
    b.on_message(t0 + secs(1), id(1), &reports[0].encode());
    // Whatever b had tested itself plus a's report; b never picks a reported exponent again.
    for _ in 0..10 {
        b.on_tick(t0 + secs(1));
        let p = b.next_candidate().expect("searching");
        assert!(!tested.contains(&p), "{p} was already reported tested");
        b.on_tested(t0 + secs(1), p, false);
    }
    assert!(b.view(t0).covered_below > 2);
    // Nothing new to report: no TESTED on the next tick.
    assert!(tested_reports(&a.on_tick(t0 + secs(2))).is_empty());
}

#[test]
fn a_racing_peer_owns_no_share_of_the_cooperative_search() {
    let t0 = Instant::now();
    let mut a = cooperative(1, t0);
    // Peer 2 races (it never reports TESTED): a tests every exponent itself.
    a.on_peer_connected(t0, id(2));
    a.on_tick(t0);
    let mine = take_candidates(&mut a, t0, 20);
    assert_eq!(mine, primes_from(2, 20));
    assert!(a.view(t0).covered_below > mine[19]);
}

#[test]
fn a_cooperative_peer_keeps_its_share_with_empty_reports_and_loses_it_when_silent() {
    let t0 = Instant::now();
    let (mut a, mut b) = cooperative_pair(t0);
    // Nothing tested yet: b's first tick sends an empty TESTED, then none until half the
    // stale timeout (5 s) has passed.
    let first = b.on_tick(t0);
    let reports = tested_reports(&first);
    assert_eq!(reports.len(), 1);
    reports[0].verify().expect("signed");
    assert_eq!(
        reports[0].coverage.as_ref().map(|c| c.tested.len()),
        Some(0)
    );
    assert!(tested_reports(&b.on_tick(t0 + secs(1))).is_empty());
    assert_eq!(tested_reports(&b.on_tick(t0 + secs(5))).len(), 1);
    // a leaves b's share to b.
    deliver_reports(&first, id(2), &mut a, t0);
    a.on_tick(t0);
    let shared = take_candidates(&mut a, t0, 20);
    assert_ne!(shared, primes_from(2, 20), "b owns some of the smallest");
    // b leaves the mode: it still answers pings, so it stays a peer, but sends no TESTED. After
    // the stale timeout its share is a's again.
    let ping = GossipMessage::probe(MsgType::Ping, 7, id(2), 0);
    a.on_message(t0 + secs(10), id(2), &ping.encode());
    a.on_tick(t0 + secs(11));
    assert!(
        a.view(t0)
            .peers
            .iter()
            .any(|p| p.peer_id == id(2).to_base58())
    );
    let from = a.view(t0).covered_below;
    let untested: Vec<u32> = primes_from(from, 60)
        .into_iter()
        .filter(|p| !shared.contains(p))
        .take(10)
        .collect();
    assert_eq!(take_candidates(&mut a, t0, 10), untested);
}

#[test]
fn a_forged_coverage_report_is_rejected() {
    let t0 = Instant::now();
    let mut n = cooperative(1, t0);
    let mut report = GossipMessage::tested(
        &key(2),
        1,
        super::message::Coverage {
            below: 2,
            tested: vec![3, 5],
        },
        2,
        &[],
    );
    report.coverage = Some(super::message::Coverage {
        below: 100_003,
        tested: vec![3, 5],
    });
    let actions = n.on_message(t0, id(2), &report.encode());
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, GossipAction::Rejected { .. }))
    );
    assert_eq!(n.view(t0).covered_below, 2);
}

#[test]
fn cooperative_nodes_find_every_prime_faster_together() {
    let limit = secs(3600);
    let alone = cooperative_search(1, 1279, 1, limit).expect("one node finds them all");
    let four = cooperative_search(4, 1279, 1, limit).expect("four nodes find them all");
    assert!(four < alone, "4 nodes: {four:?}, 1 node: {alone:?}");
}

#[test]
fn cooperative_search_skips_nothing_when_a_peer_leaves() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 4,
        degree: 3,
        seed: 5,
        gossip: GossipConfig {
            cooperative: true,
            ..exercise()
        },
        ..SimConfig::default()
    });
    sim.run_for(Duration::from_millis(1500));
    // Node 3 goes silent mid-search, holding untested exponents of its share.
    sim.node_mut(3).sleep();
    let targets: Vec<u32> = KNOWN_MERSENNE_EXPONENTS
        .iter()
        .copied()
        .filter(|p| *p <= 2281)
        .collect();
    assert!(
        sim.time_to_find(&targets, secs(3600)).is_some(),
        "every prime up to 2281 is still found"
    );
}

#[test]
fn a_peer_that_joins_later_receives_the_primes_found_before_it() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_tick(t0);
    let p = n.next_candidate().expect("searching");
    n.on_tested(t0, p, true);
    n.on_message(
        t0,
        id(2),
        &GossipMessage::prime(&key(2), 1, 127, 0, &[]).encode(),
    );
    // Peer 3 connects afterwards: it gets both announcements, unchanged but for the hop fields.
    let actions = n.on_peer_connected(t0 + secs(1), id(3));
    let sent = sends(&actions);
    let mut exponents: Vec<u32> = sent.iter().filter_map(|(_, m)| m.exponent).collect();
    exponents.sort_unstable();
    assert_eq!(exponents, vec![2, 127]);
    for (to, m) in &sent {
        assert_eq!((*to, m.ttl, m.msg_forwarder), (id(3), 0, id(1)));
        m.verify().expect("the finder's signature is intact");
    }
    // A known peer reconnecting does not get them again.
    assert!(sends(&n.on_peer_connected(t0 + secs(2), id(3))).is_empty());
    // And the late joiner accepts them.
    let mut late = GossipNode::new(key(3), exercise(), t0, t0);
    for (_, m) in sent {
        late.on_message(t0, id(1), &m.encode());
    }
    assert_eq!(late.view(t0).known_primes, vec![2, 127]);
    assert_eq!(late.biggest(), Some((127, id(2))));
}

#[test]
fn each_known_prime_keeps_when_it_was_first_known_and_whose_announcement_that_was() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_tick(t0);
    let p = n.next_candidate().expect("searching");
    n.on_tested(t0 + secs(1), p, true);
    let prime_127 = |from: u8| GossipMessage::prime(&key(from), 1, 127, 0, &[]).encode();
    n.on_message(t0 + secs(2), id(2), &prime_127(2));
    // Later news of a known prime (another finder's announcement) changes nothing.
    n.on_peer_connected(t0 + secs(3), id(3));
    n.on_message(t0 + secs(3), id(3), &prime_127(3));
    let first: Vec<(u32, u64, String)> = n
        .view(t0 + secs(4))
        .first_known
        .into_iter()
        .map(|k| (k.exponent, k.at_ms, k.originator))
        .collect();
    assert_eq!(
        first,
        vec![(p, 1000, id(1).to_base58()), (127, 2000, id(2).to_base58())]
    );
}

#[test]
fn the_misbehaving_list_is_bounded_against_fakes_from_fresh_keys() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    // Validly signed fakes cost nothing to make: each from a new key, all sent by peer 2.
    let mut last = None;
    for i in 0..(MAX_MISBEHAVING as u64 + 10) {
        let forger = Keypair::generate_ed25519();
        let fake = GossipMessage::prime(&forger, 1, 4421, 0, &[]);
        // The forger's fake is forwarded by 2 (a forwarder signs nothing).
        let forwarded = fake.forwarded_by(id(2));
        let actions = n.on_message(t0, id(2), &forwarded.encode());
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, GossipAction::Rejected { from, .. } if *from == id(2))),
            "fake {i} rejected"
        );
        last = Some(forger.public().to_peer_id());
    }
    let listed = n.view(t0).misbehaving;
    assert_eq!(listed.len(), MAX_MISBEHAVING);
    assert_eq!(listed.last(), last.map(|p| p.to_base58()).as_ref());
}

/// Delivers every message in `queue` (and what it causes) among `nodes`, one ms per hop,
/// ending each open send span when its copy arrives; returns every span recorded, with the
/// recording node's index.
fn spread(
    nodes: &mut [GossipNode],
    t0: Instant,
    first: usize,
    actions: Vec<GossipAction>,
) -> Vec<crate::trace::Span> {
    use std::collections::{HashMap, VecDeque};
    let index: HashMap<PeerId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.peer_id(), i))
        .collect();
    let mut spans = Vec::new();
    let mut open = HashMap::new();
    let mut queue: VecDeque<(usize, GossipAction, u64)> =
        actions.into_iter().map(|a| (first, a, 0)).collect();
    while let Some((from, action, hop)) = queue.pop_front() {
        match action {
            GossipAction::Traced(span) if span.end_ms.is_none() => {
                open.insert(span.span_id, span);
            }
            GossipAction::Traced(span) => spans.push(span),
            GossipAction::Send { to, message } => {
                let at = t0 + Duration::from_millis(hop + 1);
                if let Some(mut span) = message.trace.and_then(|c| open.remove(&c.span_id)) {
                    let end = span.start_ms + 2;
                    span.end(end, crate::trace::SpanStatus::Ok);
                    spans.push(span);
                }
                let i = index[&to];
                let sender = nodes[from].peer_id();
                for next in nodes[i].on_message(at, sender, &message.encode()) {
                    queue.push_back((i, next, hop + 1));
                }
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "every copy sent was delivered");
    spans
}

/// `n` nodes that all list each other; `prune` as given.
fn mesh_pruning(n: u8, t0: Instant, traced: bool, prune: bool) -> Vec<GossipNode> {
    let config = GossipConfig {
        prune,
        ..exercise()
    };
    let mut nodes: Vec<GossipNode> = (1..=n)
        .map(|s| GossipNode::new(key(s), config.clone(), t0, t0))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        if traced {
            node.trace_with(1_000_000, i as u64);
        }
        for s in 1..=n {
            node.on_peer_connected(t0, id(s));
        }
    }
    nodes
}

/// `n` nodes that all list each other, running the exercise's flood (no pruning): what the
/// tracing tests draw, duplicates and all.
fn mesh(n: u8, t0: Instant, traced: bool) -> Vec<GossipNode> {
    mesh_pruning(n, t0, traced, false)
}

#[test]
fn forwarders_skip_the_peers_the_originator_sent_its_message_to() {
    let t0 = Instant::now();
    // A full mesh of four: the finder's three copies are all there is.
    let mut nodes = mesh_pruning(4, t0, true, true);
    let found = nodes[0].on_tested(t0, 13, true);
    let (_, announcement) = sends(&found)[0];
    assert_eq!(announcement.sent_to.len(), 3, "{announcement:?}");
    announcement.verify().expect("the list is signed");
    let spans = spread(&mut nodes, t0, 0, found);
    let named = |prefix: &str| spans.iter().filter(|s| s.name.starts_with(prefix)).count();
    assert_eq!(
        (named("gimps.send PRIME"), named("gimps.receive PRIME")),
        (3, 3)
    );
    for n in &nodes[1..] {
        assert_eq!(n.biggest(), Some((13, id(1))));
        let c = n.counters();
        assert_eq!((c.forwarded, c.pruned, c.duplicates), (0, 2, 0), "{c:?}");
    }

    // A line 1 - 2 - 3 with 2 - 4 as well, and 1 - 4: 2 forwards to 3 only (4 has it from 1).
    let config = exercise();
    let mut two = GossipNode::new(key(2), config.clone(), t0, t0);
    for s in [1, 3, 4] {
        two.on_peer_connected(t0, id(s));
    }
    let prime = GossipMessage::prime(&key(1), 1, 127, 2, &[id(2), id(4)]);
    let out = two.on_message(t0, id(1), &prime.encode());
    let to: Vec<PeerId> = sends(&out).iter().map(|(to, _)| *to).collect();
    assert_eq!(to, [id(3)]);
    assert_eq!(
        sends(&out)[0].1.sent_to,
        prime.sent_to,
        "passed on as signed"
    );
    // A peer that does not prune floods as the exercise does, whatever the message names.
    let mut flooding = GossipNode::new(
        key(2),
        GossipConfig {
            prune: false,
            ..config
        },
        t0,
        t0,
    );
    for s in [1, 3, 4] {
        flooding.on_peer_connected(t0, id(s));
    }
    let out = flooding.on_message(t0, id(1), &prime.encode());
    assert_eq!(sends(&out).len(), 2, "to 3 and 4");
}

#[test]
fn a_forwarder_cannot_stretch_the_list_of_recipients_to_starve_a_peer() {
    let t0 = Instant::now();
    let mut n = node(t0);
    n.on_peer_connected(t0, id(2));
    n.on_peer_connected(t0, id(3));
    let prime = GossipMessage::prime(&key(4), 1, 127, 2, &[id(2)]);
    // 2 claims 4 also sent it to 3, so that we would not pass it on to 3.
    let mut stretched = prime.forwarded_by(id(2));
    stretched.sent_to.push(super::message::sent_to_tag(&id(3)));
    let out = n.on_message(t0, id(2), &stretched.encode());
    assert!(
        matches!(&out[..], [GossipAction::Rejected { from, .. }] if *from == id(2)),
        "{out:?}"
    );
    assert_eq!(n.counters().rejected_signature, 1);
    // The genuine copy still gets through, and on to 3.
    let out = n.on_message(t0, id(2), &prime.forwarded_by(id(2)).encode());
    let to: Vec<PeerId> = sends(&out).iter().map(|(to, _)| *to).collect();
    assert_eq!(to, [id(3)]);
}

#[test]
fn a_traced_prime_spread_is_one_tree_of_hops_with_the_duplicates_marked() {
    use super::node::DUPLICATE;
    use crate::trace::assemble::{self, KIND, REMOTE};
    let t0 = Instant::now();
    let mut nodes = mesh(4, t0, true);
    let found = nodes[0].on_tested(t0, 13, true);
    let spans = spread(&mut nodes, t0, 0, found);
    // The finder's root, 3 copies out of it, and each receiver forwards to the 2 others (TTL 2
    // becomes 1): 3 first receipts, 6 duplicates, 9 sends, 9 receives.
    let named = |prefix: &str| spans.iter().filter(|s| s.name.starts_with(prefix)).count();
    assert_eq!(named("gimps.prime 2^13-1"), 1);
    assert_eq!(named("gimps.send PRIME"), 9);
    assert_eq!(named("gimps.receive PRIME"), 9);
    let duplicates: Vec<_> = spans
        .iter()
        .filter(|s| s.attributes.get(DUPLICATE).map(String::as_str) == Some("true"))
        .collect();
    assert_eq!(duplicates.len(), 6);
    let trace_id = spans[0].trace_id;
    assert!(spans.iter().all(|s| s.trace_id == trace_id), "one trace");
    let by_id: std::collections::HashMap<_, _> = spans.iter().map(|s| (s.span_id, s)).collect();
    for span in &spans {
        match span.attributes.get(KIND).map(String::as_str) {
            // A receive is a child of the send on the peer that sent the copy to it...
            Some("server") => {
                let send = by_id[&span.parent_span_id.expect("parent")];
                assert_eq!(send.attributes[KIND], "client");
                assert_eq!(send.attributes[REMOTE], span.peer);
                assert_eq!(span.attributes["peer.caller"], send.peer);
            }
            // ...and a send a child of the root or of the receive that made this peer forward.
            Some("client") => {
                let parent = by_id[&span.parent_span_id.expect("parent")];
                assert_eq!(parent.peer, span.peer);
                assert!(
                    parent.parent_span_id.is_none()
                        || parent.attributes.get(DUPLICATE).map(String::as_str) == Some("false"),
                    "a duplicate is never forwarded"
                );
            }
            _ => assert!(span.parent_span_id.is_none(), "only the root has no parent"),
        }
    }
    // Put together from the four peers, the trace has every peer and no orphan.
    let answers = nodes
        .iter()
        .map(|n| {
            let me = n.peer_id().to_base58();
            let mine = spans.iter().filter(|s| s.peer == me).cloned().collect();
            (me, Ok(mine))
        })
        .collect();
    let trace = assemble::assemble(trace_id, &nodes[0].peer_id().to_base58(), answers);
    assert_eq!((trace.spans.len(), trace.peers.len()), (19, 4));
    assert!(trace.spans.iter().all(|s| !s.orphan));
}

#[test]
fn untraced_nodes_record_nothing_and_pass_a_context_on_unchanged() {
    let t0 = Instant::now();
    let mut nodes = mesh(3, t0, false);
    let found = nodes[0].on_tested(t0, 13, true);
    assert!(sends(&found).iter().all(|(_, m)| m.trace.is_none()));
    assert!(spread(&mut nodes, t0, 0, found).is_empty());
    // A traced PRIME reaching an untraced node is forwarded with the same context.
    let mut traced = nodes.remove(0);
    traced.trace_with(0, 9);
    traced.reset(t0);
    assert!(traced.is_tracing(), "a reset keeps tracing on");
    let mut quiet = GossipNode::new(key(7), exercise(), t0, t0);
    quiet.on_peer_connected(t0, id(8));
    traced.on_peer_connected(t0, id(7));
    let out = traced.on_tested(t0, 17, true);
    let (_, copy) = sends(&out)
        .into_iter()
        .find(|(to, _)| *to == id(7))
        .expect("sent to 7");
    let forwarded = quiet.on_message(t0, traced.peer_id(), &copy.encode());
    let (_, onward) = sends(&forwarded)[0];
    assert_eq!(onward.trace, copy.trace);
    assert!(
        !forwarded
            .iter()
            .any(|a| matches!(a, GossipAction::Traced(_)))
    );
}

#[test]
fn a_malformed_trace_context_makes_the_message_rejected_and_counted() {
    let t0 = Instant::now();
    let mut n = node(t0);
    let mut prime = GossipMessage::prime(&key(2), 1, 13, 2, &[]);
    prime.trace = None;
    let text = String::from_utf8(prime.encode()).unwrap();
    let bad = text.replacen('}', r#","traceparent":"00-zz-11-01"}"#, 1);
    let out = n.on_message(t0, id(2), bad.as_bytes());
    assert!(
        matches!(&out[..], [GossipAction::Rejected { .. }]),
        "{out:?}"
    );
    assert_eq!(n.counters().rejected_malformed, 1);
    assert_eq!(n.biggest(), None, "nothing learnt from it");
}
