#![allow(unsafe_code, missing_docs)]
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use chat_model::SourceItem;
use serde_json::json;
use ustream::{Config, Response, Session};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
#[global_allocator]
static A: Counting = Counting;

fn main() {
    let responses: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let per: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let users: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let keep_raw = std::env::args().nth(4).as_deref() == Some("raw");
    let start_range = 1_302_176_480i64;
    let mut bodies = Vec::new();
    bodies.push(serde_json::to_vec(&json!({"success": true, "refreshInterval": 10, "range": [0, start_range], "payload": []})).unwrap());
    let mut uid = 1000u64;
    for r in 0..responses {
        let from = start_range + (r as i64) * 10;
        let mut payload = Vec::with_capacity(per);
        for k in 0..per {
            uid += 1;
            let u = (uid as usize * 7919) % users;
            let name = format!("User{u}");
            let user = name.to_lowercase();
            let provider = ["twitter", "facebook", "ustream"][u % 3];
            let at = from + (k as i64 * 10 / per as i64);
            let text = format!(
                "message {uid} with a bit of ordinary chat text (@chan42 live at http://ustre.am/{:x})",
                uid % 65536
            );
            payload.push(if uid % 5 < 2 {
                json!({"uid": uid.to_string(), "createdAt": at.to_string(), "isOwner": false,
                    "profileNetwork": provider, "profileUserName": user,
                    "profilePictureUrl": format!("http://static.ustream.tv/pic/{user}.png"),
                    "displayName": name, "text": text,
                    "network": [{"provider": provider, "displayName": name}]})
            } else {
                json!({"type": "msg", "uid": uid.to_string(), "createdAt": at, "isOwner": 0,
                    "profileNetwork": provider, "profileUserName": user,
                    "profilePictureUrl": format!("http://static.ustream.tv/pic/{user}.png"),
                    "network": [{"provider": provider, "displayName": name}],
                    "text": text, "flag": 0, "timeElapsed": "just now"})
            });
        }
        payload.reverse();
        bodies.push(
            serde_json::to_vec(
                &json!({"success": true, "refreshInterval": 10, "range": [from, from + 10],
            "payload": payload, "isSuffixCleaningNeeded": true}),
            )
            .unwrap(),
        );
    }
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let mut config = Config::new("http://h", "42");
    config.max_response_bytes = 64 << 20;
    config.keep_raw = keep_raw;
    let t = Instant::now();
    let mut s = Session::new(config, None, t, 1_700_000_000_000).unwrap();
    let mut now = t;
    let mut events = 0u64;
    let mut total = 0u64;
    let mut allocs = 0u64;
    for body in bodies {
        let resp = Response::ok(body);
        let due = s.poll_timeout().unwrap();
        now = now.max(due);
        s.handle_timeout(now);
        s.poll_request().unwrap();
        let a0 = ALLOCS.load(Relaxed);
        let t0 = cpu_ns();
        s.handle_response(resp, now, 1_700_000_000_000);
        while let Some(item) = s.poll_item() {
            if let SourceItem::Event { event, .. } = &item {
                events += 1;
                std::hint::black_box(event);
            }
            drop(item);
        }
        total += cpu_ns() - t0;
        allocs += ALLOCS.load(Relaxed) - a0;
        assert!(s.error().is_none(), "{:?}", s.error());
    }
    assert_eq!(events as usize, responses * per);
    println!(
        "ustream keep_raw={keep_raw} per={per} users={users}: {:.0} ns/event, {:.2} allocs/event, {:.0} MB/s",
        total as f64 / events as f64,
        allocs as f64 / events as f64,
        bytes as f64 / (total as f64 / 1e9) / 1e6,
    );
}
