//! Stop signals (SIGINT, SIGTERM; Ctrl-C elsewhere) for the long-running commands.

/// SIGINT and SIGTERM (Ctrl-C elsewhere), listened for once for a whole command.
///
/// A listener made anew for each wait misses a signal that arrives between two waits (while an
/// event is being written, say): one listener kept from start to end records it, and the next
/// [`recv`](Self::recv) returns at once.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(windows)]
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
}

impl StopSignals {
    /// Starts listening; must be called within a tokio runtime.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot listen for {name}: {e}");
                    None
                }
            };
            StopSignals {
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(windows)]
        {
            StopSignals {
                ctrl_c: tokio::signal::windows::ctrl_c()
                    .map_err(|e| tracing::warn!("cannot listen for Ctrl-C: {e}"))
                    .ok(),
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            StopSignals {}
        }
    }

    /// Waits for the next stop signal, or returns at once when one came since the last call.
    /// Cancel-safe.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = recv_or_pending(&mut self.interrupt) => {}
                Some(()) = recv_or_pending(&mut self.terminate) => {}
                else => std::future::pending().await,
            }
        }
        #[cfg(windows)]
        {
            match &mut self.ctrl_c {
                Some(c) => {
                    c.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            std::future::pending::<()>().await
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(unix)]
async fn recv_or_pending(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
