//! StreamIn source API client: ping, refresh_api_key, new_message, limits and wiki markup.
//!
//! - [`Client`]: typed async calls; every documented status code is a typed [`Error`]
//!   ([`ApiStatus`]) with the server's message kept; limits are checked before sending.
//! - [`markup`]: markdown ↔ StreamIn wiki markup, both ways.
//! - [`KeyStore`]: where a refreshed key goes ([`MemoryKeyStore`], [`FileKeyStore`] rewritten
//!   atomically) and the once-a-day refresh memory.
//!
//! The API key is a [`chat_model::Secret`]: it never shows in `Debug`, errors or logs.
#![forbid(unsafe_code)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod client;
mod error;
mod keystore;
pub mod markup;

pub use client::{
    Client, Content, DEFAULT_BASE_URL, MAX_CONTENT_CHARS, MAX_EXTERNAL_ID_CHARS, MessageInfo,
    NewMessage, PreparedMessage, fit_markdown, truncate_content, validate_api_key,
};
pub use error::{ApiStatus, Error, Invalid, KeyStoreError};
pub use keystore::{FileKeyStore, KeyStore, MemoryKeyStore};
pub use markup::{markdown_to_wiki, wiki_to_markdown};
