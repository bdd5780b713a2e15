//! Seeded, realistic chat traffic: people, lines and timing shared by every emulator.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// People who chat in the emulated rooms.
pub const PEOPLE: &[&str] = &[
    "Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan", "Radia",
];

const OPENERS: &[&str] = &[
    "deploy of",
    "anyone seen",
    "heads up:",
    "looks like",
    "I just merged",
    "reverting",
    "can someone review",
    "outage on",
    "rolling back",
    "ship it:",
];

const SUBJECTS: &[&str] = &[
    "the billing service",
    "api-gateway v2.3",
    "the flaky integration test",
    "the new dashboard",
    "staging",
    "the search index",
    "PR #482",
    "the ü/日本語 encoding fix",
    "the cache layer",
    "tonight's release",
];

const CLOSERS: &[&str] = &[
    "",
    " 🎉",
    " — all green",
    "?",
    ", thanks!",
    " (again)",
    " :shipit:",
    ", see the logs",
    "\nwith a second line",
    " ¯\\_(ツ)_/¯",
];

/// A deterministic source of chat lines and authors.
#[derive(Debug)]
pub struct Traffic {
    rng: StdRng,
}

impl Traffic {
    /// A generator seeded for repeatable runs.
    pub fn new(seed: u64) -> Self {
        Traffic {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next chat line.
    pub fn line(&mut self) -> String {
        let o = OPENERS[self.rng.random_range(0..OPENERS.len())];
        let s = SUBJECTS[self.rng.random_range(0..SUBJECTS.len())];
        let c = CLOSERS[self.rng.random_range(0..CLOSERS.len())];
        format!("{o} {s}{c}")
    }

    /// The index of the next speaker in [`PEOPLE`].
    pub fn person(&mut self) -> usize {
        self.rng.random_range(0..PEOPLE.len())
    }

    /// A number in `0..n`, for choosing among message types.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// True with the given probability.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_traffic_repeats() {
        let mut a = Traffic::new(1);
        let mut b = Traffic::new(1);
        for _ in 0..20 {
            assert_eq!(a.line(), b.line());
            assert_eq!(a.person(), b.person());
        }
    }
}
