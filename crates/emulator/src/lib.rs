#![doc = include_str!("../README.md")]
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
