//! Streamed response bodies fed through a channel, with the byte-level faults
//! ([`Fault::DropAfterBytes`], [`Fault::OneByteWrites`]) applied as they are written.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::fault::Fault;

/// What feeds a streamed body: bytes, or the error that cuts the connection.
pub(crate) type BodySender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A streamed response body and the sender that feeds it (the body ends when every sender
/// is dropped).
pub(crate) fn channel_body() -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

/// Writes bytes to one streamed body, applying the connection's byte-level faults.
pub(crate) struct Writer {
    tx: BodySender,
    one_byte: bool,
    drop_after: Option<usize>,
    written: usize,
}

impl Writer {
    /// A writer on `tx` that applies the first `DropAfterBytes` and any `OneByteWrites` of
    /// `faults`.
    pub(crate) fn new(tx: BodySender, faults: &[Fault]) -> Self {
        Writer {
            tx,
            one_byte: faults.contains(&Fault::OneByteWrites),
            drop_after: faults.iter().find_map(|f| match f {
                Fault::DropAfterBytes(n) => Some(*n),
                _ => None,
            }),
            written: 0,
        }
    }

    /// Sends `bytes`; `Err` when the stream is over (client gone or a drop fault fired).
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let mut bytes = bytes;
        let mut cut = false;
        if let Some(limit) = self.drop_after {
            let room = limit.saturating_sub(self.written);
            if bytes.len() >= room {
                bytes = &bytes[..room];
                cut = true;
            }
        }
        if self.one_byte {
            for b in bytes {
                self.send(Bytes::copy_from_slice(std::slice::from_ref(b)))
                    .await?;
            }
        } else if !bytes.is_empty() {
            self.send(Bytes::copy_from_slice(bytes)).await?;
        }
        self.written += bytes.len();
        if cut {
            // Let the server write out what was sent before cutting, so the client really
            // receives the first N bytes (bounded wait).
            for _ in 0..200 {
                if self.tx.capacity() == self.tx.max_capacity() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.fail("injected fault: connection dropped").await;
            return Err(());
        }
        Ok(())
    }

    /// Ends the body with an error: the server drops the connection without finishing the
    /// response, which the client sees as a network failure.
    pub(crate) async fn fail(&self, why: &str) {
        let _ = self
            .tx
            .send(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                why.to_owned(),
            )))
            .await;
    }

    /// Resolves once the client is gone (the body was dropped).
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }

    async fn send(&mut self, b: Bytes) -> Result<(), ()> {
        self.tx.send(Ok(b)).await.map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> (Vec<Bytes>, bool) {
        let mut chunks = Vec::new();
        let mut failed = false;
        while let Some(item) = rx.recv().await {
            match item {
                Ok(b) => chunks.push(b),
                Err(_) => failed = true,
            }
        }
        (chunks, failed)
    }

    #[tokio::test]
    async fn drop_after_cuts_at_the_byte_and_one_byte_splits() {
        let (tx, rx) = mpsc::channel(64);
        let faults = [Fault::OneByteWrites, Fault::DropAfterBytes(5)];
        let mut w = Writer::new(tx, &faults);
        assert!(w.write(b"abc").await.is_ok());
        assert!(w.write(b"defg").await.is_err());
        drop(w);
        let (chunks, failed) = drain(rx).await;
        assert!(chunks.iter().all(|c| c.len() == 1), "{chunks:?}");
        assert_eq!(chunks.concat(), b"abcde");
        assert!(failed);
    }

    #[tokio::test]
    async fn without_faults_writes_pass_through() {
        let (tx, rx) = mpsc::channel(64);
        let mut w = Writer::new(tx, &[Fault::Malformed]);
        assert!(w.write(b"hello ").await.is_ok());
        assert!(w.write(b"").await.is_ok());
        assert!(w.write(b"world").await.is_ok());
        drop(w);
        let (chunks, failed) = drain(rx).await;
        assert_eq!(chunks, vec![Bytes::from("hello "), Bytes::from("world")]);
        assert!(!failed);
    }
}
