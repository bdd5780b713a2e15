//! StreamIn source API client: ping, refresh_api_key, new_message, limits and wiki markup.
#![forbid(unsafe_code)]
