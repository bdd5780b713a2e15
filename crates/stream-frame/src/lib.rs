//! Sans-IO incremental decoders for Server-Sent Events, delimited JSON and concatenated JSON.
#![forbid(unsafe_code)]
