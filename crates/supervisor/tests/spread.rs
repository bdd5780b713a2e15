//! Simulation: many clients of one server that restarts. With jitter their reconnects spread
//! out; without it they arrive together. Deterministic (fixed seeds, hand-driven time).
//!
//! Run with `--nocapture` to see the numbers quoted in the crate README.

mod common;

use std::time::Duration;

use chat_model::DisconnectReason;
use common::*;
use supervisor::{Action, Jitter, Resume, SourceState};

const CLIENTS: u64 = 200;
const WINDOW: Duration = Duration::from_millis(100);

/// Each client has been connected (healthy) for a minute when, at `t = 0`, the server drops
/// every connection with `reason` and refuses connections for `down`. Returns, per client,
/// the times of its connection attempts and of its successful reconnect, relative to `t = 0`.
fn run(
    jitter: Jitter,
    reason: &DisconnectReason,
    down: Duration,
) -> Vec<(Vec<Duration>, Duration)> {
    (0..CLIENTS)
        .map(|seed| {
            let mut sim = Sim::with(policy(Resume::Replays), jitter, 1000 + seed, 16);
            sim.start();
            sim.connected();
            sim.advance(secs(60));
            let t0 = sim.now;
            let mut actions = sim.disconnect(reason.clone());
            let mut attempts = Vec::new();
            for _ in 0..100 {
                actions = if actions.iter().any(|a| matches!(a, Action::Connect { .. })) {
                    let t = sim.now - t0;
                    attempts.push(t);
                    if t >= down {
                        sim.connected();
                        assert_eq!(sim.m.state(), SourceState::Connected);
                        return (attempts, t);
                    }
                    sim.disconnect(network())
                } else {
                    sim.fire()
                };
            }
            panic!("client {seed} never reconnected");
        })
        .collect()
}

/// The most events in any `WINDOW`-long span, as a fraction of all.
fn peak_fraction(times: &[Duration]) -> f64 {
    let mut t: Vec<Duration> = times.to_vec();
    t.sort();
    let mut best = 0;
    let mut j = 0;
    for i in 0..t.len() {
        while t[i] - t[j] >= WINDOW {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best as f64 / t.len() as f64
}

fn stdev_ms(times: &[Duration]) -> f64 {
    let n = times.len() as f64;
    let xs: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

fn span(times: &[Duration]) -> (Duration, Duration) {
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

fn describe(label: &str, times: &[Duration]) -> (f64, f64) {
    let peak = peak_fraction(times);
    let sd = stdev_ms(times);
    let (lo, hi) = span(times);
    println!(
        "{label:<58} n={:<5} first {:>6.0} ms  last {:>6.0} ms  stdev {:>6.0} ms  peak/100ms {:>5.1}%",
        times.len(),
        lo.as_secs_f64() * 1000.0,
        hi.as_secs_f64() * 1000.0,
        sd,
        peak * 100.0
    );
    (peak, sd)
}

#[test]
fn a_server_restart_does_not_bring_every_client_back_at_once() {
    let reason = network();
    let jittered = run(Jitter::Full, &reason, Duration::ZERO);
    let plain = run(Jitter::None, &reason, Duration::ZERO);
    let j: Vec<Duration> = jittered.iter().map(|c| c.1).collect();
    let p: Vec<Duration> = plain.iter().map(|c| c.1).collect();
    let (jp, jsd) = describe("restart, network error, jitter (backoff 2s..4s window)", &j);
    let (pp, psd) = describe("restart, network error, no jitter", &p);
    // Without jitter all 200 arrive in the same instant.
    assert_eq!(pp, 1.0);
    assert_eq!(psd, 0.0);
    // With jitter they spread over [2 s, 4 s]: uniform would put 5% in each 100 ms (these
    // seeds give 9.5% in the busiest sliding window).
    assert!(jp <= 0.12, "peak {jp}");
    assert!(jsd >= 450.0, "stdev {jsd}");
    let (lo, hi) = span(&j);
    assert!(lo >= secs(2) && hi <= secs(4));
    assert!(hi - lo >= Duration::from_millis(1800), "{lo:?}..{hi:?}");
}

#[test]
fn a_server_down_for_ten_seconds_sees_retries_spread_out() {
    let reason = network();
    let down = secs(10);
    let jittered = run(Jitter::Full, &reason, down);
    let plain = run(Jitter::None, &reason, down);
    let j_attempts: Vec<Duration> = jittered.iter().flat_map(|c| c.0.clone()).collect();
    let p_attempts: Vec<Duration> = plain.iter().flat_map(|c| c.0.clone()).collect();
    let j_back: Vec<Duration> = jittered.iter().map(|c| c.1).collect();
    let p_back: Vec<Duration> = plain.iter().map(|c| c.1).collect();
    let (jpa, _) = describe("down 10s: every attempt, jitter", &j_attempts);
    let (ppa, _) = describe("down 10s: every attempt, no jitter", &p_attempts);
    let (jpb, jsdb) = describe("down 10s: successful reconnects, jitter", &j_back);
    let (ppb, _) = describe("down 10s: successful reconnects, no jitter", &p_back);
    // Without jitter every retry wave is the whole population (at 2 s, 6 s, 14 s).
    assert_eq!(p_attempts.len(), 600);
    assert_eq!(ppa, 200.0 / 600.0, "three waves of all 200 clients");
    assert_eq!(ppb, 1.0);
    assert!(p_back.iter().all(|t| *t == secs(14)));
    // With jitter no 100 ms holds more than a few percent of the attempts or reconnects.
    assert!(jpa <= 0.05, "attempt peak {jpa}");
    assert!(jpb <= 0.08, "reconnect peak {jpb}");
    assert!(jsdb >= 1500.0, "stdev {jsdb}");
    // And nobody reconnected before the server was back or waited absurdly long.
    assert!(j_back.iter().all(|t| *t >= down && *t <= down + secs(64)));
}

#[test]
fn a_clean_restart_reconnects_promptly_but_still_spread() {
    let reason = DisconnectReason::EndOfStream;
    let jittered = run(Jitter::Full, &reason, Duration::ZERO);
    let j: Vec<Duration> = jittered.iter().map(|c| c.1).collect();
    let (peak, sd) = describe("restart, clean end of stream (prompt), jitter", &j);
    let (_, hi) = span(&j);
    assert!(hi <= Duration::from_millis(500), "prompt: within 500 ms");
    // 500 ms of spread: uniform would be 20% per 100 ms.
    assert!(peak <= 0.30, "peak {peak}");
    assert!(sd >= 100.0, "stdev {sd}");
}
