//! The threads that serve `serve --http`'s connections: one current-thread tokio runtime
//! per core, each serving the connections handed to it for their whole life. The
//! listener is accepted on the runtime that started the server, and each connection goes
//! to the next thread in turn. A request, the call it carries, the upstream request the
//! call makes (hyper's connection task for it is spawned where the connection to the
//! upstream was opened) and the answer stay on one thread, as over stdio: on tokio's
//! multi-thread runtime its two workers woke each other several times per call, each a
//! futex wake-up and a context switch (docs/performance.md).
//!
//! Owns the threads, the hand-over of accepted connections, and stopping them (each
//! thread keeps running what was spawned on it until every thread has stopped serving:
//! a session's worker may live on one thread and be used from another). It must not
//! decide anything about a request: every thread serves the same router.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use axum::Router;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many threads serve connections: `TOKIO_WORKER_THREADS` when set (the variable
/// tokio's multi-thread runtime reads), else one per core.
pub(super) fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// An accepted connection on its way to a thread.
type Handed = (std::net::TcpStream, SocketAddr);

/// The serving threads.
pub(super) struct Cores {
    queues: Vec<mpsc::UnboundedSender<Handed>>,
    served: Vec<oneshot::Receiver<()>>,
    threads: Vec<JoinHandle<()>>,
    release: CancellationToken,
    next: usize,
}

impl Cores {
    /// Starts `n` threads serving `app`; each stops accepting and drains its connections
    /// (axum's graceful shutdown) once `stop` is cancelled.
    pub(super) fn start(
        n: usize,
        app: &Router,
        stop: &CancellationToken,
        local: SocketAddr,
    ) -> io::Result<Self> {
        let release = CancellationToken::new();
        let mut cores = Self {
            queues: Vec::with_capacity(n),
            served: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            release: release.clone(),
            next: 0,
        };
        // Each thread says when it runs: the server is announced once all serve.
        let (running, started) = std::sync::mpsc::channel::<()>();
        for i in 0..n.max(1) {
            let (queue, handed) = mpsc::unbounded_channel();
            let (done, served) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (app, stop, release) = (app.clone(), stop.clone(), release.clone());
            let running = running.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mcpd-http-{i}"))
                .spawn(move || {
                    // Upstream connections opened here are driven here.
                    crate::upstream::own_clients();
                    let _ = running.send(());
                    runtime.block_on(async move {
                        let listener = Queue { handed, local };
                        // Never an error: axum's `serve` logs and retries what fails.
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stop.cancelled_owned())
                            .await;
                        let _ = done.send(());
                        // What was spawned here (session workers, upstream connections)
                        // may still be used from another thread until all have stopped.
                        release.cancelled().await;
                    });
                })?;
            cores.queues.push(queue);
            cores.served.push(served);
            cores.threads.push(thread);
        }
        drop(running);
        for _ in 0..cores.threads.len() {
            // An error: a thread ended before it ran (it panicked), seen when joined.
            if started.recv().is_err() {
                break;
            }
        }
        Ok(cores)
    }

    /// Hands an accepted connection to the next thread in turn.
    pub(super) fn hand(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let std = match tcp.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::debug!(error = %e, "cannot hand over a connection");
                return;
            }
        };
        let Some(queue) = self.queues.get(self.next % self.queues.len()) else {
            return;
        };
        self.next = self.next.wrapping_add(1);
        if queue.send((std, peer)).is_err() {
            tracing::debug!("a serving thread has stopped: connection dropped");
        }
    }

    /// Waits until every thread has drained its connections, then lets them end.
    pub(super) async fn join(self) {
        drop(self.queues);
        for served in self.served {
            let _ = served.await;
        }
        self.release.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::warn!("a serving thread panicked");
                }
            }
        })
        .await;
    }
}

/// A thread's listener: the connections handed to it.
struct Queue {
    handed: mpsc::UnboundedReceiver<Handed>,
    local: SocketAddr,
}

impl axum::serve::Listener for Queue {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((std, peer)) = self.handed.recv().await else {
                // No more connections: the graceful shutdown ends the accept loop.
                return std::future::pending().await;
            };
            // Registered with this thread's runtime from here on.
            match TcpStream::from_std(std) {
                Ok(tcp) => return (tcp, peer),
                Err(e) => tracing::debug!(error = %e, "cannot take over a connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
