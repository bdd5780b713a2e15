//! campfire streaming client: typed wire messages, mapping to chat-model, async client.
#![forbid(unsafe_code)]
