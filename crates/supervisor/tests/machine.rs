//! Every rule of the sans-IO state machine, with hand-driven time.

mod common;

use chat_model::{ConnectionState, DisconnectReason, Kind, Service, SourceItem};
use common::*;
use supervisor::machine::{PROMPT_MAX_DELAY, QUICK_CLOSE};
use supervisor::{Action, Jitter, Outcome, Restored, Resume, ServerDelay, SourceState};

/// Fails `n` connection attempts in a row (each attempt refused) and returns the delays.
fn refused_delays(sim: &mut Sim, n: usize) -> Vec<std::time::Duration> {
    let mut delays = Vec::new();
    for _ in 0..n {
        delays.push(sim.fail(network()));
        sim.reconnect();
    }
    delays
}

#[test]
fn start_connects_at_once_without_cursor() {
    let mut sim = Sim::new(policy(Resume::Replays));
    let actions = sim.start();
    assert_eq!(lifecycle(&actions), [ConnectionState::Connecting]);
    assert_eq!(connect_of(&actions), Some(None));
    assert_eq!(sim.m.state(), SourceState::Connecting);
    // Starting twice does nothing.
    assert!(sim.start().is_empty());
}

#[test]
fn backoff_without_jitter_doubles_from_the_floor_to_the_cap() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::None, 1, 16);
    sim.start();
    let delays = refused_delays(&mut sim, 9);
    assert_eq!(
        delays,
        [2, 4, 8, 16, 32, 64, 64, 64, 64].map(secs),
        "floor = initial, ×2 per failure, capped at max"
    );
}

#[test]
fn jittered_backoff_stays_in_its_window() {
    // The n-th failure waits within [initial, min(max, initial × 2^n)].
    for seed in 0..50 {
        let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, seed, 16);
        sim.start();
        for (i, d) in refused_delays(&mut sim, 10).into_iter().enumerate() {
            let n = i as u32 + 1;
            let ceiling = (secs(2) * 2u32.pow(n)).min(secs(64));
            assert!(d >= secs(2), "seed {seed} failure {n}: {d:?} below floor");
            assert!(
                d <= ceiling,
                "seed {seed} failure {n}: {d:?} above {ceiling:?}"
            );
        }
    }
}

#[test]
fn jittered_backoff_grows_and_reaches_its_cap() {
    // Mean delay per failure number over many seeded clients rises, and late delays use the
    // whole window up to the cap.
    let mut sums = [0.0f64; 8];
    let mut max_late = secs(0);
    let clients = 200;
    for seed in 0..clients {
        let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, seed, 16);
        sim.start();
        for (i, d) in refused_delays(&mut sim, 8).into_iter().enumerate() {
            sums[i] += d.as_secs_f64();
            if i >= 5 {
                max_late = max_late.max(d);
            }
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / clients as f64).collect();
    for w in means.windows(2).take(4) {
        assert!(w[1] > w[0], "means must grow until the cap: {means:?}");
    }
    // Uniform in [2, 4] has mean 3; in [2, 64] mean 33.
    assert!((means[0] - 3.0).abs() < 0.3, "{means:?}");
    assert!((means[7] - 33.0).abs() < 4.0, "{means:?}");
    assert!(max_late > secs(60) && max_late <= secs(64), "{max_late:?}");
}

#[test]
fn jitter_actually_varies_between_seeds() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..100 {
        let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, seed, 16);
        sim.start();
        seen.insert(sim.fail(network()));
    }
    assert!(seen.len() > 90, "only {} distinct first delays", seen.len());
}

#[test]
fn backoff_resets_only_after_a_healthy_connection() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::None, 1, 16);
    sim.start();
    assert_eq!(refused_delays(&mut sim, 3), [secs(2), secs(4), secs(8)]);
    // Connected, but only for 10 s (< healthy_after 30 s): still the same failure streak.
    sim.connected();
    sim.advance(secs(10));
    assert_eq!(sim.fail(network()), secs(16));
    assert_eq!(sim.m.consecutive_failures(), 4);
    sim.reconnect();
    // Up for 30 s: healthy, so the next failure starts from the floor again.
    sim.connected();
    sim.advance(secs(30));
    assert_eq!(sim.fail(network()), secs(2));
    assert_eq!(sim.m.consecutive_failures(), 1);
}

#[test]
fn retry_after_is_a_minimum_with_a_small_spread() {
    for seed in 0..30 {
        let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, seed, 16);
        sim.start();
        let d = sim.fail(DisconnectReason::RateLimited {
            retry_after: Some(secs(30)),
        });
        assert!(d >= secs(30) && d <= secs(31), "seed {seed}: {d:?}");
    }
    // A 503 with Retry-After shorter than the backoff: the backoff wins (never shorter than
    // either).
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::None, 1, 16);
    sim.start();
    refused_delays(&mut sim, 3);
    let d = sim.fail(DisconnectReason::Server {
        status: 503,
        retry_after: Some(secs(1)),
        message: "busy".into(),
    });
    assert_eq!(d, secs(16));
    // Without jitter the server's delay is kept exactly.
    sim.reconnect();
    let d = sim.fail(DisconnectReason::RateLimited {
        retry_after: Some(secs(300)),
    });
    assert_eq!(d, secs(300), "beyond the cap when the server says so");
    assert_eq!(
        sim.m.consecutive_failures(),
        5,
        "a rate limit counts as a failure"
    );
}

#[test]
fn sse_retry_hint_is_the_least_delay_of_later_reconnects() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.item(SourceItem::RetryHint(secs(10)));
    sim.advance(secs(120));
    // A clean end would reconnect within 500 ms; the server asked for 10 s.
    let d = sim.fail(DisconnectReason::EndOfStream);
    assert_eq!(d, secs(10));
    sim.reconnect();
    // It also floors a backoff delay (2..4 s here) and persists across connections.
    let d = sim.fail(network());
    assert_eq!(d, secs(10));
}

#[test]
fn fatal_errors_stop_the_source_without_retrying() {
    for reason in [
        DisconnectReason::Unauthorized("HTTP 401 for room 1: check the token".into()),
        DisconnectReason::Forbidden("HTTP 403 for flow a/b".into()),
        DisconnectReason::NotFound("HTTP 404 for stream 21".into()),
        DisconnectReason::Config("bad url".into()),
    ] {
        let mut sim = Sim::new(policy(Resume::Replays));
        sim.start();
        sim.connected();
        sim.advance(secs(5));
        let actions = sim.disconnect(reason.clone());
        assert_eq!(
            lifecycle(&actions),
            [ConnectionState::Disconnected, ConnectionState::GaveUp]
        );
        let info = emitted(&actions)[1].connection.clone().unwrap();
        assert_eq!(info.reason, Some(reason.to_string()), "clear error");
        assert_eq!(info.retry_in_ms, None);
        assert_eq!(
            actions.last(),
            Some(&Action::GiveUp(Outcome::Fatal(reason)))
        );
        assert_eq!(sim.m.state(), SourceState::Failed);
        assert_eq!(sim.m.poll_timeout(), None, "nothing more is timed");
        sim.advance(secs(3600));
        let (now, wall) = (sim.now, sim.wall());
        sim.m.handle_timeout(now, wall);
        sim.m.on_disconnect(now, wall, network());
        assert!(sim.drain().is_empty(), "no connect after a fatal error");
    }
}

#[test]
fn fatal_at_first_connect() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    let actions = sim.disconnect(DisconnectReason::Unauthorized("401".into()));
    assert!(connect_of(&actions).is_none());
    assert!(matches!(
        actions.last(),
        Some(Action::GiveUp(Outcome::Fatal(_)))
    ));
    assert_eq!(sim.m.stats().attempts, 1);
}

#[test]
fn clean_end_and_idle_close_reconnect_promptly_without_a_failure() {
    for reason in [
        DisconnectReason::EndOfStream,
        DisconnectReason::IdleClose("HTTP 400".into()),
    ] {
        for seed in 0..20 {
            let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, seed, 16);
            sim.start();
            refused_delays(&mut sim, 3); // a failure streak is not grown by prompt closes
            sim.connected();
            sim.advance(secs(5));
            let d = sim.fail(reason.clone());
            assert!(d <= PROMPT_MAX_DELAY, "{reason}: {d:?}");
            assert_eq!(sim.m.consecutive_failures(), 3, "{reason}");
        }
    }
}

#[test]
fn a_server_that_closes_at_once_every_time_gets_backoff_not_a_tight_loop() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, 3, 16);
    sim.start();
    let mut delays = Vec::new();
    for _ in 0..8 {
        sim.connected();
        sim.advance(ms(5)); // closed right after connecting
        delays.push(sim.fail(DisconnectReason::EndOfStream));
        sim.reconnect();
    }
    assert!(
        delays[0] <= PROMPT_MAX_DELAY,
        "the first one is prompt: {delays:?}"
    );
    for d in &delays[1..] {
        assert!(*d >= secs(2), "later ones back off: {delays:?}");
    }
    assert!(sim.m.consecutive_failures() >= 7);
    // Eight connections took at least 14 s instead of a few milliseconds.
    assert!(sim.elapsed() >= secs(14), "{:?}", sim.elapsed());
    // One that lives longer than QUICK_CLOSE is prompt again.
    sim.connected();
    sim.advance(QUICK_CLOSE + ms(1));
    assert!(sim.fail(DisconnectReason::EndOfStream) <= PROMPT_MAX_DELAY);
}

#[test]
fn max_retries_gives_up_with_the_last_reason() {
    let mut p = policy(Resume::Replays);
    p.max_retries = Some(3);
    let mut sim = Sim::new(p);
    sim.start();
    refused_delays(&mut sim, 3);
    let last = DisconnectReason::Server {
        status: 502,
        retry_after: None,
        message: "bad gateway".into(),
    };
    let actions = sim.disconnect(last.clone());
    assert_eq!(
        actions.last(),
        Some(&Action::GiveUp(Outcome::GaveUp {
            reason: last,
            failures: 4
        }))
    );
    assert_eq!(
        lifecycle(&actions),
        [ConnectionState::Disconnected, ConnectionState::GaveUp]
    );
    assert_eq!(sim.m.state(), SourceState::GaveUp);
    assert_eq!(sim.m.stats().attempts, 4, "the first attempt and 3 retries");
    assert_eq!(sim.m.poll_timeout(), None);
}

#[test]
fn max_retries_counts_only_consecutive_failures() {
    let mut p = policy(Resume::Replays);
    p.max_retries = Some(2);
    let mut sim = Sim::new(p);
    sim.start();
    refused_delays(&mut sim, 2);
    sim.connected();
    sim.advance(secs(31)); // healthy: the budget resets
    refused_delays(&mut sim, 2);
    assert_eq!(sim.m.state(), SourceState::Connecting);
}

#[test]
fn max_elapsed_gives_up_before_waiting_past_the_budget() {
    let mut p = policy(Resume::Replays);
    p.max_elapsed = Some(secs(60));
    for seed in 0..20 {
        let mut sim = Sim::with(p.clone(), Jitter::Full, seed, 16);
        sim.start();
        let first_failure = sim.now;
        let gave_up = loop {
            let actions = sim.disconnect(network());
            if let Some(Action::GiveUp(outcome)) = actions.last() {
                break outcome.clone();
            }
            let d = delay_of(&actions, sim.now).unwrap();
            assert!(
                sim.now + d - first_failure <= secs(60),
                "an attempt past the budget"
            );
            sim.reconnect();
        };
        assert!(matches!(gave_up, Outcome::GaveUp { .. }));
        assert!(sim.now - first_failure <= secs(60));
    }
}

#[test]
fn a_silent_connection_is_replaced_after_the_stall_timeout() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    let deadline = sim.m.poll_timeout().unwrap();
    assert_eq!(deadline - sim.now, secs(60));
    // Before the deadline nothing happens.
    sim.advance(secs(59));
    let (now, wall) = (sim.now, sim.wall());
    sim.m.handle_timeout(now, wall);
    assert!(sim.drain().is_empty());
    let actions = sim.fire();
    assert_eq!(
        actions[0],
        Action::Close {
            reason: DisconnectReason::Stalled { idle: secs(60) }
        }
    );
    assert_eq!(lifecycle(&actions), [ConnectionState::Disconnected]);
    assert!(
        delay_of(&actions, sim.now).is_some(),
        "it backs off and reconnects"
    );
    assert_eq!(sim.m.state(), SourceState::BackingOff);
}

#[test]
fn keep_alives_and_events_both_keep_a_connection_alive() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    for i in 0..10u32 {
        sim.advance(secs(50));
        if i % 2 == 0 {
            sim.item(SourceItem::KeepAlive);
        } else {
            sim.item(msg(&format!("m{i}")));
        }
        assert_eq!(sim.m.poll_timeout().unwrap() - sim.now, secs(60));
    }
    let (now, wall) = (sim.now, sim.wall());
    sim.m.handle_timeout(now, wall);
    assert_eq!(sim.m.state(), SourceState::Connected, "500 s alive");
}

#[test]
fn stall_timeout_item_changes_the_deadline() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.advance(secs(1));
    sim.item(SourceItem::StallTimeout(secs(5)));
    assert_eq!(sim.m.poll_timeout().unwrap() - sim.now, secs(5));
    assert_eq!(sim.m.stall_timeout(), secs(5));
    sim.advance(secs(5));
    let (now, wall) = (sim.now, sim.wall());
    sim.m.handle_timeout(now, wall);
    let actions = sim.drain();
    assert!(matches!(
        actions[0],
        Action::Close {
            reason: DisconnectReason::Stalled { .. }
        }
    ));
    // A longer one (a slower poll) is honoured too, on the next connection as well.
    sim.reconnect();
    sim.connected();
    sim.item(SourceItem::StallTimeout(secs(300)));
    sim.advance(secs(200));
    let (now, wall) = (sim.now, sim.wall());
    sim.m.handle_timeout(now, wall);
    assert_eq!(sim.m.state(), SourceState::Connected);
}

#[test]
fn a_hanging_connect_attempt_times_out() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    let actions = sim.fire();
    assert!(matches!(actions[0], Action::Close { .. }));
    assert_eq!(sim.elapsed(), secs(60));
    assert!(delay_of(&actions, sim.now).is_some());
}

#[test]
fn the_latest_cursor_is_handed_back_on_reconnect() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.item(msg_at("a", 1));
    sim.item(msg_at("b", 2));
    sim.item(msg("c")); // no cursor of its own: the last one stays
    sim.advance(secs(40));
    sim.fail(network());
    assert_eq!(sim.reconnect(), Some(cursor_of(2)));
    sim.connected();
    sim.item(SourceItem::Cursor(cursor_of(7)));
    // A duplicate's cursor does not move the position back.
    sim.item(msg_at("a", 1));
    sim.advance(secs(40));
    sim.fail(DisconnectReason::EndOfStream);
    assert_eq!(sim.reconnect(), Some(cursor_of(7)));
    // A cursor-only advance is a checkpoint for the durable state.
    sim.connected();
    let actions = sim.item(SourceItem::Cursor(cursor_of(9)));
    // It is the first item of the connection: a baseline.
    let checkpoint = Action::Checkpoint {
        cursor: cursor_of(9),
        at: sim.wall(),
        baseline: true,
    };
    assert_eq!(actions, [checkpoint]);
}

#[test]
fn restored_cursor_is_used_for_the_first_connect() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.m.restore(Restored {
        cursor: Some(cursor_of(41)),
        last_delivery_at: Some(wall0()),
        recent_ids: vec!["m40".into(), "m41".into()],
    });
    let actions = sim.start();
    assert_eq!(connect_of(&actions), Some(Some(cursor_of(41))));
    let actions = sim.connected();
    assert!(gaps(&actions).is_empty(), "a replaying source needs no gap");
    let actions = sim.item(msg("m41"));
    assert!(delivered(&actions).is_empty(), "restored ids deduplicate");
    assert_eq!(delivered(&sim.item(msg("m42"))), ["m42"]);
}

#[test]
fn dedup_window_is_bounded_and_evicts_the_oldest() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::Full, 1, 3);
    sim.start();
    sim.connected();
    let mut out = Vec::new();
    for id in ["a", "b", "c", "a", "d", "a", "c", "b"] {
        out.extend(delivered(&sim.item(msg(id))));
    }
    // window [a b c] drops a; d evicts a, so a is new again (evicting b); c is a duplicate;
    // b was evicted by a.
    assert_eq!(out, ["a", "b", "c", "d", "a", "b"]);
    assert_eq!(sim.m.stats().duplicates, 2);
    assert_eq!(sim.m.recent_ids().len(), 3);
    let dropped = sim.item(msg("b"));
    assert_eq!(dropped, [Action::Drop { id: "b".into() }]);
}

#[test]
fn events_without_an_id_are_never_deduplicated() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    assert_eq!(delivered(&sim.item(msg(""))).len(), 1);
    assert_eq!(delivered(&sim.item(msg(""))).len(), 1);
}

#[test]
fn delivered_events_carry_the_source_name_and_service() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    let actions = sim.item(msg_at("x", 3));
    let Action::Deliver { event, cursor, at } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(event.source, "src");
    assert_eq!(event.service, Service::Other("test".into()));
    assert_eq!(cursor, &Some(cursor_of(3)));
    assert_eq!(sim.m.stats().delivered, 1);
    assert_eq!(sim.m.stats().last_event_at, Some(sim.wall()));
    assert_eq!(*at, sim.wall(), "stamped with the time passed in");
}

#[test]
fn no_replay_sources_emit_a_gap_on_every_reconnect() {
    let mut sim = Sim::new(policy(Resume::NoReplay));
    sim.start();
    let actions = sim.connected();
    assert!(gaps(&actions).is_empty(), "no gap on the first connect");
    sim.advance(secs(10));
    sim.item(msg("m1"));
    let last_alive = sim.wall();
    sim.advance(secs(20));
    sim.item(SourceItem::KeepAlive);
    let last_alive_ka = sim.wall();
    assert!(last_alive_ka > last_alive);
    sim.advance(secs(5));
    sim.fail(network());
    sim.reconnect();
    let actions = sim.connected();
    let g = gaps(&actions);
    assert_eq!(g.len(), 1);
    let span = g[0].gap.clone().unwrap();
    assert_eq!(span.from, last_alive_ka, "from the last sign of life");
    assert_eq!(span.to, sim.wall(), "to the reconnect");
    assert_eq!(g[0].source, "src");
    assert!(g[0].id.starts_with("gap:src:1:"), "{}", g[0].id);
    assert!(
        g[0].text.contains("may be missing") && g[0].text.contains("connection reset"),
        "{}",
        g[0].text
    );
    assert!(
        g[0].text.contains("2026-11-30T12:00:30.000Z"),
        "{}",
        g[0].text
    );
    // Failed attempts in between do not emit gaps of their own; the next reconnect does.
    sim.advance(secs(1));
    sim.fail(DisconnectReason::EndOfStream);
    sim.reconnect();
    sim.fail(network());
    sim.reconnect();
    let actions = sim.connected();
    let g2 = gaps(&actions);
    assert_eq!(g2.len(), 1);
    assert_ne!(g2[0].id, g[0].id);
    assert_eq!(sim.m.stats().gaps, 2);
    assert_eq!(sim.m.stats().reconnects, 2);
}

#[test]
fn no_replay_first_connect_after_failed_attempts_emits_a_gap_from_the_start() {
    // A first answer swallowed or stalled, then a refusal: what was said since the source
    // started cannot be replayed, so the first working connection announces it.
    let mut sim = Sim::new(policy(Resume::NoReplay));
    sim.start();
    let started = sim.wall();
    sim.advance(secs(2));
    sim.fail(DisconnectReason::Stalled { idle: secs(2) });
    sim.reconnect();
    sim.fail(network());
    sim.reconnect();
    let actions = sim.connected();
    let g = gaps(&actions);
    assert_eq!(g.len(), 1, "{actions:?}");
    let span = g[0].gap.clone().unwrap();
    assert_eq!(span.from, started);
    assert_eq!(span.to, sim.wall());
    assert!(
        g[0].text.contains("first connection attempts failed"),
        "{}",
        g[0].text
    );
    assert_eq!(sim.m.stats().gaps, 1);
}

#[test]
fn replaying_sources_emit_no_gap() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    for _ in 0..3 {
        sim.advance(secs(5));
        sim.fail(network());
        sim.reconnect();
        assert!(gaps(&sim.connected()).is_empty());
    }
    assert_eq!(sim.m.stats().gaps, 0);
    assert_eq!(sim.m.stats().reconnects, 3);
}

#[test]
fn no_replay_restart_emits_a_gap_from_the_saved_delivery_time() {
    let saved = wall0() - chrono::Duration::minutes(3);
    let mut sim = Sim::new(policy(Resume::NoReplay));
    sim.m.restore(Restored {
        cursor: None,
        last_delivery_at: Some(saved),
        recent_ids: vec![],
    });
    sim.start();
    let actions = sim.connected();
    let g = gaps(&actions);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].gap.clone().unwrap().from, saved);
    assert_eq!(g[0].gap.clone().unwrap().to, wall0());
    // Without a saved delivery time there is nothing to report.
    let mut sim = Sim::new(policy(Resume::NoReplay));
    sim.start();
    assert!(gaps(&sim.connected()).is_empty());
}

#[test]
fn lifecycle_events_tell_the_whole_story() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::None, 1, 16);
    let mut all = sim.start();
    all.extend(sim.disconnect(DisconnectReason::Server {
        status: 500,
        retry_after: None,
        message: "oops".into(),
    }));
    all.extend(sim.fire());
    all.extend(sim.connected());
    sim.advance(secs(3));
    all.extend(sim.disconnect(DisconnectReason::Unauthorized("token revoked".into())));
    let events = emitted(&all);
    let states: Vec<_> = events
        .iter()
        .map(|e| e.connection.as_ref().unwrap().state)
        .collect();
    use ConnectionState::*;
    assert_eq!(
        states,
        [
            Connecting,
            Disconnected,
            Connecting,
            Connected,
            Disconnected,
            GaveUp
        ]
    );
    let info: Vec<_> = events
        .iter()
        .map(|e| e.connection.clone().unwrap())
        .collect();
    assert_eq!(info[0].attempt, 1);
    assert_eq!(info[1].retry_in_ms, Some(2000));
    assert!(
        info[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("server error 500")
    );
    assert_eq!(info[2].attempt, 2);
    assert_eq!(info[3].attempt, 2);
    assert!(info[5].reason.as_deref().unwrap().contains("token revoked"));
    for e in &events {
        assert_eq!(e.kind, Kind::Connection);
        assert_eq!(e.source, "src");
    }
    let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), events.len(), "unique ids");
    assert_eq!(
        events[1].at,
        wall0(),
        "stamped with the wall time passed in"
    );
}

#[test]
fn malformed_frames_are_counted_and_keep_the_connection_alive() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.advance(secs(59));
    let actions = sim.item(SourceItem::Malformed {
        error: "bad JSON at byte 17".into(),
    });
    assert!(actions.is_empty());
    assert_eq!(sim.m.stats().malformed, 1);
    assert!(
        sim.m
            .stats()
            .last_error
            .as_deref()
            .unwrap()
            .contains("byte 17")
    );
    assert_eq!(sim.m.poll_timeout().unwrap() - sim.now, secs(60));
}

#[test]
fn inputs_in_the_wrong_phase_are_ignored() {
    let mut sim = Sim::new(policy(Resume::Replays));
    // Before start.
    sim.item(msg("a"));
    sim.disconnect(network());
    sim.connected();
    assert_eq!(sim.m.state(), SourceState::Idle);
    sim.start();
    // An item while connecting is ignored (the driver never does this).
    assert!(sim.item(msg("a")).is_empty());
    sim.fail(network());
    // While backing off: a stray disconnect or connected does nothing.
    assert!(sim.disconnect(network()).is_empty());
    assert!(sim.connected().is_empty());
    assert_eq!(sim.m.state(), SourceState::BackingOff);
}

#[test]
fn shutdown_stops_everything() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.m.on_shutdown();
    assert_eq!(sim.m.state(), SourceState::Stopped);
    assert_eq!(sim.m.poll_timeout(), None);
    assert!(sim.item(msg("a")).is_empty());
}

#[test]
fn absurd_server_delays_and_timeouts_do_not_overflow() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.item(SourceItem::StallTimeout(std::time::Duration::MAX));
    assert!(sim.m.poll_timeout().unwrap() > sim.now + secs(365 * 86_400));
    sim.item(SourceItem::RetryHint(std::time::Duration::MAX));
    let actions = sim.disconnect(DisconnectReason::RateLimited {
        retry_after: Some(std::time::Duration::MAX),
    });
    let wait = delay_of(&actions, sim.now).unwrap();
    // Capped (issue 13: an absurd server delay used to be obeyed as given).
    let cap = supervisor::DEFAULT_MAX_SERVER_DELAY;
    assert!(wait >= cap && wait <= cap + SECOND, "capped: {wait:?}");
    let info = emitted(&actions)[0].connection.clone().unwrap();
    assert!(info.retry_in_ms.unwrap() <= 301_000);
}

fn capped(actions: &[Action]) -> Vec<(ServerDelay, std::time::Duration, std::time::Duration)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ServerDelayCapped { from, asked, cap } => Some((*from, *asked, *cap)),
            _ => None,
        })
        .collect()
}

#[test]
fn server_delays_are_honoured_up_to_the_cap_and_capping_is_reported() {
    let mut sim = Sim::with(policy(Resume::Replays), Jitter::None, 1, 16);
    sim.start();
    // `Retry-After: 999999`: the default cap, 300 s (above the backoff maximum of 64 s).
    let actions = sim.disconnect(DisconnectReason::RateLimited {
        retry_after: Some(secs(999_999)),
    });
    assert_eq!(delay_of(&actions, sim.now), Some(secs(300)));
    assert_eq!(
        capped(&actions),
        [(ServerDelay::RetryAfter, secs(999_999), secs(300))]
    );
    let info = emitted(&actions)[0].connection.clone().unwrap();
    assert_eq!(info.retry_in_ms, Some(300_000));
    // A delay within the cap is kept as given and not reported.
    sim.reconnect();
    let actions = sim.disconnect(DisconnectReason::RateLimited {
        retry_after: Some(secs(299)),
    });
    assert_eq!(delay_of(&actions, sim.now), Some(secs(299)));
    assert!(capped(&actions).is_empty());

    // SSE `retry: 999999999` (ms, 11.6 days): capped, and the capped value is the floor of
    // every later reconnect.
    sim.reconnect();
    sim.connected();
    let actions = sim.item(SourceItem::RetryHint(ms(999_999_999)));
    assert_eq!(
        capped(&actions),
        [(ServerDelay::RetryHint, ms(999_999_999), secs(300))]
    );
    sim.advance(secs(120));
    assert_eq!(sim.fail(DisconnectReason::EndOfStream), secs(300));
    sim.reconnect();
    assert_eq!(sim.fail(network()), secs(300));
    sim.reconnect();
    assert_eq!(
        sim.fail(DisconnectReason::RateLimited {
            retry_after: Some(secs(10))
        }),
        secs(300),
        "the capped hint floors a short Retry-After too"
    );
}

#[test]
fn the_server_delay_cap_is_the_larger_of_max_server_delay_and_the_backoff_maximum() {
    // max_server_delay below the backoff maximum: the backoff maximum is the cap.
    let mut p = policy(Resume::Replays);
    p.backoff.max = secs(600);
    p.max_server_delay = secs(60);
    let mut sim = Sim::with(p, Jitter::None, 1, 16);
    sim.start();
    let actions = sim.disconnect(DisconnectReason::RateLimited {
        retry_after: Some(secs(900)),
    });
    assert_eq!(delay_of(&actions, sim.now), Some(secs(600)));
    assert_eq!(
        capped(&actions),
        [(ServerDelay::RetryAfter, secs(900), secs(600))]
    );
    // max_server_delay above it: max_server_delay is the cap.
    let mut p = policy(Resume::Replays);
    p.max_server_delay = secs(1000);
    let mut sim = Sim::with(p, Jitter::None, 1, 16);
    sim.start();
    let actions = sim.disconnect(DisconnectReason::RateLimited {
        retry_after: Some(secs(900)),
    });
    assert_eq!(delay_of(&actions, sim.now), Some(secs(900)));
    assert!(capped(&actions).is_empty());
}

fn only_duplicates(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::OnlyDuplicates { dropped } => Some(*dropped),
            _ => None,
        })
        .collect()
}

#[test]
fn a_connection_that_resends_only_delivered_events_is_reported_once() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    for i in 0..20 {
        sim.item(msg(&format!("m{i}")));
    }
    // The server's history was reset: the reconnect sends m0.. again.
    sim.fail(network());
    sim.reconnect();
    sim.connected();
    let mut reports = Vec::new();
    for i in 0..9 {
        reports.extend(only_duplicates(&sim.item(msg(&format!("m{i}")))));
    }
    assert!(reports.is_empty(), "nine duplicates are not yet suspicious");
    reports.extend(only_duplicates(&sim.item(msg("m9"))));
    assert_eq!(reports, [supervisor::machine::REPLAY_WARN_AFTER]);
    for i in 10..20 {
        assert!(only_duplicates(&sim.item(msg(&format!("m{i}")))).is_empty());
    }
    assert_eq!(sim.m.stats().duplicates, 20);
    // Once per connection: the next connection that does the same is reported again.
    sim.fail(network());
    sim.reconnect();
    sim.connected();
    let reports: Vec<u64> = (0..15)
        .flat_map(|i| only_duplicates(&sim.item(msg(&format!("m{i}")))))
        .collect();
    assert_eq!(reports, [10]);
    // A connection that delivers something new first (an ordinary overlap after it) is not.
    sim.fail(network());
    sim.reconnect();
    sim.connected();
    sim.item(msg("new"));
    let reports: Vec<u64> = (0..15)
        .flat_map(|i| only_duplicates(&sim.item(msg(&format!("m{i}")))))
        .collect();
    assert!(reports.is_empty(), "{reports:?}");
}

#[test]
fn disconnected_since_is_set_at_start_and_disconnect_and_cleared_on_connect() {
    let mut sim = Sim::new(policy(Resume::Replays));
    assert_eq!(sim.m.stats().disconnected_since, None, "not started");
    sim.start();
    let started = sim.wall();
    assert_eq!(sim.m.stats().disconnected_since, Some(started));
    // Failed attempts keep the first moment.
    sim.advance(secs(1));
    sim.fail(network());
    sim.reconnect();
    sim.fail(network());
    assert_eq!(sim.m.stats().disconnected_since, Some(started));
    sim.reconnect();
    sim.connected();
    assert_eq!(sim.m.stats().disconnected_since, None);
    sim.advance(secs(40));
    let dropped = sim.wall();
    sim.fail(network());
    assert_eq!(sim.m.stats().disconnected_since, Some(dropped));
    sim.reconnect();
    sim.connected();
    assert_eq!(sim.m.stats().disconnected_since, None);
}

#[test]
fn time_spent_waiting_for_the_consumer_does_not_count_as_silence() {
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.item(msg("a"));
    sim.advance(secs(90)); // the driver was blocked handing "a" to a slow consumer
    sim.m.on_reading_resumed(sim.now);
    let (now, wall) = (sim.now, sim.wall());
    sim.m.handle_timeout(now, wall);
    assert!(sim.drain().is_empty());
    assert_eq!(sim.m.poll_timeout().unwrap() - sim.now, secs(60));
    // It never moves the clock back, and means nothing when not connected.
    sim.m.on_reading_resumed(sim.now - secs(30));
    assert_eq!(sim.m.poll_timeout().unwrap() - sim.now, secs(60));
}

#[test]
fn a_checkpoint_is_a_baseline_only_before_anything_is_delivered_on_a_connection() {
    let baselines = |actions: &[Action]| -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Checkpoint { baseline, .. } => Some(*baseline),
                _ => None,
            })
            .collect()
    };
    let mut sim = Sim::new(policy(Resume::Replays));
    sim.start();
    sim.connected();
    sim.advance(SECOND);
    assert_eq!(
        baselines(&sim.item(SourceItem::Cursor(cursor_of(1)))),
        [true]
    );
    assert_eq!(
        baselines(&sim.item(SourceItem::Cursor(cursor_of(2)))),
        [false]
    );
    sim.advance(secs(40));
    sim.fail(network());
    sim.reconnect();
    sim.connected();
    sim.item(msg_at("a", 3));
    assert_eq!(
        baselines(&sim.item(SourceItem::Cursor(cursor_of(4)))),
        [false],
        "an event came first"
    );
}
