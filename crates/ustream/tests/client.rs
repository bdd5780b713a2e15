//! The client against the emulator: order, both payload shapes, suffixes, failed and slow
//! polls (each ends the client; the tests reconnect from the last cursor as the supervisor
//! does), interval changes, host switches, ignores, retractions, resume.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_model::{DisconnectReason, Event, Kind, SourceItem};
use emulator::ustream::{Config, Emulator};
use emulator::{Fault, FaultPlan};
use ustream::{Client, UstreamCursor};

fn emu_config(faults: Vec<Vec<Fault>>) -> Config {
    Config {
        rate: 0.0,
        lag_secs: 2,
        refresh_intervals: vec![1],
        interval_every: 0,
        faults: Arc::new(FaultPlan::script(faults)),
        ..Config::default()
    }
}

fn client_config(emu: &Emulator) -> ustream::Config {
    let mut c = ustream::Config::new(emu.url(), emu.channel().to_string());
    c.source = "us".into();
    c.request_timeout = Duration::from_secs(5);
    c
}

#[derive(Default)]
struct Seen {
    items: Vec<SourceItem>,
    /// How many times a failed client was replaced by one resuming from the last cursor.
    reconnects: usize,
}

impl Seen {
    fn events(&self) -> Vec<&Event> {
        self.items.iter().filter_map(SourceItem::as_event).collect()
    }
    fn messages(&self) -> Vec<&Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == Kind::Message)
            .collect()
    }
    fn last_cursor(&self) -> Option<UstreamCursor> {
        self.items.iter().rev().find_map(|i| match i {
            SourceItem::Cursor(c) => Some(UstreamCursor::from_cursor(c).unwrap()),
            _ => None,
        })
    }
}

/// Pulls items until `done` holds (or a generous deadline passes). A failed poll ends the
/// client: as the supervisor does, a retryable failure is followed by a new client resuming
/// from the last cursor delivered (after the server's `Retry-After`, or a short backoff).
async fn pull(p: &mut Client, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "timed out; got {:#?}",
            seen.events()
        );
        match tokio::time::timeout(Duration::from_secs(30), p.next_item()).await {
            Ok(Ok(item)) => seen.items.push(item),
            Ok(Err(e)) if e.is_retryable() => {
                // Sticky until replaced.
                let again = p.next_item().await.unwrap_err();
                assert_eq!(again.to_string(), e.to_string());
                tokio::time::sleep(e.retry_after().unwrap_or(Duration::from_millis(300))).await;
                let config = p.session().config().clone();
                let memory = p.session().memory().clone();
                *p = Client::new(config, seen.last_cursor())
                    .unwrap()
                    .with_memory(memory);
                seen.reconnects += 1;
            }
            Ok(Err(e)) => panic!("client failed for good: {e}"),
            Err(_) => panic!("no item within 30 s"),
        }
    }
}

/// Every visible committed message delivered exactly once, in commit order, with clean text.
fn assert_exactly_once(emu: &Emulator, seen: &Seen) {
    let expected: Vec<String> = emu
        .visible_messages()
        .iter()
        .map(|c| format!("ustream:{}:{}", emu.channel(), c.uid))
        .collect();
    let got: Vec<String> = seen.messages().iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, expected, "all messages, in order, none twice");
    let texts: Vec<String> = emu
        .visible_messages()
        .iter()
        .map(|c| c.text.clone())
        .collect();
    let got_texts: Vec<String> = seen.messages().iter().map(|e| e.text.clone()).collect();
    assert_eq!(got_texts, texts, "suffixes removed, nothing else changed");
}

fn has_all(emu: &Emulator) -> impl Fn(&Seen) -> bool + '_ {
    move |s: &Seen| {
        let want: HashSet<String> = emu
            .visible_messages()
            .iter()
            .map(|c| format!("ustream:{}:{}", emu.channel(), c.uid))
            .collect();
        let got: HashSet<String> = s.messages().iter().map(|e| e.id.clone()).collect();
        want.is_subset(&got)
    }
}

/// The (from, width) of every timeslice request on `listener`.
fn slices(emu: &Emulator, listener: usize) -> Vec<(i64, u64)> {
    emu.requests()
        .iter()
        .filter(|r| r.listener == listener)
        .filter_map(|r| {
            let rest = r.path.split("/timeslice/").nth(1)?;
            let (a, b) = rest.split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

async fn inject_for(emu: &Emulator, n: usize, every: Duration) {
    let people = [
        ("twitter", "Ada"),
        ("facebook", "Ken"),
        ("ustream", "Grace"),
        ("twitter", "Linus"),
    ];
    for i in 0..n {
        let (p, who) = people[i % people.len()];
        emu.inject_message(p, who, &format!("message {i} from {who}"));
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn delivers_in_order_without_auth_and_cleans_suffixes() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    for _ in 0..3 {
        emu.inject_generated();
    }
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    inject_for(&emu, 24, Duration::from_millis(100)).await;
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let reqs = emu.requests();
    assert!(
        reqs[0]
            .path
            .ends_with("/socialstream/get.json/1234/default")
    );
    assert!(reqs[1..].iter().all(|r| r.path.contains("/timeslice/")));
    assert!(
        reqs.iter().all(|r| !r.authorization),
        "no Authorization header"
    );
    // Contiguous windows: each starts where the one before ended.
    let s = slices(&emu, 0);
    for w in s.windows(2) {
        assert_eq!(w[1].0, w[0].0 + w[0].1 as i64, "{s:?}");
    }
    assert!(
        seen.items
            .iter()
            .any(|i| matches!(i, SourceItem::KeepAlive))
    );
    assert!(
        seen.items
            .iter()
            .any(|i| matches!(i, SourceItem::StallTimeout(_)))
    );
    assert!(
        emu.committed().len() > 20,
        "some generated messages carried the suffix"
    );
    let m = seen.messages()[0];
    assert!(m.author.name.is_some() && m.author.network.is_some());
    assert!(m.raw.is_some());
    emu.stop().await;
}

#[tokio::test]
async fn failed_polls_end_the_client_and_a_resume_widens_so_nothing_is_lost() {
    let emu = Emulator::start(emu_config(vec![
        vec![],
        vec![],
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![Fault::DropAfterBytes(20)],
        vec![Fault::Malformed],
        vec![Fault::Refuse],
    ]))
    .await
    .unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    let inj = async {
        inject_for(&emu, 20, Duration::from_millis(200)).await;
        emu.push_soft_failure("the social stream is resting");
    };
    let run = pull(&mut p, &mut seen, |s| {
        s.messages().len() >= 20 && s.items.len() > 60
    });
    tokio::join!(inj, run);
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let s = slices(&emu, 0);
    assert!(
        s.iter().any(|&(_, w)| w > 1),
        "a widened timeslice covered the failed polls: {s:?}"
    );
    // Failed requests are asked again from the same start; successful ones chain.
    let starts: Vec<i64> = s.iter().map(|x| x.0).collect();
    let mut distinct = starts.clone();
    distinct.dedup();
    assert!(
        distinct.len() < starts.len(),
        "a failed slice was re-asked from its start"
    );
    assert!(
        seen.reconnects >= 5,
        "each fault ended a client: {}",
        seen.reconnects
    );
    emu.stop().await;
}

#[tokio::test]
async fn slow_responses_never_accumulate_delay() {
    let emu = Emulator::start(emu_config(vec![
        vec![],
        vec![],
        vec![Fault::Delay(Duration::from_millis(2600))],
        vec![],
        vec![Fault::Delay(Duration::from_millis(1500))],
    ]))
    .await
    .unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    let inj = inject_for(&emu, 16, Duration::from_millis(250));
    let run = pull(&mut p, &mut seen, |s| s.items.len() > 40);
    tokio::join!(inj, run);
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let s = slices(&emu, 0);
    // A late answer is followed by one widened slice that catches up with the grid...
    let widened: Vec<_> = s.iter().filter(|&&(_, w)| w > 1).collect();
    assert!(!widened.is_empty(), "{s:?}");
    // ... and the windows stay contiguous.
    for w in s.windows(2) {
        assert_eq!(w[1].0, w[0].0 + w[0].1 as i64, "{s:?}");
    }
    // Range progress keeps up with the wall clock: the last window ends no further behind
    // the server clock than the lag plus a few seconds (a drifting poller would fall behind by
    // the sum of the delays).
    let (from, width) = *s.last().unwrap();
    assert!(emu.now_key() - (from + width as i64) <= 2 + 3, "{s:?}");
    emu.stop().await;
}

#[tokio::test]
async fn interval_changes_apply_immediately() {
    let emu = Emulator::start(Config {
        refresh_intervals: vec![1, 2],
        interval_every: 3,
        ..emu_config(vec![])
    })
    .await
    .unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    pull(&mut p, &mut seen, |s| {
        s.items
            .iter()
            .filter(|i| matches!(i, SourceItem::StallTimeout(_)))
            .count()
            >= 4 // the one a new client announces at once, then three from responses
    })
    .await;
    let stalls: Vec<Duration> = seen
        .items
        .iter()
        .filter_map(|i| match i {
            SourceItem::StallTimeout(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_ne!(stalls[1], stalls[2]);
    let s = slices(&emu, 0);
    assert!(
        s.iter().any(|&(_, w)| w == 1) && s.iter().any(|&(_, w)| w == 2),
        "{s:?}"
    );
    // The stall timeout leaves room for the interval and a request.
    assert!(stalls.iter().all(|d| *d > Duration::from_secs(6)));
    emu.stop().await;
}

#[tokio::test]
async fn host_switch_moves_to_the_new_server_with_default() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    inject_for(&emu, 4, Duration::from_millis(100)).await;
    pull(&mut p, &mut seen, has_all(&emu)).await;
    let host = emu.switch_host();
    inject_for(&emu, 6, Duration::from_millis(200)).await;
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && s.events().iter().any(|e| e.kind == Kind::System)
    })
    .await;
    assert_exactly_once(&emu, &seen);
    let notice = seen
        .events()
        .into_iter()
        .find(|e| e.kind == Kind::System)
        .unwrap()
        .clone();
    assert_eq!(notice.detail.as_ref().unwrap()["host"], host.as_str());
    let reqs = emu.requests();
    let first_secondary = reqs.iter().position(|r| r.listener == 1).unwrap();
    assert!(reqs[first_secondary].path.ends_with("/default"));
    assert!(
        reqs[first_secondary..].iter().all(|r| r.listener == 1),
        "no more polls on the old host"
    );
    assert_eq!(p.base_url(), emu.secondary_url());
    assert_eq!(
        seen.last_cursor().unwrap().host.as_deref(),
        Some(emu.secondary_url().as_str())
    );
    emu.stop().await;
}

#[tokio::test]
async fn ignores_and_retractions_are_applied() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    let a = emu.inject_message("twitter", "Ada", "soon retracted");
    emu.inject_message("facebook", "Ken", "before the ignore");
    emu.ignore_message(&a);
    emu.ignore_user("facebook", "Ken");
    emu.inject_message("facebook", "Ken", "hidden while ignored");
    emu.inject_message("twitter", "Ada", "still shown");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    emu.inject_message("facebook", "Ken", "hidden in a later window");
    emu.unignore_user("facebook", "Ken");
    emu.inject_message("facebook", "Ken", "back again");
    pull(&mut p, &mut seen, |s| {
        s.events().iter().any(|e| e.kind == Kind::Unignore)
            && has_all(&emu)(s)
            && matches!(s.items.last(), Some(SourceItem::KeepAlive))
    })
    .await;
    assert_exactly_once(&emu, &seen);
    let texts: Vec<&str> = seen.messages().iter().map(|e| e.text.as_str()).collect();
    assert!(!texts.iter().any(|t| t.starts_with("hidden")), "{texts:?}");
    assert!(texts.contains(&"back again"));
    let evs = seen.events();
    let retraction = evs.iter().find(|e| e.kind == Kind::Retraction).unwrap();
    assert_eq!(
        retraction.refers_to.as_deref(),
        Some(format!("ustream:1234:{a}").as_str())
    );
    let ignore = evs.iter().find(|e| e.kind == Kind::Ignore).unwrap();
    assert_eq!(ignore.author.name.as_deref(), Some("Ken"));
    assert_eq!(ignore.author.network.as_deref(), Some("facebook"));
    let pos = |k: Kind| evs.iter().position(|e| e.kind == k).unwrap();
    assert!(pos(Kind::Ignore) < pos(Kind::Unignore));
    // The ignore list travelled in the cursor while it was in force, and is empty after.
    let in_force = seen.items.iter().any(|i| match i {
        SourceItem::Cursor(c) => !UstreamCursor::from_cursor(c).unwrap().ignored.is_empty(),
        _ => false,
    });
    assert!(in_force);
    assert!(seen.last_cursor().unwrap().ignored.is_empty());
    emu.stop().await;
}

#[tokio::test]
async fn resume_from_a_cursor_covers_the_downtime_and_keeps_ignores() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut seen = Seen::default();
    {
        let mut p = Client::new(client_config(&emu), None).unwrap();
        emu.inject_message("twitter", "Ada", "first");
        emu.ignore_user("ustream", "Grace");
        pull(&mut p, &mut seen, has_all(&emu)).await;
        pull(&mut p, &mut seen, |s| {
            s.last_cursor().is_some_and(|c| !c.ignored.is_empty())
        })
        .await;
    }
    let cursor = seen.last_cursor().unwrap();
    let resumed_from = cursor.schedule.range_end.unwrap();
    let before = emu.requests().len();
    // Down for a while; messages keep coming.
    inject_for(&emu, 8, Duration::from_millis(300)).await;
    emu.inject_message("ustream", "Grace", "still ignored after the restart");
    let mut p = Client::new(client_config(&emu), Some(cursor)).unwrap();
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let first_after = &emu.requests()[before];
    assert!(
        first_after
            .path
            .contains(&format!("/timeslice/{resumed_from}/")),
        "resumed from the cursor's range end, not /default: {}",
        first_after.path
    );
    let width: u64 = first_after
        .path
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(width > 1, "the first request after the restart was widened");
    emu.stop().await;
}

/// The error that ends `p`, past the items before it (a new client's stall timeout).
async fn first_error(p: &mut Client) -> ustream::Error {
    loop {
        match p.next_item().await {
            Ok(SourceItem::StallTimeout(_)) => {}
            Ok(other) => panic!("an item before the error: {other:?}"),
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn failures_end_the_client_with_clear_sticky_errors() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut c = client_config(&emu);
    c.channel = "999".into();
    let mut p = Client::new(c, None).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), first_error(&mut p))
        .await
        .unwrap();
    assert!(e.to_string().contains("999"), "{e}");
    let r: DisconnectReason = e.into();
    assert!(r.is_fatal(), "a 404 channel is not retried");
    assert_eq!(emu.requests().len(), 1);

    // One soft failure ends the client at once (no retries inside); asking again gives the
    // same error without another request.
    emu.push_soft_failure("channel is offline");
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), first_error(&mut p))
        .await
        .unwrap();
    assert!(e.to_string().contains("channel is offline"), "{e}");
    let sent = emu.requests().len();
    let again = p.next_item().await.unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    assert_eq!(emu.requests().len(), sent, "sticky: nothing sent again");
    let r: DisconnectReason = e.into();
    assert!(!r.is_fatal());
    emu.stop().await;
}

#[tokio::test]
async fn stalls_oversize_503_and_one_byte_writes_are_survived() {
    let emu = Emulator::start(emu_config(vec![
        vec![],
        vec![Fault::Stall {
            keepalives: false,
            duration: None,
        }],
        vec![Fault::Oversize(200_000)],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(1),
        }],
        vec![Fault::OneByteWrites],
    ]))
    .await
    .unwrap();
    let mut c = client_config(&emu);
    c.request_timeout = Duration::from_millis(1500);
    c.max_response_bytes = 100_000;
    let mut p = Client::new(c, None).unwrap();
    let mut seen = Seen::default();
    let inj = inject_for(&emu, 10, Duration::from_millis(300));
    let run = pull(&mut p, &mut seen, |s| s.items.len() > 30);
    tokio::join!(inj, run);
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let s = slices(&emu, 0);
    assert!(s.len() >= 5, "{s:?}");
    assert!(
        seen.reconnects >= 3,
        "the stall, the oversize and the 503 each ended a client"
    );
    emu.stop().await;
}

#[tokio::test]
async fn unknown_items_pass_through_and_malformed_ones_are_skipped() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    emu.inject_message("twitter", "Ada", "before");
    emu.inject_raw(serde_json::json!({"type": "poll", "uid": "p1", "question": "tea?"}));
    emu.inject_raw(serde_json::json!({"type": "msg", "text": "no uid", "createdAt": 0}));
    emu.inject_raw(serde_json::json!({"type": "host"}));
    emu.inject_message("twitter", "Ada", "after");
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s)
            && s.items
                .iter()
                .filter(|i| matches!(i, SourceItem::Malformed { .. }))
                .count()
                == 2
    })
    .await;
    assert_exactly_once(&emu, &seen);
    let poll = seen
        .events()
        .into_iter()
        .find(|e| e.kind == Kind::System)
        .expect("the unknown type passed through");
    assert_eq!(poll.detail.as_ref().unwrap()["type"], "poll");
    assert_eq!(poll.id, "ustream:1234:poll:p1");
    let errors: Vec<String> = seen
        .items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Malformed { error } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("ustream channel 1234") && e.contains("skipped")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("uid")), "{errors:?}");
    assert!(
        emu.requests().iter().all(|r| r.listener == 0),
        "a malformed host item moves nothing"
    );
    emu.stop().await;
}

fn count(seen: &Seen, kind: Kind) -> usize {
    seen.events().iter().filter(|e| e.kind == kind).count()
}

/// The `/default` after a host switch repeats the recent history, control items included:
/// an `ignUser` (or `unIgnUser`) delivered before the switch is not announced again, and a
/// message hidden while its author was ignored stays hidden after the author was unignored.
#[tokio::test]
async fn a_host_switch_repeats_no_ignore_or_unignore() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    emu.inject_message("twitter", "Ada", "before");
    emu.ignore_user("facebook", "Ken");
    emu.inject_message("twitter", "Ada", "between");
    emu.ignore_user("ustream", "Grace");
    emu.inject_message("ustream", "Grace", "hidden while ignored");
    emu.unignore_user("ustream", "Grace");
    emu.inject_message("twitter", "Ada", "after");
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && count(s, Kind::Ignore) == 2 && count(s, Kind::Unignore) == 1
    })
    .await;
    emu.switch_host();
    inject_for(&emu, 4, Duration::from_millis(200)).await;
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && s.events().iter().any(|e| e.kind == Kind::System)
    })
    .await;
    // Past the new host's /default and a few timeslices on it.
    pull(&mut p, &mut seen, |_| slices(&emu, 1).len() >= 3).await;
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.listener == 1 && r.path.ends_with("/default"))
    );
    assert_exactly_once(&emu, &seen);
    assert_eq!(count(&seen, Kind::Ignore), 2, "{:#?}", seen.events());
    assert_eq!(count(&seen, Kind::Unignore), 1, "{:#?}", seen.events());
    let ignored: Vec<String> = p.ignored().map(|a| a.display_name.clone()).collect();
    assert_eq!(ignored, ["Ken"]);
    emu.stop().await;
}

/// Waits for the start of a new server second, so items injected at once share one window.
async fn at_a_fresh_second(emu: &Emulator) {
    let now = emu.now_key();
    let deadline = Instant::now() + Duration::from_secs(5);
    while emu.now_key() == now {
        assert!(Instant::now() < deadline, "the emulator clock stands still");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Item 5: `ignUser` names a user as the document does (network provider + displayName).
/// Each earlier message of that user is retracted (after the `ignore` event, in order), the
/// `ignore` event's author id equals those messages' author ids, later messages are hidden,
/// and after `unIgnUser` they show again. The same display name on another network, and
/// other users, are untouched.
#[tokio::test]
async fn ign_user_retracts_each_earlier_message_of_that_user_and_unign_user_shows_later_ones() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    let g1 = emu.inject_message("twitter", "Gyula", "first");
    emu.inject_message("facebook", "Gyula", "another Gyula");
    emu.inject_message("twitter", "Ada", "not Gyula");
    pull(&mut p, &mut seen, has_all(&emu)).await;
    // In a later window than the first one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let g2 = emu.inject_message("twitter", "Gyula", "second");
    emu.ignore_user("twitter", "Gyula");
    emu.inject_message("twitter", "Gyula", "hidden while ignored");
    emu.inject_message("twitter", "Ada", "still shown");
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && count(s, Kind::Retraction) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    emu.inject_message("twitter", "Gyula", "hidden in a later window");
    emu.unignore_user("twitter", "Gyula");
    emu.inject_message("twitter", "Gyula", "back again");
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s)
            && count(s, Kind::Unignore) == 1
            && matches!(s.items.last(), Some(SourceItem::KeepAlive))
    })
    .await;
    assert_exactly_once(&emu, &seen);
    let texts: Vec<&str> = seen.messages().iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "first",
            "another Gyula",
            "not Gyula",
            "second",
            "still shown",
            "back again"
        ]
    );
    let evs = seen.events();
    let ignore = evs.iter().find(|e| e.kind == Kind::Ignore).unwrap();
    assert_eq!(ignore.author.id.as_deref(), Some("twitter:Gyula"));
    let gyula_ids: Vec<&str> = seen
        .messages()
        .into_iter()
        .filter(|e| e.author.id.as_deref() == ignore.author.id.as_deref())
        .map(|e| e.id.as_str())
        .collect();
    let ch = emu.channel();
    let (g1, g2) = (format!("ustream:{ch}:{g1}"), format!("ustream:{ch}:{g2}"));
    let back = seen.messages().last().unwrap().id.clone();
    assert_eq!(gyula_ids, [g1.as_str(), g2.as_str(), back.as_str()]);
    // One retraction per earlier message, right after the ignore, naming it.
    let at = evs.iter().position(|e| e.kind == Kind::Ignore).unwrap();
    let retractions: Vec<&Event> = evs
        .iter()
        .copied()
        .filter(|e| e.kind == Kind::Retraction)
        .collect();
    let refers: Vec<&str> = retractions
        .iter()
        .filter_map(|e| e.refers_to.as_deref())
        .collect();
    assert_eq!(refers, [g1.as_str(), g2.as_str()]);
    assert!(
        evs[at + 1..at + 3]
            .iter()
            .all(|e| e.kind == Kind::Retraction)
    );
    for r in &retractions {
        assert_eq!(r.detail.as_ref().unwrap()["ignore"], ignore.id.as_str());
    }
    let unignore = evs.iter().find(|e| e.kind == Kind::Unignore).unwrap();
    assert_eq!(unignore.author.id, ignore.author.id);
    assert_eq!(count(&seen, Kind::Ignore), 1);
    emu.stop().await;
}

/// Item 7: every malformed control item the emulator knows, the document's own literal
/// `"host": ""` first, in one response between two messages: each is skipped with a
/// `Malformed` item, the rest of that response is delivered, nothing moves host, and
/// polling goes on.
#[tokio::test]
async fn malformed_control_items_are_skipped_and_the_rest_of_the_response_delivered() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    emu.inject_message("twitter", "Ada", "warm-up");
    pull(&mut p, &mut seen, has_all(&emu)).await;
    at_a_fresh_second(&emu).await;
    emu.inject_message("twitter", "Ada", "before");
    assert_eq!(
        emulator::ustream::MALFORMED[0],
        r#"{"type": "host", "host": ""}"#
    );
    for bad in emulator::ustream::MALFORMED {
        emu.inject_malformed(serde_json::from_str(bad).unwrap());
    }
    emu.inject_message("twitter", "Ada", "after");
    let malformed = |s: &Seen| {
        s.items
            .iter()
            .filter(|i| matches!(i, SourceItem::Malformed { .. }))
            .count()
    };
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && malformed(s) == emulator::ustream::MALFORMED.len()
    })
    .await;
    // The response that held them also held both messages.
    let from = seen.items.len();
    let before = seen
        .items
        .iter()
        .position(|i| matches!(i, SourceItem::Event { event, .. } if event.text == "before"))
        .unwrap();
    let after = seen
        .items
        .iter()
        .position(|i| matches!(i, SourceItem::Event { event, .. } if event.text == "after"))
        .unwrap();
    assert!(
        seen.items[before..after]
            .iter()
            .all(|i| !matches!(i, SourceItem::KeepAlive)),
        "one response: {:#?}",
        &seen.items[before..=after]
    );
    assert_eq!(
        seen.items[before..after]
            .iter()
            .filter(|i| matches!(i, SourceItem::Malformed { .. }))
            .count(),
        emulator::ustream::MALFORMED.len()
    );
    // Polling goes on.
    emu.inject_message("twitter", "Ada", "later");
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert!(seen.items.len() > from);
    assert_exactly_once(&emu, &seen);
    assert!(
        emu.requests().iter().all(|r| r.listener == 0),
        "no malformed host item moved the client"
    );
    assert_eq!(count(&seen, Kind::System), 0, "{:#?}", seen.events());
    emu.stop().await;
}

/// A history that lists the `host` item which sent the poller to this host (a server that
/// keeps host items in its `/default` history) does not restart the session again.
#[tokio::test]
async fn a_host_item_naming_the_current_host_is_not_followed_again() {
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    emu.inject_message("twitter", "Ada", "before the move");
    // Served by both hosts, in timeslices and in /default histories alike.
    emu.inject_raw(serde_json::json!({"type": "host", "host": emu.secondary_url()}));
    pull(&mut p, &mut seen, |_| {
        emu.requests().iter().any(|r| r.listener == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    inject_for(&emu, 3, Duration::from_millis(300)).await;
    pull(&mut p, &mut seen, |s| {
        has_all(&emu)(s) && slices(&emu, 1).len() >= 3
    })
    .await;
    let defaults = emu
        .requests()
        .iter()
        .filter(|r| r.listener == 1 && r.path.ends_with("/default"))
        .count();
    assert_eq!(defaults, 1, "{:#?}", emu.requests());
    assert_exactly_once(&emu, &seen);
    assert_eq!(count(&seen, Kind::System), 1);
    assert_eq!(p.base_url(), emu.secondary_url());
    emu.stop().await;
}

/// Item 6: with `isSuffixCleaningNeeded`, both generated suffix forms go, whatever the
/// payload shape: ` (@channel live at http://ustre.am/XXXX)` and ` (live at http://ustre.am/XXXX)`.
#[tokio::test]
async fn both_suffix_forms_are_removed_from_delivered_texts() {
    use emulator::ustream::Suffix;
    let emu = Emulator::start(emu_config(vec![])).await.unwrap();
    let mut p = Client::new(client_config(&emu), None).unwrap();
    let mut seen = Seen::default();
    for i in 0..6 {
        let suffix = if i % 2 == 0 {
            Suffix::Channel
        } else {
            Suffix::Bare
        };
        emu.inject_message_with_suffix("twitter", "Ada", &format!("show {i}"), suffix);
    }
    emu.inject_message("ustream", "Grace", "plain (live at home)");
    pull(&mut p, &mut seen, has_all(&emu)).await;
    assert_exactly_once(&emu, &seen);
    let raw_texts: Vec<&str> = seen
        .messages()
        .iter()
        .filter_map(|e| e.raw.as_ref()?.get("text")?.as_str())
        .collect();
    assert!(
        raw_texts
            .iter()
            .any(|t| t.contains(" (live at http://ustre.am/"))
    );
    assert!(
        raw_texts
            .iter()
            .any(|t| t.contains(" (@chan1234 live at http://ustre.am/"))
    );
    emu.stop().await;
}
