//! An upstream's HTTP clients: one any thread uses, and one for each thread that runs a
//! runtime of its own and asked for its own client ([`own_clients`]: `serve --http`'s
//! serving threads).
//!
//! A client's pooled connections are driven by tasks on the runtime that opened them: a
//! call on one serving thread that took a connection opened on another would wake that
//! other thread twice per request. With a client per serving thread, a call, its
//! upstream connection and its answer stay on one thread. Owns which client a thread
//! gets; how a request is sent is the caller's.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use super::address::{self, Allowed};

thread_local! {
    static OWN: Cell<bool> = const { Cell::new(false) };
}

/// From now on this thread sends upstream requests through clients of its own (its
/// connections are driven by this thread's runtime). For threads that each run a
/// current-thread runtime; on a multi-thread runtime a task moves between threads, so it
/// would gain nothing.
pub(crate) fn own_clients() {
    OWN.with(|own| own.set(true));
}

/// One upstream's clients, all built with the same settings.
#[derive(Debug)]
pub(super) struct Clients {
    shared: reqwest::Client,
    own: Mutex<Vec<(ThreadId, reqwest::Client)>>,
    connect: Duration,
    timeout: Duration,
    allowed: Arc<Allowed>,
}

impl Clients {
    /// The shared client; per-thread ones are built when first asked for.
    ///
    /// # Errors
    /// When reqwest cannot build a client (its TLS backend failed to start).
    pub(super) fn new(
        connect: Duration,
        timeout: Duration,
        allowed: &Arc<Allowed>,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            shared: build(connect, timeout, allowed)?,
            own: Mutex::new(Vec::new()),
            connect,
            timeout,
            allowed: Arc::clone(allowed),
        })
    }

    /// The client this thread sends through: its own when it asked for one.
    pub(super) fn for_this_thread(&self) -> reqwest::Client {
        if !OWN.with(Cell::get) {
            return self.shared.clone();
        }
        let thread = std::thread::current().id();
        let mut own = self.own.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, client)) = own.iter().find(|(t, _)| *t == thread) {
            return client.clone();
        }
        match build(self.connect, self.timeout, &self.allowed) {
            Ok(client) => {
                own.push((thread, client.clone()));
                client
            }
            // The same settings built the shared client: fall back to it.
            Err(_) => self.shared.clone(),
        }
    }
}

fn build(
    connect: Duration,
    timeout: Duration,
    allowed: &Arc<Allowed>,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .dns_resolver(address::Resolver::system(Arc::clone(allowed)))
        .build()
}
