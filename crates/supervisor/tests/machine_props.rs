//! Property tests over random sequences of inputs to the state machine.

mod common;

use std::time::Duration;

use chat_model::{DisconnectReason, Disposition, SourceItem};
use common::*;
use proptest::prelude::*;
use supervisor::machine::PROMPT_MAX_DELAY;
use supervisor::{Action, Backoff, Jitter, Outcome, Policy, Resume};

#[derive(Clone, Debug)]
enum Op {
    Connected,
    Event { id: u8, cursor: bool },
    KeepAlive,
    Cursor(u8),
    Hint(u16),
    Stall(u16),
    Disconnect(u8),
    Advance(u32),
    Fire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Connected),
        10 => (any::<u8>(), any::<bool>()).prop_map(|(id, cursor)| Op::Event { id, cursor }),
        2 => Just(Op::KeepAlive),
        1 => any::<u8>().prop_map(Op::Cursor),
        1 => (0u16..20_000).prop_map(Op::Hint),
        1 => (1u16..120).prop_map(Op::Stall),
        5 => (0u8..12).prop_map(Op::Disconnect),
        4 => (0u32..120_000).prop_map(Op::Advance),
        5 => Just(Op::Fire),
    ]
}

fn reason(i: u8) -> DisconnectReason {
    match i {
        0 => network(),
        1 => DisconnectReason::EndOfStream,
        2 => DisconnectReason::IdleClose("HTTP 400".into()),
        3 => DisconnectReason::Server {
            status: 500,
            retry_after: None,
            message: "oops".into(),
        },
        4 => DisconnectReason::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
        },
        5 => DisconnectReason::RateLimited {
            retry_after: Some(Duration::from_secs(400)),
        },
        6 => DisconnectReason::RateLimited { retry_after: None },
        7 => DisconnectReason::Protocol("not JSON".into()),
        8 => DisconnectReason::Stalled {
            idle: Duration::from_secs(9),
        },
        9 => DisconnectReason::Unauthorized("401".into()),
        10 => DisconnectReason::Forbidden("403".into()),
        _ => DisconnectReason::NotFound("404".into()),
    }
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        1u64..5_000,
        1u64..200,
        prop_oneof![Just(1.0f64), Just(1.5), Just(2.0), Just(3.0)],
        1u64..60,
        proptest::option::of(0u32..20),
        any::<bool>(),
    )
        .prop_map(
            |(initial, factor, multiplier, healthy, max_retries, replay)| Policy {
                backoff: Backoff {
                    initial: Duration::from_millis(initial),
                    max: Duration::from_millis(initial * factor),
                    multiplier,
                    healthy_after: Duration::from_secs(healthy),
                },
                stall_timeout: Duration::from_secs(30),
                resume: if replay {
                    Resume::Replays
                } else {
                    Resume::NoReplay
                },
                max_retries,
                max_elapsed: None,
                prompt_delay: Default::default(),
                max_server_delay: supervisor::DEFAULT_MAX_SERVER_DELAY,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn delays_are_bounded_fatal_is_final_and_deliveries_unique(
        policy in policy_strategy(),
        seed in any::<u64>(),
        window in prop_oneof![Just(4usize), Just(8), Just(4096)],
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let floor = policy.backoff.initial;
        let cap = policy.backoff.max;
        let server_cap = policy.server_delay_cap();
        let mut sim = Sim::with(policy, Jitter::Full, seed, window);
        let mut all = sim.start();
        let mut hint: Option<Duration> = None;
        let mut last_reason: Option<DisconnectReason> = None;
        let mut stopped_fatally = false;
        let mut delivered: Vec<String> = Vec::new();
        for op in ops {
            let actions = match op {
                Op::Connected => sim.connected(),
                Op::Event { id, cursor } => {
                    let id = format!("m{}", id % 16);
                    if cursor { sim.item(msg_at(&id, 1)) } else { sim.item(msg(&id)) }
                }
                Op::KeepAlive => sim.item(SourceItem::KeepAlive),
                Op::Cursor(c) => sim.item(SourceItem::Cursor(cursor_of(c as u64))),
                Op::Hint(ms) => {
                    let actions = sim.item(SourceItem::RetryHint(Duration::from_millis(ms as u64)));
                    if sim.m.state() == supervisor::SourceState::Connected {
                        hint = Some(Duration::from_millis(ms as u64));
                    }
                    actions
                }
                Op::Stall(s) => sim.item(SourceItem::StallTimeout(Duration::from_secs(s as u64))),
                Op::Disconnect(i) => {
                    let live = matches!(
                        sim.m.state(),
                        supervisor::SourceState::Connecting | supervisor::SourceState::Connected
                    );
                    last_reason = Some(reason(i));
                    let actions = sim.disconnect(reason(i));
                    if live && reason(i).is_fatal() {
                        prop_assert!(
                            matches!(actions.last(), Some(Action::GiveUp(Outcome::Fatal(_)))),
                            "a fatal disconnect must stop the source: {actions:?}"
                        );
                    }
                    actions
                }
                Op::Advance(ms) => {
                    // Advance but never past a deadline without firing it, like a driver.
                    let target = sim.now + Duration::from_millis(ms as u64);
                    match sim.m.poll_timeout() {
                        Some(d) if d <= target => sim.fire(),
                        _ => { sim.now = target; Vec::new() }
                    }
                }
                Op::Fire => match sim.m.poll_timeout() {
                    Some(_) => sim.fire(),
                    None => Vec::new(),
                },
            };
            for a in &actions {
                prop_assert!(!stopped_fatally, "action after a fatal stop: {a:?}");
                match a {
                    Action::Close { reason } => last_reason = Some(reason.clone()),
                    Action::WaitUntil(until) => {
                        let delay = *until - sim.now;
                        let reason = last_reason.clone().expect("a wait follows a disconnect");
                        let server = match reason.disposition() {
                            Disposition::After(d) => {
                                // A server's delay is honoured up to the cap.
                                let d = d.min(server_cap);
                                prop_assert!(delay >= d, "{delay:?} shorter than Retry-After {d:?}");
                                d + (d / 10).min(Duration::from_secs(1))
                            }
                            _ => Duration::ZERO,
                        };
                        let upper = cap.max(server).max(hint.unwrap_or_default()).max(PROMPT_MAX_DELAY.min(cap));
                        prop_assert!(delay <= upper, "{delay:?} above {upper:?} after {reason}");
                        if reason.disposition() != Disposition::Prompt {
                            prop_assert!(delay >= floor, "{delay:?} below the floor {floor:?} after {reason}");
                        }
                        if let Some(h) = hint {
                            prop_assert!(delay >= h, "{delay:?} shorter than retry: {h:?}");
                        }
                    }
                    Action::GiveUp(Outcome::Fatal(r)) => {
                        prop_assert!(r.is_fatal());
                        stopped_fatally = true;
                    }
                    Action::GiveUp(Outcome::GaveUp { .. }) => stopped_fatally = true,
                    Action::Deliver { event, .. } => delivered.push(event.id.clone()),
                    _ => {}
                }
            }
            all.extend(actions);
        }
        // Within any `window` consecutive deliveries, ids are unique; with a window larger
        // than the id pool, every delivered id is unique overall.
        for chunk in delivered.windows(window.min(delivered.len()).max(1)) {
            let set: std::collections::HashSet<_> = chunk.iter().collect();
            prop_assert_eq!(set.len(), chunk.len(), "duplicate within the window");
        }
        if window > 16 {
            let set: std::collections::HashSet<_> = delivered.iter().collect();
            prop_assert_eq!(set.len(), delivered.len());
        }
        // Connects only ever follow a start or a wait, never a fatal stop.
        if stopped_fatally {
            let last_connect = all.iter().rposition(|a| matches!(a, Action::Connect { .. }));
            let stop = all.iter().position(|a| matches!(a, Action::GiveUp(_))).unwrap();
            prop_assert!(last_connect.is_none_or(|c| c < stop));
        }
    }

    #[test]
    fn a_failure_streak_never_waits_outside_floor_and_cap(
        initial_ms in 1u64..10_000,
        factor in 1u64..100,
        multiplier in 1.0f64..5.0,
        seed in any::<u64>(),
        failures in 1usize..60,
    ) {
        let mut p = policy(Resume::Replays);
        p.backoff.initial = Duration::from_millis(initial_ms);
        p.backoff.max = Duration::from_millis(initial_ms * factor);
        p.backoff.multiplier = multiplier;
        let mut sim = Sim::with(p.clone(), Jitter::Full, seed, 16);
        sim.start();
        for _ in 0..failures {
            let d = sim.fail(network());
            prop_assert!(d >= p.backoff.initial && d <= p.backoff.max, "{d:?}");
            sim.reconnect();
        }
    }
}
