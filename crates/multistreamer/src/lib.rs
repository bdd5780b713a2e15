#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod map;
mod options;
mod send;
mod session;
pub mod tls;
pub mod wire;

pub use client::{Connection, Handle, HandleClosed, connect, send_once};
pub use error::Error;
pub use options::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE};
pub use send::{
    DEFAULT_ECHO_WAIT, IRC_ACCOUNT, SendConfirmation, SendError, SendPlan, SendRequest,
    is_msg_command, plan_send,
};
pub use session::{
    DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT, Frame, SendId, Session, SessionConfig, Transmit,
    schedule_for_stall_timeout,
};
pub use wire::{AccountId, ClientMessage, ServerMessage, Status};
