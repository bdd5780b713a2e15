//! Multistreamer WebSocket client: typed messages both ways, mapping to chat-model, async client.
#![forbid(unsafe_code)]
