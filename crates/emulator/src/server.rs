//! Running an emulator on a loopback port and stopping it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running emulator: its address, and a way to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Wraps a spawned server task that stops when `shutdown` flips to true.
    pub fn new(addr: SocketAddr, shutdown: watch::Sender<bool>, task: JoinHandle<()>) -> Self {
        ServerHandle {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the server (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL with another scheme (`ws://127.0.0.1:PORT`).
    pub fn url_with_scheme(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// A receiver that turns true when the server is asked to stop (for long-lived responses).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops accepting connections, ends open streams, and waits for the server task.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Resolves once the server is asked to stop (or its handle is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds a listener on `addr` (use `127.0.0.1:0` for an ephemeral loopback port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves an axum router on `listener` until the handle is stopped or dropped.
///
/// Long-lived streaming handlers should also watch [`ServerHandle::shutdown_signal`] (passed
/// to them through their state) so open streams end promptly.
pub fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    shutdown: watch::Sender<bool>,
) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let mut rx = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "emulator server failed");
        }
    });
    Ok(ServerHandle::new(addr, shutdown, task))
}
