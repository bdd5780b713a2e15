//! Faithful local servers for the five services Tributary speaks — Campfire, Flowdock,
//! Multistreamer, Ustream and StreamIn — started in-process on an ephemeral loopback port for
//! tests, benchmarks and `tributary demo`, or standalone with `tributary emulate`.
//!
//! Each follows its protocol document exactly and, where the document is silent, what the
//! real service did. Every emulator generates seeded, realistic traffic, injects faults from a
//! per-connection [`FaultPlan`], and records every message it committed so tests can check
//! that a client delivered each exactly once.
#![forbid(unsafe_code)]

mod body;
pub mod campfire;
pub mod fault;
pub mod flowdock;
pub mod multistreamer;
pub mod proxy;
pub mod server;
pub mod streamin;
pub mod traffic;
pub mod ustream;

pub use fault::{Fault, FaultPlan};
pub use proxy::{Proxy, ProxyFault, ProxyPlan};
pub use server::ServerHandle;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
