//! One state file, several local mcpd processes.
//!
//! The embedded store has one owner: redb locks its file. Yet on one machine several
//! processes want the same state: two IDE hosts each start `mcpd serve` on the same
//! config, and `mcpd budget` or `mcpd elevate` run beside them. So the process that opens
//! the file also listens on a Unix socket next to it (`state.redb.sock`, mode 0600), and
//! every other process forwards its store calls there, one JSON line each way. When the
//! owner exits, the next call of a forwarding process takes the file over and becomes
//! the owner itself. The atomicity of each operation is the owner's, so exactly-once
//! idempotency and counters hold across all of them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{
    Admission, AllOrNone, Counter, EmbeddedStore, Idem, IdemClaim, Incr, Store, StoreError,
};

#[path = "shared_wire.rs"]
mod wire;

use wire::{
    IdemWire, Req, Resp, millis, serve_one, to_bool, to_counter, to_unit, unexpected, unhex,
};

/// A store on a state file, owned by this process or forwarded to the one that owns it.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    socket: PathBuf,
    mode: RwLock<Mode>,
}

#[derive(Debug, Clone)]
enum Mode {
    Owner(Arc<EmbeddedStore>),
    Client(Arc<tokio::sync::Mutex<Option<Conn>>>),
}

#[derive(Debug)]
struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl FileStore {
    /// Opens the state file: as its owner if nobody has it, else through its owner.
    ///
    /// # Errors
    /// The file cannot be opened and no owner answers on its socket.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let socket = socket_path(path);
        let mode = match become_owner(path, &socket) {
            Ok(mode) => mode,
            Err(StoreError::Locked { .. }) => Mode::Client(Arc::new(tokio::sync::Mutex::new(
                Some(connect(path, &socket).await?),
            ))),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: path.to_owned(),
            socket,
            mode: RwLock::new(mode),
        })
    }

    /// Whether this process owns the file (else it forwards to the owner).
    pub fn is_owner(&self) -> bool {
        matches!(self.mode(), Mode::Owner(_))
    }

    /// The embedded store, when this process owns the file: calls go straight to it.
    fn owner(&self) -> Option<Arc<EmbeddedStore>> {
        match self.mode() {
            Mode::Owner(s) => Some(s),
            Mode::Client(_) => None,
        }
    }

    fn mode(&self) -> Mode {
        self.mode
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs `req` on the owner. If the owner is gone, takes the file over (or reconnects
    /// to whoever did) and tries once more.
    async fn call(&self, req: Req) -> Result<Resp, StoreError> {
        for attempt in 0..2 {
            let conn = match self.mode() {
                Mode::Owner(store) => return serve_one(store.as_ref(), req).await,
                Mode::Client(conn) => conn,
            };
            let mut guard = conn.lock().await;
            if let Some(c) = guard.as_mut() {
                match round_trip(c, &req).await {
                    Ok(Resp::Error(msg)) => return Err(StoreError::Stopped(msg)),
                    Ok(resp) => return Ok(resp),
                    Err(e) if attempt == 1 => return Err(e),
                    Err(_) => {}
                }
            }
            *guard = None;
            drop(guard);
            self.recover().await?;
        }
        Err(StoreError::Stopped("the state file's owner is gone".into()))
    }

    async fn recover(&self) -> Result<(), StoreError> {
        let mode = match become_owner(&self.path, &self.socket) {
            Ok(mode) => {
                tracing::info!(path = %self.path.display(), "took over the state file from an mcpd that exited");
                mode
            }
            Err(StoreError::Locked { .. }) => Mode::Client(Arc::new(tokio::sync::Mutex::new(
                Some(connect(&self.path, &self.socket).await?),
            ))),
            Err(e) => return Err(e),
        };
        *self
            .mode
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
        Ok(())
    }
}

fn socket_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// Opens the file and starts answering other processes on the socket.
fn become_owner(path: &Path, socket: &Path) -> Result<Mode, StoreError> {
    let store = Arc::new(EmbeddedStore::open(path)?);
    // We hold the file lock, so a socket file left behind is a dead owner's.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| {
        StoreError::Stopped(format!("cannot listen on '{}': {e}", socket.display()))
    })?;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
    let owned = store.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(owned.clone(), stream));
        }
    });
    Ok(Mode::Owner(store))
}

async fn connect(path: &Path, socket: &Path) -> Result<Conn, StoreError> {
    // The owner may be starting: it binds the socket just after locking the file.
    let mut last = None;
    for _ in 0..50 {
        match UnixStream::connect(socket).await {
            Ok(s) => {
                let (read, write) = s.into_split();
                return Ok(Conn {
                    read: BufReader::new(read),
                    write,
                });
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(StoreError::Stopped(format!(
        "state file '{}' is locked by another process that does not answer on '{}' ({}); stop the other mcpd or give this one its own state file",
        path.display(),
        socket.display(),
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

async fn round_trip(c: &mut Conn, req: &Req) -> Result<Resp, StoreError> {
    let io = |e: std::io::Error| StoreError::Stopped(format!("state owner connection: {e}"));
    let mut line = serde_json::to_vec(req).map_err(|e| StoreError::Stopped(e.to_string()))?;
    line.push(b'\n');
    c.write.write_all(&line).await.map_err(io)?;
    let mut answer = String::new();
    if c.read.read_line(&mut answer).await.map_err(io)? == 0 {
        return Err(StoreError::Stopped(
            "the state file's owner closed the connection".into(),
        ));
    }
    serde_json::from_str(&answer)
        .map_err(|e| StoreError::Stopped(format!("bad answer from the state owner: {e}")))
}

/// Serves one forwarding process until it disconnects.
async fn answer(store: Arc<EmbeddedStore>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = match serde_json::from_str::<Req>(&line) {
            Ok(req) => serve_one(store.as_ref(), req)
                .await
                .unwrap_or_else(|e| Resp::Error(e.to_string())),
            Err(e) => Resp::Error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            break;
        }
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn idem_claim(&self, key: &str, claim: &IdemClaim<'_>) -> Result<Idem, StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_claim(key, claim).await;
        }
        let req = Req::IdemClaim {
            key: key.to_owned(),
            claim: hex::encode(claim.claim),
            lease_ms: millis(claim.lease),
            hold_ms: millis(claim.hold),
            retake: claim.retake,
        };
        match self.call(req).await? {
            Resp::Idem(i) => i.into_idem(),
            other => Err(unexpected(&other)),
        }
    }

    async fn idem_hold(&self, key: &str, held: &[u8], ttl: Duration) -> Result<(), StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_hold(key, held, ttl).await;
        }
        let req = Req::IdemHold {
            key: key.to_owned(),
            held: hex::encode(held),
            ttl_ms: millis(ttl),
        };
        to_unit(self.call(req).await?)
    }

    async fn idem_resolve(
        &self,
        key: &str,
        to: Option<(&[u8], Duration)>,
    ) -> Result<Option<Idem>, StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_resolve(key, to).await;
        }
        let req = Req::IdemResolve {
            key: key.to_owned(),
            result: to.map(|(r, _)| hex::encode(r)),
            ttl_ms: to.map_or(0, |(_, ttl)| millis(ttl)),
        };
        match self.call(req).await? {
            Resp::Found(f) => f.map(IdemWire::into_idem).transpose(),
            other => Err(unexpected(&other)),
        }
    }

    async fn idem_list(&self, prefix: &str) -> Result<Vec<(String, Idem, Duration)>, StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_list(prefix).await;
        }
        let req = Req::IdemList {
            prefix: prefix.to_owned(),
        };
        match self.call(req).await? {
            Resp::IdemEntries(e) => e
                .into_iter()
                .map(|(k, i, left)| Ok((k, i.into_idem()?, Duration::from_millis(left))))
                .collect(),
            other => Err(unexpected(&other)),
        }
    }

    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_finish(key, result, ttl).await;
        }
        let req = Req::IdemFinish {
            key: key.to_owned(),
            result: hex::encode(result),
            ttl_ms: millis(ttl),
        };
        to_unit(self.call(req).await?)
    }

    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_abandon(key).await;
        }
        to_bool(
            self.call(Req::IdemAbandon {
                key: key.to_owned(),
            })
            .await?,
        )
    }

    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError> {
        if let Some(s) = self.owner() {
            return s.incr(key, by, window).await;
        }
        let req = Req::Incr {
            key: key.to_owned(),
            by,
            window_ms: millis(window),
        };
        to_counter(self.call(req).await?)
    }

    async fn incr_within(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window: Duration,
    ) -> Result<Admission, StoreError> {
        if let Some(s) = self.owner() {
            return s.incr_within(key, by, limit, window).await;
        }
        let req = Req::IncrWithin {
            key: key.to_owned(),
            by,
            limit,
            window_ms: millis(window),
        };
        match self.call(req).await? {
            Resp::Refused {
                total,
                resets_in_ms,
            } => Ok(Admission::Refused(Counter {
                total,
                resets_in: Duration::from_millis(resets_in_ms),
            })),
            other => to_counter(other).map(Admission::Admitted),
        }
    }

    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        if let Some(s) = self.owner() {
            return s.incr_all(incs).await;
        }
        let req = Req::IncrAll {
            incs: incs.to_vec(),
        };
        match self.call(req).await? {
            Resp::Counters(cs) => Ok(Ok(cs
                .into_iter()
                .map(|(total, ms)| Counter {
                    total,
                    resets_in: Duration::from_millis(ms),
                })
                .collect())),
            Resp::RefusedAt {
                index,
                total,
                resets_in_ms,
            } => Ok(Err((
                index,
                Counter {
                    total,
                    resets_in: Duration::from_millis(resets_in_ms),
                },
            ))),
            other => Err(unexpected(&other)),
        }
    }

    async fn idem_claim_counted(
        &self,
        key: &str,
        claim: &IdemClaim<'_>,
        incs: &[Incr],
    ) -> Result<(Idem, Option<AllOrNone>), StoreError> {
        if let Some(s) = self.owner() {
            return s.idem_claim_counted(key, claim, incs).await;
        }
        // A forwarding process makes the two writes through the owner.
        super::claim_then_count(self, key, claim, incs).await
    }

    async fn get_counter(&self, key: &str) -> Result<u64, StoreError> {
        if let Some(s) = self.owner() {
            return s.get_counter(key).await;
        }
        match self
            .call(Req::GetCounter {
                key: key.to_owned(),
            })
            .await?
        {
            Resp::Number(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        if let Some(s) = self.owner() {
            return s.put(key, value, ttl).await;
        }
        let req = Req::Put {
            key: key.to_owned(),
            value: hex::encode(value),
            ttl_ms: millis(ttl),
        };
        to_unit(self.call(req).await?)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(s) = self.owner() {
            return s.get(key).await;
        }
        match self
            .call(Req::Get {
                key: key.to_owned(),
            })
            .await?
        {
            Resp::Value(v) => v.as_deref().map(unhex).transpose(),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        if let Some(s) = self.owner() {
            return s.delete(key).await;
        }
        to_bool(
            self.call(Req::Delete {
                key: key.to_owned(),
            })
            .await?,
        )
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if let Some(s) = self.owner() {
            return s.scan_prefix(prefix).await;
        }
        match self
            .call(Req::Scan {
                prefix: prefix.to_owned(),
            })
            .await?
        {
            Resp::Entries(e) => e.into_iter().map(|(k, v)| Ok((k, unhex(&v)?))).collect(),
            other => Err(unexpected(&other)),
        }
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        if let Some(s) = self.owner() {
            return s.sweep().await;
        }
        match self.call(Req::Sweep).await? {
            Resp::Number(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            other => Err(unexpected(&other)),
        }
    }
}
