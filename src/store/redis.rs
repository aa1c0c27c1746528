//! The Redis backend: state shared by several mcpd replicas (`state: redis://HOST:PORT/DB`).
//!
//! Every entry is one Redis string, `mcpd:<key>`, holding the same encoded [`Record`]
//! as the embedded store, so the meaning of each write is `record::apply`, as for the
//! other backends, and the backends cannot disagree. A write reads the entry (`GET`, or
//! `MGET` for [`Store::incr_all`]), applies the operation, and stores the outcome with a
//! compare-and-set Lua script that writes only if every entry it read is unchanged; if
//! another replica got there first it reads again and retries. A write that changes
//! nothing (a key found in flight, a refused increment) needs no second round trip.
//!
//! Expiry is the record's own, against this replica's clock, exactly as in the file
//! store (replicas' clocks must agree, as for any window shared between hosts); Redis
//! also expires each key [`GRACE_MS`] after it, so nothing is left behind. `incr_all`
//! touches several keys in one script: use one Redis node (or keys in one slot), not a
//! cluster. Must not know what the records mean.

use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::record::{self, Change, Op, Record, Reply};
use super::{
    Admission, AllOrNone, Clock, Counter, Idem, Incr, Store, StoreError, check_key, millis,
    system_clock,
};

/// Every key mcpd writes starts with this.
pub const NAMESPACE: &str = "mcpd:";
/// How long Redis keeps a key after its record expired (expired records are invisible;
/// this only bounds what is left for [`Store::sweep`]).
const GRACE_MS: u64 = 60_000;
/// How long a write keeps retrying while other replicas change the same keys.
const CONTENTION_LIMIT: Duration = Duration::from_secs(5);
/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 500;

/// Writes the new entries if every key still holds what was read.
/// KEYS: the keys. ARGV: for each key the expected bytes ('' = absent), then for each
/// key an operation ('s' set, 'd' delete, 'k' keep), its bytes and its TTL in ms.
/// Returns 1 when written, 0 when something changed in between.
const CAS: &str = r"
local n = #KEYS
for i = 1, n do
  local cur = redis.call('GET', KEYS[i])
  local want = ARGV[i]
  if want == '' then
    if cur then return 0 end
  elseif cur ~= want then
    return 0
  end
end
for i = 1, n do
  local at = n + 3 * (i - 1)
  local op = ARGV[at + 1]
  if op == 's' then
    redis.call('SET', KEYS[i], ARGV[at + 2], 'PX', ARGV[at + 3])
  elseif op == 'd' then
    redis.call('DEL', KEYS[i])
  end
end
return 1
";

/// The Redis store. See the module documentation.
pub struct RedisStore {
    conn: ConnectionManager,
    cas: redis::Script,
    namespace: String,
    clock: Clock,
    /// The URL without credentials, for messages.
    shown: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// `url` without a password, for logs and errors.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://`, `rediss://`, `redis+unix://`).
    ///
    /// # Errors
    /// A malformed URL, or a server that does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, NAMESPACE, system_clock()).await
    }

    /// As [`RedisStore::connect`], with the key namespace and the clock (tests use a
    /// namespace each and a manual clock).
    pub(crate) async fn connect_with(
        url: &str,
        namespace: &str,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let shown = shown(url);
        let fail = |e: redis::RedisError| StoreError::Redis {
            url: shown.clone(),
            error: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::BadSpec(format!(
                "{} ({e}; write redis://HOST:PORT/DB)",
                shown.clone()
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(fail)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        Ok(Self {
            conn,
            cas: redis::Script::new(CAS),
            namespace: namespace.to_owned(),
            clock,
            shown,
        })
    }

    fn err(&self, e: &redis::RedisError) -> StoreError {
        StoreError::Redis {
            url: self.shown.clone(),
            error: e.to_string(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    fn decode(key: &str, bytes: Option<Vec<u8>>) -> Result<Option<Record>, StoreError> {
        bytes
            .map(|b| {
                Record::decode(&b).ok_or_else(|| StoreError::Corrupt {
                    key: key.to_owned(),
                })
            })
            .transpose()
    }

    /// The entries under `keys` as stored (raw bytes, to compare in the script).
    async fn read_raw(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut conn = self.conn.clone();
        if let [one] = keys {
            let v: Option<Vec<u8>> = conn.get(self.full(one)).await.map_err(|e| self.err(&e))?;
            return Ok(vec![v]);
        }
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        redis::cmd("MGET")
            .arg(&full)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&e))
    }

    /// Stores `changes` if `seen` is still what the keys hold; false when it is not.
    async fn compare_and_set(
        &self,
        keys: &[String],
        seen: &[Option<Vec<u8>>],
        changes: &[Change],
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut call = self.cas.prepare_invoke();
        for key in keys {
            call.key(self.full(key));
        }
        for s in seen {
            call.arg(s.as_deref().unwrap_or_default());
        }
        for change in changes {
            match change {
                Change::Keep => call.arg("k").arg("").arg(0),
                Change::Remove => call.arg("d").arg("").arg(0),
                Change::Write(r) => {
                    let ttl = r.expires_ms.saturating_sub(now).saturating_add(GRACE_MS);
                    call.arg("s").arg(r.encode()).arg(ttl)
                }
            };
        }
        let mut conn = self.conn.clone();
        let written: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(&e))?;
        Ok(written == 1)
    }

    /// Runs `op` on `key` until it applies to what it read.
    async fn write(&self, key: &str, op: Op) -> Result<Reply, StoreError> {
        check_key(key)?;
        let keys = [key.to_owned()];
        let started = Instant::now();
        loop {
            let seen = self.read_raw(&keys).await?;
            let now = (self.clock)();
            let current = Self::decode(key, seen.first().cloned().flatten())?;
            let (change, reply) = record::apply(key, op.clone(), current, now)?;
            if change == Change::Keep
                || self
                    .compare_and_set(&keys, &seen, std::slice::from_ref(&change), now)
                    .await?
            {
                return Ok(reply);
            }
            self.contended(started, key)?;
        }
    }

    fn contended(&self, started: Instant, key: &str) -> Result<(), StoreError> {
        if started.elapsed() > CONTENTION_LIMIT {
            return Err(StoreError::Redis {
                url: self.shown.clone(),
                error: format!(
                    "key '{key}' kept changing under this write for {CONTENTION_LIMIT:?}"
                ),
            });
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<(Option<Record>, u64), StoreError> {
        check_key(key)?;
        let mut conn = self.conn.clone();
        let v: Option<Vec<u8>> = conn.get(self.full(key)).await.map_err(|e| self.err(&e))?;
        Ok((Self::decode(key, v)?, (self.clock)()))
    }

    /// Every key under `prefix` (without the namespace), with its record.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Record)>, StoreError> {
        let pattern = format!("{}{}*", glob_escape(&self.namespace), glob_escape(prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(&e))?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.err(&e))?;
                for (full, raw) in keys.into_iter().zip(values) {
                    let Some(raw) = raw else { continue }; // gone since the SCAN
                    let key = full
                        .strip_prefix(&self.namespace)
                        .unwrap_or(&full)
                        .to_owned();
                    let record = Self::decode(&key, Some(raw.clone()))?
                        .ok_or_else(|| StoreError::Corrupt { key: key.clone() })?;
                    found.push((key, raw, record));
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        // SCAN may return a key twice.
        found.dedup_by(|a, b| a.0 == b.0);
        Ok(found)
    }
}

/// Escapes Redis glob characters so a key prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn idem_begin(&self, key: &str, in_flight_ttl: Duration) -> Result<Idem, StoreError> {
        let ttl_ms = millis("the in-flight ttl", in_flight_ttl)?;
        self.write(key, Op::IdemBegin { ttl_ms }).await?.idem()
    }

    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let result = result.to_vec();
        self.write(key, Op::IdemFinish { result, ttl_ms })
            .await?
            .unit()
    }

    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::IdemAbandon).await?.flag()
    }

    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError> {
        let window_ms = millis("the window", window)?;
        self.write(key, Op::Incr { by, window_ms }).await?.counter()
    }

    async fn incr_within(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window: Duration,
    ) -> Result<Admission, StoreError> {
        let window_ms = millis("the window", window)?;
        let op = Op::IncrWithin {
            by,
            limit,
            window_ms,
        };
        self.write(key, op).await?.admission()
    }

    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        let mut windows = Vec::with_capacity(incs.len());
        for inc in incs {
            check_key(&inc.key)?;
            windows.push(millis("the window", inc.window)?);
        }
        if incs.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let keys: Vec<String> = incs.iter().map(|i| i.key.clone()).collect();
        let started = Instant::now();
        loop {
            let seen = self.read_raw(&keys).await?;
            let now = (self.clock)();
            let mut current = Vec::with_capacity(incs.len());
            for (key, raw) in keys.iter().zip(&seen) {
                current.push(Self::decode(key, raw.clone())?);
            }
            let mut refused = None;
            for (i, ((inc, window_ms), cur)) in incs.iter().zip(&windows).zip(&current).enumerate()
            {
                if let Some(c) =
                    record::refuses(&inc.key, inc.by, inc.limit, *window_ms, cur.clone(), now)?
                {
                    refused = Some((i, c));
                    break;
                }
            }
            if let Some(r) = refused {
                return Ok(Err(r));
            }
            let mut changes = Vec::with_capacity(incs.len());
            let mut counters = Vec::with_capacity(incs.len());
            for ((inc, window_ms), cur) in incs.iter().zip(&windows).zip(current) {
                let op = Op::Incr {
                    by: inc.by,
                    window_ms: *window_ms,
                };
                let (change, reply) = record::apply(&inc.key, op, cur, now)?;
                changes.push(change);
                counters.push(reply.counter()?);
            }
            if self.compare_and_set(&keys, &seen, &changes, now).await? {
                return Ok(Ok(counters));
            }
            self.contended(started, keys.first().map_or("", String::as_str))?;
        }
    }

    async fn get_counter(&self, key: &str) -> Result<u64, StoreError> {
        let (current, now) = self.read(key).await?;
        record::read_counter(key, current, now)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let value = value.to_vec();
        self.write(key, Op::Put { value, ttl_ms }).await?.unit()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (current, now) = self.read(key).await?;
        record::read_value(key, current, now)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::Delete).await?.flag()
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let now = (self.clock)();
        Ok(self
            .scan(prefix)
            .await?
            .into_iter()
            .filter_map(|(key, _, r)| match r.body {
                record::Body::Value(v) if r.live(now) => Some((key, v)),
                _ => None,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let now = (self.clock)();
        let mut removed = 0;
        for (key, raw, record) in self.scan("").await? {
            if record.live(now) {
                continue;
            }
            // Only if unchanged: another replica may have written a live entry since.
            let keys = [key];
            if self
                .compare_and_set(&keys, &[Some(raw)], &[Change::Remove], now)
                .await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            shown("redis://user:secret@cache.internal:6379/0"),
            "redis://***@cache.internal:6379/0"
        );
        assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    /// Two replicas are two connections on one server: admissions through both never
    /// pass the limit, and what one stores the other reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_connections_share_limits_and_records() {
        let Some(server) = super::super::tests::RedisServer::start() else {
            return;
        };
        let a = std::sync::Arc::new(RedisStore::connect(&server.url).await.unwrap());
        let b = std::sync::Arc::new(RedisStore::connect(&server.url).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                s.incr_within("rate:t:x", 1, 25, Duration::from_secs(60))
                    .await
                    .unwrap()
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Admission::Admitted(_)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 25);
        assert_eq!(b.get_counter("rate:t:x").await.unwrap(), 25);

        assert_eq!(
            a.idem_begin("idem:k", Duration::from_secs(60))
                .await
                .unwrap(),
            Idem::Started
        );
        assert_eq!(
            b.idem_begin("idem:k", Duration::from_secs(60))
                .await
                .unwrap(),
            Idem::InFlight
        );
        a.idem_finish("idem:k", b"r", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            b.idem_begin("idem:k", Duration::from_secs(60))
                .await
                .unwrap(),
            Idem::Done(b"r".to_vec())
        );
    }

    #[tokio::test]
    async fn a_damaged_entry_is_reported_not_misread() {
        let Some(server) = super::super::tests::RedisServer::start() else {
            return;
        };
        let store = RedisStore::connect(&server.url).await.unwrap();
        let mut conn = store.conn.clone();
        let () = conn.set("mcpd:grant:x", b"\x09garbage").await.unwrap();
        let err = store.get("grant:x").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_that_names_it_without_the_password() {
        let err = RedisStore::connect("redis://user:pw@127.0.0.1:1/0")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis at redis://***@127.0.0.1:1/0 failed") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn glob_characters_in_prefixes_match_only_themselves() {
        assert_eq!(glob_escape("grant:a*[1]?"), r"grant:a\*\[1\]\?");
    }
}
