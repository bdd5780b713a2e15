#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

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
