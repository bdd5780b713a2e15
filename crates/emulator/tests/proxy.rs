//! The fault proxy between plain tokio TCP peers (an echo server, a byte source, a tiny HTTP
//! server): each fault does to the client's side exactly what it says, the server still gets
//! the request, and the records say what happened.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emulator::proxy::{ConnectionRecord, Ending, FaultKind, Proxy, ProxyFault, ProxyPlan, Trickle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const LOOPBACK: &str = "127.0.0.1:0";
/// Generous: the machine is loaded.
const LONG: Duration = Duration::from_secs(20);

/// An echo server: every byte back, until the client closes.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that, once a client sends anything, answers with `body` and closes; records
/// every request it read.
async fn answer_server(body: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                seen.lock().unwrap().push(buf[..n].to_vec());
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
                // Wait for the client to go.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, seen)
}

/// A tiny HTTP/1.1 server: reads a request head, answers `200` with `hello <path>`.
async fn http_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = l.local_addr().unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let paths2 = paths.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let paths = paths2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                paths.lock().unwrap().push(path.clone());
                let body = format!("hello {path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, paths)
}

async fn proxy(upstream: SocketAddr, plan: ProxyPlan) -> Proxy {
    Proxy::start(LOOPBACK.parse().unwrap(), upstream, Arc::new(plan))
        .await
        .unwrap()
}

/// Reads until EOF or error; the bytes and how it ended.
async fn read_all(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Waits (bounded) until the proxy's record `i` has ended; returns it.
async fn ended(p: &Proxy, i: usize) -> ConnectionRecord {
    let start = Instant::now();
    loop {
        if let Some(r) = p.records().get(i).filter(|r| r.ending != Ending::Open) {
            return r.clone();
        }
        assert!(
            start.elapsed() < LONG,
            "connection {i} never ended: {:?}",
            p.records()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_bytes_through_both_ways() {
    let p = proxy(echo_server().await, ProxyPlan::none()).await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    let data = pattern(300_000);
    let (mut r, mut w) = c.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = timeout(LONG, async { tokio::join!(send, recv) })
        .await
        .unwrap();
    assert_eq!(got, data);
    drop(c);
    let rec = ended(&p, 0).await;
    assert_eq!(rec.fault, ProxyFault::Pass);
    assert_eq!(rec.ending, Ending::Closed);
    assert_eq!(rec.to_server, data.len() as u64);
    assert_eq!(rec.from_server, data.len() as u64);
    assert_eq!(rec.to_client, data.len() as u64);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallow_forwards_the_request_and_holds_the_client_silently() {
    let (addr, seen) = answer_server(b"the answer".to_vec()).await;
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::Swallow { close_after: None }]),
    )
    .await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"question").await.unwrap();
    let mut buf = [0u8; 64];
    // Nothing comes back, and the connection does not close (even though the server did).
    let r = timeout(Duration::from_millis(1500), c.read(&mut buf)).await;
    assert!(r.is_err(), "the client heard something: {r:?}");
    assert_eq!(seen.lock().unwrap().as_slice(), [b"question".to_vec()]);
    let rec = p.records()[0].clone();
    assert_eq!(rec.ending, Ending::Open);
    assert_eq!(rec.to_server, 8);
    assert_eq!(rec.from_server, 10);
    assert_eq!(rec.to_client, 0);

    // The next connection passes.
    let mut c2 = TcpStream::connect(p.addr()).await.unwrap();
    c2.write_all(b"again").await.unwrap();
    let (got, end) = timeout(LONG, read_all(&mut c2)).await.unwrap();
    assert!(end.is_ok());
    assert_eq!(got, b"the answer");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallow_can_close_after_a_delay() {
    let (addr, seen) = answer_server(b"the answer".to_vec()).await;
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::Swallow {
            close_after: Some(Duration::from_millis(700)),
        }]),
    )
    .await;
    let start = Instant::now();
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"question").await.unwrap();
    let (got, end) = timeout(LONG, read_all(&mut c)).await.unwrap();
    assert!(end.is_ok(), "a clean close: {end:?}");
    assert!(got.is_empty(), "{got:?}");
    assert!(start.elapsed() >= Duration::from_millis(700));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(ended(&p, 0).await.ending, Ending::Cut);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_byte_forwards_exactly_that_many_then_closes() {
    let body = pattern(50_000);
    let (addr, _) = answer_server(body.clone()).await;
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::CutAtByte(12_345), ProxyFault::CutAtByte(0)]),
    )
    .await;
    for (i, n) in [12_345usize, 0].into_iter().enumerate() {
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        c.write_all(b"go").await.unwrap();
        let (got, end) = timeout(LONG, read_all(&mut c)).await.unwrap();
        assert!(end.is_ok(), "a FIN, not a reset: {end:?}");
        assert_eq!(got, body[..n]);
        let rec = ended(&p, i).await;
        assert_eq!(rec.ending, Ending::Cut);
        assert_eq!(rec.to_client, n as u64);
        assert_eq!(rec.to_server, 2);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_a_byte_past_the_end_is_a_clean_pass() {
    let (addr, _) = answer_server(b"short".to_vec()).await;
    let p = proxy(addr, ProxyPlan::script([ProxyFault::CutAtByte(1000)])).await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"go").await.unwrap();
    let (got, end) = timeout(LONG, read_all(&mut c)).await.unwrap();
    assert!(end.is_ok());
    assert_eq!(got, b"short");
    drop(c);
    assert_eq!(ended(&p, 0).await.ending, Ending::Closed);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_at_byte_resets_the_client() {
    let body = pattern(20_000);
    let (addr, seen) = answer_server(body.clone()).await;
    let p = proxy(addr, ProxyPlan::script([ProxyFault::ResetAtByte(5000)])).await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"go").await.unwrap();
    let (got, end) = timeout(LONG, read_all(&mut c)).await.unwrap();
    let err = end.expect_err("a reset, not a clean close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    // What arrived before the reset is a prefix of the first 5000 bytes.
    assert!(got.len() <= 5000 && got == body[..got.len()]);
    let rec = ended(&p, 0).await;
    assert_eq!(rec.ending, Ending::Reset);
    assert_eq!(rec.to_client, 5000);
    assert_eq!(seen.lock().unwrap().len(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_after_a_time_closes_a_flowing_connection() {
    let p = proxy(
        echo_server().await,
        ProxyPlan::script([ProxyFault::CutAfter(Duration::from_millis(600))]),
    )
    .await;
    let start = Instant::now();
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    let (mut r, mut w) = c.split();
    let send = async {
        // Keep the echo flowing until the cut.
        while w.write_all(b"tick").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if start.elapsed() > LONG {
                break;
            }
        }
    };
    let recv = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let got = tokio::select! {
        got = recv => got,
        () = send => panic!("the writes never failed"),
    };
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < LONG);
    assert!(!got.is_empty(), "bytes flowed before the cut");
    assert!(got.chunks(4).all(|c| c == &b"tick"[..c.len()]));
    assert_eq!(ended(&p, 0).await.ending, Ending::Cut);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_forwards_a_prefix_then_holds_the_rest() {
    let body = pattern(3000);
    let (addr, _) = answer_server(body.clone()).await;
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::Stall {
            after_bytes: 100,
            trickle: None,
        }]),
    )
    .await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"go").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 100 {
        let n = timeout(LONG, c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, body[..100]);
    // Then silence, with the connection open.
    let r = timeout(Duration::from_millis(1500), c.read(&mut buf)).await;
    assert!(r.is_err(), "more came after the stall: {r:?}");
    let rec = p.records()[0].clone();
    assert_eq!(rec.ending, Ending::Open);
    assert_eq!(rec.from_server, 3000);
    assert_eq!(rec.to_client, 100);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_forwards_everything_slowly_then_closes() {
    let body = pattern(40);
    let (addr, _) = answer_server(body.clone()).await;
    let every = Duration::from_millis(25);
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::Stall {
            after_bytes: 10,
            trickle: Some(Trickle { bytes: 1, every }),
        }]),
    )
    .await;
    let start = Instant::now();
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"go").await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = timeout(LONG, c.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, body, "every byte, in order");
    // 30 trickled bytes, one per step (the first step is at once).
    assert!(start.elapsed() >= every * 29, "{:?}", start.elapsed());
    assert!(reads >= 20, "arrived in {reads} reads");
    drop(c);
    assert_eq!(ended(&p, 0).await.ending, Ending::Closed);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_the_first_byte() {
    let p = proxy(
        echo_server().await,
        ProxyPlan::script([ProxyFault::Delay(Duration::from_millis(800))]),
    )
    .await;
    // The delay starts when the proxy accepts, which may be before `connect` returns here:
    // measure from before the connection exists.
    let start = Instant::now();
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(LONG, c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert_eq!(&buf, b"ping");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_first_response_swallowed_then_served() {
    let (addr, paths) = http_server().await;
    let p = proxy(
        addr,
        ProxyPlan::script([ProxyFault::Swallow {
            close_after: Some(Duration::from_millis(300)),
        }]),
    )
    .await;
    let get = |path: &'static str| {
        let addr = p.addr();
        async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let (got, _) = timeout(LONG, read_all(&mut c)).await.unwrap();
            String::from_utf8(got).unwrap()
        }
    };
    assert_eq!(get("/first").await, "");
    let second = get("/second").await;
    assert!(second.starts_with("HTTP/1.1 200 OK"), "{second}");
    assert!(second.ends_with("hello /second"), "{second}");
    assert_eq!(paths.lock().unwrap().as_slice(), ["/first", "/second"]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_and_resets_do_what_the_records_say() {
    let body = pattern(2000);
    let (addr, _) = answer_server(body.clone()).await;
    let plan = ProxyPlan::random(42, 0.8)
        .with_kinds(&[FaultKind::CutAtByte, FaultKind::ResetAtByte])
        .with_max_byte(2500);
    let p = proxy(addr, plan).await;
    for i in 0..30 {
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        c.write_all(b"go").await.unwrap();
        let (got, end) = timeout(LONG, read_all(&mut c)).await.unwrap();
        drop(c);
        let rec = ended(&p, i).await;
        assert_eq!(got, body[..got.len()], "a prefix of the answer");
        match rec.fault {
            ProxyFault::Pass => {
                assert_eq!(got, body);
                assert_eq!(rec.ending, Ending::Closed);
            }
            ProxyFault::CutAtByte(n) if n < 2000 => {
                assert!(end.is_ok());
                assert_eq!(got.len() as u64, n);
                assert_eq!(rec.ending, Ending::Cut);
            }
            ProxyFault::ResetAtByte(n) if n < 2000 => {
                assert_eq!(
                    end.expect_err("reset").kind(),
                    std::io::ErrorKind::ConnectionReset
                );
                assert!(got.len() as u64 <= n);
                assert_eq!(rec.ending, Ending::Reset);
            }
            // Past the end of the answer: a clean pass.
            ProxyFault::CutAtByte(_) | ProxyFault::ResetAtByte(_) => {
                assert!(end.is_ok());
                assert_eq!(got, body);
                assert_eq!(rec.ending, Ending::Closed);
            }
            other => panic!("not one of the kinds: {other:?}"),
        }
    }
    let faulted = p
        .records()
        .iter()
        .filter(|r| r.fault != ProxyFault::Pass)
        .count();
    assert!(faulted >= 15, "{faulted} of 30 faulted");
    // The same seed gives the same faults.
    let again = ProxyPlan::random(42, 0.8)
        .with_kinds(&[FaultKind::CutAtByte, FaultKind::ResetAtByte])
        .with_max_byte(2500);
    for r in p.records() {
        assert_eq!(again.next_connection(), r.fault);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_held_connections_and_an_unreachable_server_is_recorded() {
    let p = proxy(
        echo_server().await,
        ProxyPlan::script([ProxyFault::Swallow { close_after: None }]),
    )
    .await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"x").await.unwrap();
    assert!(
        timeout(LONG, async {
            while p.records().first().is_none_or(|r| r.to_server == 0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    );
    let stop = p.stop();
    let (got, _) = timeout(LONG, async {
        let (r, ()) = tokio::join!(read_all(&mut c), stop);
        r
    })
    .await
    .unwrap();
    assert!(got.is_empty());

    // A server that is gone: the client's connection is closed, and recorded.
    let gone = {
        let l = TcpListener::bind(LOOPBACK).await.unwrap();
        l.local_addr().unwrap()
    };
    let p = proxy(gone, ProxyPlan::none()).await;
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    let (got, _) = timeout(LONG, read_all(&mut c)).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(ended(&p, 0).await.ending, Ending::UpstreamFailed);
    p.stop().await;
}
