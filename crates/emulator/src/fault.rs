//! Scriptable fault injection: each new connection (or request) takes the next entry of a
//! plan; once the script is used up, connections behave, or draw faults at random when the
//! plan was made with [`FaultPlan::random`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// One fault to inject into one connection or request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Cut the connection after this many body bytes (usually mid-frame).
    DropAfterBytes(usize),
    /// Stop sending messages for this long (for ever when `None`); keep-alives continue when
    /// `keepalives` is true.
    Stall {
        /// Whether keep-alives are still sent during the stall.
        keepalives: bool,
        /// How long the stall lasts.
        duration: Option<Duration>,
    },
    /// Answer the request with this HTTP status instead of the stream.
    Status {
        /// The status code (500, 503, 401, 400, ...).
        code: u16,
        /// A `Retry-After` header in seconds, when set.
        retry_after: Option<u64>,
    },
    /// Send one malformed frame before the next real one.
    Malformed,
    /// Send one frame of this many bytes before the next real one.
    Oversize(usize),
    /// Write the response one byte at a time.
    OneByteWrites,
    /// Accept the TCP connection and close it at once, before any response.
    Refuse,
    /// Delay the response by this long before answering (slow server).
    Delay(Duration),
}

/// The faults for one connection, in the order they apply.
pub type ConnectionFaults = Vec<Fault>;

/// A per-connection script of faults, shared by all connections of one emulator.
#[derive(Debug, Default)]
pub struct FaultPlan {
    script: Mutex<VecDeque<ConnectionFaults>>,
    random: Option<Mutex<RandomFaults>>,
}

#[derive(Debug)]
struct RandomFaults {
    rng: StdRng,
    probability: f64,
}

impl FaultPlan {
    /// A plan with no faults.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    /// A plan that gives the n-th connection the n-th entry of `script`, then behaves.
    pub fn script(script: impl IntoIterator<Item = ConnectionFaults>) -> Self {
        FaultPlan {
            script: Mutex::new(script.into_iter().collect()),
            random: None,
        }
    }

    /// A plan that, after any script, gives each connection a random fault with the given
    /// probability (seeded, so a run can be repeated).
    pub fn random(seed: u64, probability: f64) -> Self {
        FaultPlan {
            script: Mutex::default(),
            random: Some(Mutex::new(RandomFaults {
                rng: StdRng::seed_from_u64(seed),
                probability: probability.clamp(0.0, 1.0),
            })),
        }
    }

    /// Appends one connection's faults to the script.
    pub fn push(&self, faults: ConnectionFaults) {
        lock(&self.script).push_back(faults);
    }

    /// The faults for the next connection.
    pub fn next_connection(&self) -> ConnectionFaults {
        if let Some(faults) = lock(&self.script).pop_front() {
            return faults;
        }
        let Some(random) = &self.random else {
            return Vec::new();
        };
        let mut r = lock(random);
        let probability = r.probability;
        if !r.rng.random_bool(probability) {
            return Vec::new();
        }
        let fault = match r.rng.random_range(0..6u8) {
            0 => Fault::DropAfterBytes(r.rng.random_range(1..4096)),
            1 => Fault::Stall {
                keepalives: false,
                duration: None,
            },
            2 => Fault::Status {
                code: 500,
                retry_after: None,
            },
            3 => Fault::Status {
                code: 503,
                retry_after: Some(1),
            },
            4 => Fault::Malformed,
            _ => Fault::Stall {
                keepalives: true,
                duration: Some(Duration::from_secs(2)),
            },
        };
        vec![fault]
    }
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it.
pub(crate) use chat_model::lock_ignoring_poison as lock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_then_healthy() {
        let plan = FaultPlan::script([vec![Fault::Refuse], vec![]]);
        assert_eq!(plan.next_connection(), vec![Fault::Refuse]);
        assert!(plan.next_connection().is_empty());
        assert!(plan.next_connection().is_empty());
    }

    #[test]
    fn random_is_seeded() {
        let a = FaultPlan::random(7, 0.5);
        let b = FaultPlan::random(7, 0.5);
        for _ in 0..50 {
            assert_eq!(a.next_connection(), b.next_connection());
        }
    }
}
