//! Ustream Social Stream poller: typed responses, drift-free sans-IO schedule, mapping to chat-model.
#![forbid(unsafe_code)]
