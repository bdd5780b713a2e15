//! A protocol-agnostic TCP fault proxy: it sits between any client and any server on
//! loopback and, per connection, passes the bytes through or injects one transport fault —
//! swallow the response, cut or reset the connection at a byte of the server's answer or after
//! a time, stall (silently or trickling bytes), or delay the first byte.
//!
//! Each accepted connection takes the next entry of a [`ProxyPlan`] (a script, then random
//! faults drawn from a seed, or nothing), and the proxy records what it did to each
//! ([`Proxy::records`]) so tests can check a fault was met. It knows nothing of HTTP or
//! WebSocket: "the response" is every byte the server sends on that connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fault::lock;
use crate::server::{ServerHandle, stopped};

/// Bytes per read in either direction.
const CHUNK: usize = 8 * 1024;
/// How much of the server's answer a trickling stall keeps before it stops reading.
const TRICKLE_BUFFER: usize = 1 << 20;

/// What the proxy does to one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFault {
    /// Forward both directions untouched.
    Pass,
    /// Forward the client's bytes upstream but never a byte of the answer back; hold the
    /// client's connection open silently, or close it this long after the connection was
    /// accepted.
    Swallow {
        /// When set, close the client's connection (FIN) this long after accepting it.
        close_after: Option<Duration>,
    },
    /// Forward exactly this many bytes of the server's answer, then close both sides (FIN).
    CutAtByte(u64),
    /// Close both sides (FIN) this long after the connection was accepted.
    CutAfter(Duration),
    /// Forward this many bytes of the answer, then reset the client's connection (RST, by
    /// `SO_LINGER` 0) and close the server's.
    ResetAtByte(u64),
    /// Forward `after_bytes` of the answer, then stop: hold the rest (the connection stays
    /// open), or trickle it.
    Stall {
        /// Bytes of the answer forwarded before the stall.
        after_bytes: u64,
        /// When set, the rest is forwarded slowly instead of held.
        trickle: Option<Trickle>,
    },
    /// Wait this long before connecting upstream, so the first byte of the exchange (in either
    /// direction) is late; then forward untouched.
    Delay(Duration),
}

/// A slow drip: `bytes` of the held answer every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trickle {
    /// Bytes per step (at least 1).
    pub bytes: usize,
    /// Time between steps.
    pub every: Duration,
}

/// The kinds of fault a random plan draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`ProxyFault::Swallow`], held open or closed after 1-5 s.
    Swallow,
    /// [`ProxyFault::CutAtByte`] at a random byte below the plan's `max_byte`.
    CutAtByte,
    /// [`ProxyFault::CutAfter`] 50 ms - 3 s.
    CutAfter,
    /// [`ProxyFault::ResetAtByte`] at a random byte below the plan's `max_byte`.
    ResetAtByte,
    /// [`ProxyFault::Stall`] without trickle, at a random byte.
    Stall,
    /// [`ProxyFault::Stall`] trickling 1 byte every 20-200 ms, from a random byte.
    Trickle,
    /// [`ProxyFault::Delay`] of 100 ms - 2 s.
    Delay,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Swallow,
        FaultKind::CutAtByte,
        FaultKind::CutAfter,
        FaultKind::ResetAtByte,
        FaultKind::Stall,
        FaultKind::Trickle,
        FaultKind::Delay,
    ];
}

/// The per-connection script of a proxy: each accepted connection takes the next entry, then
/// (when made with [`ProxyPlan::random`]) a fault drawn at random, else [`ProxyFault::Pass`].
#[derive(Debug, Default)]
pub struct ProxyPlan {
    script: Mutex<VecDeque<ProxyFault>>,
    random: Option<Mutex<RandomFaults>>,
}

#[derive(Debug)]
struct RandomFaults {
    rng: StdRng,
    probability: f64,
    kinds: Vec<FaultKind>,
    max_byte: u64,
}

impl ProxyPlan {
    /// A plan that passes every connection through.
    pub fn none() -> Self {
        ProxyPlan::default()
    }

    /// The n-th connection gets the n-th entry of `script`; later ones pass.
    pub fn script(script: impl IntoIterator<Item = ProxyFault>) -> Self {
        ProxyPlan {
            script: Mutex::new(script.into_iter().collect()),
            random: None,
        }
    }

    /// After any script, each connection gets a random fault of any kind with probability
    /// `probability` (seeded, so a run can be repeated).
    pub fn random(seed: u64, probability: f64) -> Self {
        ProxyPlan {
            script: Mutex::default(),
            random: Some(Mutex::new(RandomFaults {
                rng: StdRng::seed_from_u64(seed),
                probability: probability.clamp(0.0, 1.0),
                kinds: FaultKind::ALL.to_vec(),
                max_byte: 4096,
            })),
        }
    }

    /// Restricts the random faults to `kinds` (no effect on a plan that is not random; an
    /// empty list means every kind).
    pub fn with_kinds(self, kinds: &[FaultKind]) -> Self {
        if let Some(r) = &self.random {
            lock(r).kinds = if kinds.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                kinds.to_vec()
            };
        }
        self
    }

    /// Random byte positions (cut, reset, stall) are drawn below `max_byte` (default 4096).
    pub fn with_max_byte(self, max_byte: u64) -> Self {
        if let Some(r) = &self.random {
            lock(r).max_byte = max_byte.max(1);
        }
        self
    }

    /// Appends one connection's fault to the script.
    pub fn push(&self, fault: ProxyFault) {
        lock(&self.script).push_back(fault);
    }

    /// The fault for the next connection.
    pub fn next_connection(&self) -> ProxyFault {
        if let Some(f) = lock(&self.script).pop_front() {
            return f;
        }
        let Some(random) = &self.random else {
            return ProxyFault::Pass;
        };
        let mut r = lock(random);
        let RandomFaults {
            rng,
            probability,
            kinds,
            max_byte,
        } = &mut *r;
        if !rng.random_bool(*probability) {
            return ProxyFault::Pass;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let byte = rng.random_range(0..*max_byte);
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        match kind {
            FaultKind::Swallow => ProxyFault::Swallow {
                close_after: if rng.random_bool(0.5) {
                    Some(ms(rng, 1000, 5000))
                } else {
                    None
                },
            },
            FaultKind::CutAtByte => ProxyFault::CutAtByte(byte),
            FaultKind::CutAfter => ProxyFault::CutAfter(ms(rng, 50, 3000)),
            FaultKind::ResetAtByte => ProxyFault::ResetAtByte(byte),
            FaultKind::Stall => ProxyFault::Stall {
                after_bytes: byte,
                trickle: None,
            },
            FaultKind::Trickle => ProxyFault::Stall {
                after_bytes: byte,
                trickle: Some(Trickle {
                    bytes: 1,
                    every: ms(rng, 20, 200),
                }),
            },
            FaultKind::Delay => ProxyFault::Delay(ms(rng, 100, 2000)),
        }
    }
}

/// How a proxied connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Still open.
    Open,
    /// Both sides closed on their own (the fault, if any, ran its course).
    Closed,
    /// The proxy closed both sides (a cut, or a swallow's `close_after`).
    Cut,
    /// The proxy reset the client's connection.
    Reset,
    /// The upstream server could not be reached; the client's connection was closed.
    UpstreamFailed,
    /// The proxy was stopped while the connection was open.
    Stopped,
}

/// What the proxy did to one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// 0 for the first connection accepted, and so on.
    pub index: usize,
    /// The fault it was given.
    pub fault: ProxyFault,
    /// Bytes forwarded from the client to the server.
    pub to_server: u64,
    /// Bytes the server sent.
    pub from_server: u64,
    /// Bytes of those forwarded to the client.
    pub to_client: u64,
    /// How it ended (so far).
    pub ending: Ending,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    plan: Arc<ProxyPlan>,
    records: Mutex<Vec<ConnectionRecord>>,
}

impl Shared {
    fn update(&self, index: usize, f: impl FnOnce(&mut ConnectionRecord)) {
        if let Some(r) = lock(&self.records).get_mut(index) {
            f(r);
        }
    }
}

/// A running fault proxy.
#[derive(Debug)]
pub struct Proxy {
    handle: ServerHandle,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on `listen` (use `127.0.0.1:0` for an ephemeral port) and forwards each
    /// connection to `upstream`, applying `plan`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        plan: Arc<ProxyPlan>,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            plan,
            records: Mutex::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
        Ok(Proxy {
            handle: ServerHandle::new(addr, shutdown, task),
            shared,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The proxy's URL with another scheme (`ws://127.0.0.1:PORT`).
    pub fn url_with_scheme(&self, scheme: &str) -> String {
        self.handle.url_with_scheme(scheme)
    }

    /// The server it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The plan connections take their faults from (push more entries while it runs).
    pub fn plan(&self) -> &Arc<ProxyPlan> {
        &self.shared.plan
    }

    /// What it did to each connection so far, in the order they were accepted.
    pub fn records(&self) -> Vec<ConnectionRecord> {
        lock(&self.shared.records).clone()
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        lock(&self.shared.records).len()
    }

    /// Stops accepting and closes every open connection.
    pub async fn stop(self) {
        self.handle.stop().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut rx: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut rx) => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let fault = shared.plan.next_connection();
                    let index = {
                        let mut records = lock(&shared.records);
                        let index = records.len();
                        records.push(ConnectionRecord {
                            index,
                            fault: fault.clone(),
                            to_server: 0,
                            from_server: 0,
                            to_client: 0,
                            ending: Ending::Open,
                        });
                        index
                    };
                    tracing::debug!(index, ?fault, "proxy: connection accepted");
                    conns.spawn(serve(client, shared.clone(), index, fault));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    for r in lock(&shared.records).iter_mut() {
        if r.ending == Ending::Open {
            r.ending = Ending::Stopped;
        }
    }
}

/// How the server-to-client side finished.
enum Down {
    /// The server closed and everything owed was forwarded: half-close the client.
    Eof,
    /// Close both sides now.
    Cut,
    /// Reset the client.
    Reset,
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>, index: usize, fault: ProxyFault) {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    if let ProxyFault::Delay(d) = fault {
        tokio::time::sleep(d).await;
    }
    let mut server = match TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(index, error = %e, "proxy: upstream unreachable");
            shared.update(index, |r| r.ending = Ending::UpstreamFailed);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let ending = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = up(client_read, server_write, &shared, index);
        let down = down(server_read, client_write, &fault, accepted, &shared, index);
        tokio::pin!(up, down);
        let mut up_done = false;
        let mut down_done = false;
        loop {
            tokio::select! {
                () = &mut up, if !up_done => up_done = true,
                d = &mut down, if !down_done => match d {
                    Down::Eof => down_done = true,
                    Down::Cut => break Ending::Cut,
                    Down::Reset => break Ending::Reset,
                },
            }
            if up_done && down_done {
                break Ending::Closed;
            }
        }
    };
    if ending == Ending::Reset {
        if let Err(e) = client.set_zero_linger() {
            tracing::warn!(error = %e, "proxy: cannot set SO_LINGER 0; closing instead");
        }
    }
    drop(client);
    drop(server);
    tracing::debug!(index, ?ending, "proxy: connection done");
    shared.update(index, |r| r.ending = ending);
}

/// Client to server, untouched; after the server stops taking bytes, the client's are
/// read and dropped until it closes.
async fn up(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, shared: &Shared, index: usize) {
    let mut buf = vec![0u8; CHUNK];
    let mut server_open = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if server_open {
            if to.write_all(&buf[..n]).await.is_err() {
                server_open = false;
            } else {
                shared.update(index, |r| r.to_server += n as u64);
            }
        }
    }
    if server_open {
        let _ = to.shutdown().await;
    }
}

/// Server to client under `fault`.
async fn down(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    fault: &ProxyFault,
    accepted: Instant,
    shared: &Shared,
    index: usize,
) -> Down {
    let deadline = match fault {
        ProxyFault::CutAfter(d) => Some(accepted + *d),
        ProxyFault::Swallow {
            close_after: Some(d),
        } => Some(accepted + *d),
        _ => None,
    };
    // Bytes of the answer that may go to the client before the fault acts (None: all).
    let (limit, at_limit) = match fault {
        ProxyFault::Swallow { .. } => (Some(0), None),
        ProxyFault::CutAtByte(n) => (Some(*n), Some(Down::Cut)),
        ProxyFault::ResetAtByte(n) => (Some(*n), Some(Down::Reset)),
        ProxyFault::Stall { after_bytes, .. } => (Some(*after_bytes), None),
        _ => (None, None),
    };
    let trickle = match fault {
        ProxyFault::Stall {
            trickle: Some(t), ..
        } => Some(*t),
        _ => None,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut forwarded: u64 = 0;
    let mut held: VecDeque<u8> = VecDeque::new();
    let mut server_open = true;
    let mut tick = trickle.map(|t| tokio::time::interval(t.every.max(Duration::from_millis(1))));
    loop {
        let read_more = server_open && (trickle.is_none() || held.len() < TRICKLE_BUFFER);
        tokio::select! {
            () = sleep_opt(deadline) => return Down::Cut,
            _ = async { tick.as_mut().expect("ticking").tick().await },
                if tick.is_some() && !held.is_empty() => {
                let t = trickle.expect("trickling");
                let step: Vec<u8> = held.drain(..t.bytes.max(1).min(held.len())).collect();
                if to.write_all(&step).await.is_err() {
                    return Down::Cut;
                }
                shared.update(index, |r| r.to_client += step.len() as u64);
                if !server_open && held.is_empty() {
                    let _ = to.shutdown().await;
                    return Down::Eof;
                }
            }
            read = from.read(&mut buf), if read_more => {
                let n = match read {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                if n == 0 {
                    server_open = false;
                    let stalled = at_limit.is_none() && limit.is_some_and(|l| forwarded >= l);
                    if stalled && trickle.is_none() {
                        // A stall or swallow hides the server's close: the client hears
                        // nothing more (until a deadline).
                        sleep_opt(deadline).await;
                        return Down::Cut;
                    }
                    if held.is_empty() {
                        let _ = to.shutdown().await;
                        return Down::Eof;
                    }
                    continue;
                }
                shared.update(index, |r| r.from_server += n as u64);
                let pass = match limit {
                    None => n,
                    Some(l) => (l.saturating_sub(forwarded) as usize).min(n),
                };
                if pass > 0 {
                    if to.write_all(&buf[..pass]).await.is_err() {
                        return Down::Cut;
                    }
                    forwarded += pass as u64;
                    shared.update(index, |r| r.to_client += pass as u64);
                }
                if limit.is_some_and(|l| forwarded >= l) {
                    if let Some(end) = at_limit {
                        let _ = to.flush().await;
                        return end;
                    }
                    if trickle.is_some() {
                        held.extend(&buf[pass..n]);
                    }
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_then_pass() {
        let plan = ProxyPlan::script([ProxyFault::CutAtByte(3)]);
        assert_eq!(plan.next_connection(), ProxyFault::CutAtByte(3));
        assert_eq!(plan.next_connection(), ProxyFault::Pass);
    }

    #[test]
    fn random_is_seeded_and_keeps_to_its_kinds() {
        let kinds = [FaultKind::CutAtByte, FaultKind::ResetAtByte];
        let a = ProxyPlan::random(9, 0.7)
            .with_kinds(&kinds)
            .with_max_byte(100);
        let b = ProxyPlan::random(9, 0.7)
            .with_kinds(&kinds)
            .with_max_byte(100);
        let mut faulted = 0;
        for _ in 0..200 {
            let f = a.next_connection();
            assert_eq!(f, b.next_connection());
            match f {
                ProxyFault::Pass => {}
                ProxyFault::CutAtByte(n) | ProxyFault::ResetAtByte(n) => {
                    assert!(n < 100);
                    faulted += 1;
                }
                other => panic!("not one of the kinds: {other:?}"),
            }
        }
        assert!((100..180).contains(&faulted), "{faulted}");
    }

    #[test]
    fn every_kind_is_drawn() {
        let plan = ProxyPlan::random(1, 1.0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            seen.insert(std::mem::discriminant(&plan.next_connection()));
        }
        // Swallow, CutAtByte, CutAfter, ResetAtByte, Stall (both), Delay.
        assert_eq!(seen.len(), 6);
    }
}
