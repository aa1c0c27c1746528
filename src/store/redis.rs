//! The Redis backend: state shared by several mcpd replicas.
//!
//! Every operation is one round trip and atomic on the server: a plain command where one
//! suffices (`SET PX`, `GET`, `DEL`), a short Lua script where a read decides a write
//! (claiming an idempotency key, counting within a limit, all-or-none increments).
//! Expiry is Redis's own (`PX`, `PEXPIRE`), so `sweep` has nothing to do. Entries carry
//! their kind: idempotency records are `C` + lease + claim (in flight), `H` + what is
//! known (held: outcome unknown) or `D` + result, values are
//! `V` + bytes, counters are Redis integers; using a key as another kind is
//! [`StoreError::WrongKind`]. Durability is the server's (`appendonly yes` with
//! `appendfsync always` for the embedded store's guarantee).
//!
//! `incr_all` touches several keys in one script: on Redis Cluster they must share a hash
//! slot; mcpd targets a single primary (with replicas for failover).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Script};

use super::{
    Admission, AllOrNone, Counter, Idem, IdemClaim, Incr, Store, StoreError, check_key, millis,
};

/// How long one operation (or one connection attempt) may take before it fails.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A store on one Redis server (or primary).
pub struct RedisStore {
    conn: ConnectionManager,
    url: String,
    begin: Script,
    finish: Script,
    abandon: Script,
    resolve: Script,
    look: Script,
    incr: Script,
    within: Script,
    all: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!(
            "{}://***@{}",
            url.get(..s).unwrap_or_default(),
            url.get(at + 1..).unwrap_or_default()
        ),
        _ => url.to_owned(),
    }
}

// Idempotency records: `C<lease, Unix ms>:<claim>` (a claim), `H<bytes>` (held),
// `D<bytes>` (done); `I` is a claim of an mcpd before leases (its lease is its expiry).
// Time is the server's (TIME), so replicas with skewed clocks agree on a lease.
const NOW: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local function kind(v) if tonumber(v) then return 'counter' end local t = string.sub(v, 1, 1) if t == 'V' then return 'value' end return 'idem' end
local function now_ms() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
-- {state, bytes, ms}: 1 in flight (ms until its lease lapses), 2 done, 3 held, 4 lapsed
local function state(v, now)
  local t = string.sub(v, 1, 1)
  if t == 'I' then return {1, '', redis.call('PTTL', KEYS[1])} end
  if t == 'C' then
    local sep = string.find(v, ':', 2, true)
    local lease = tonumber(string.sub(v, 2, sep - 1))
    local claim = string.sub(v, sep + 1)
    if lease > now then return {1, claim, lease - now} end
    return {4, claim, 0}
  end
  if t == 'D' then return {2, string.sub(v, 2), 0} end
  if t == 'H' then return {3, string.sub(v, 2), 0} end
  return nil
end
";

// ARGV: lease ms, hold ms, claim bytes, retake (0/1). Returns {0} when claimed.
const BEGIN: &str = r"
local now = now_ms()
local v = redis.call('GET', KEYS[1])
local st = nil
if v then
  st = state(v, now)
  if not st then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1]) end
end
if (not v) or (ARGV[4] == '1' and (st[1] == 3 or st[1] == 4)) then
  local lease, hold = tonumber(ARGV[1]), tonumber(ARGV[2])
  redis.call('SET', KEYS[1], 'C' .. string.format('%d', now + lease) .. ':' .. ARGV[3], 'PX', math.max(lease, hold))
  return {0, '', 0}
end
return st
";

// ARGV: tag (D or H), bytes, ttl ms.
const FINISH: &str = r"
local v = redis.call('GET', KEYS[1])
if v and (tonumber(v) or string.sub(v, 1, 1) == 'V') then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
return 1
";

const ABANDON: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local t = string.sub(v, 1, 1)
if t == 'I' or t == 'C' then redis.call('DEL', KEYS[1]) return 1 end
if t == 'D' or t == 'H' then return 0 end
return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1])
";

// ARGV: mode (0: remove, 1: store done), bytes, ttl ms. Returns what was found
// ({-1} for nothing); only a held record or a lapsed claim is changed.
const RESOLVE: &str = r"
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if not v then return {-1, '', 0} end
local st = state(v, now)
if not st then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1]) end
if st[1] == 3 or st[1] == 4 then
  if ARGV[1] == '1' then redis.call('SET', KEYS[1], 'D' .. ARGV[2], 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
end
return st
";

// One key of a listing: {state, bytes, ms until its lease lapses, ms until it expires};
// {-1} when it is gone or not an idempotency record.
const LOOK: &str = r"
local now = now_ms()
local v = redis.call('GET', KEYS[1])
if not v then return {-1, '', 0, 0} end
local st = state(v, now)
if not st then return {-1, '', 0, 0} end
table.insert(st, redis.call('PTTL', KEYS[1]))
return st
";

// A counter: INCRBY, and the window opens with the first increment.
const INCR: &str = r"
local function kind(v) if tonumber(v) then return 'counter' end local t = string.sub(v, 1, 1) if t == 'V' then return 'value' end return 'idem' end
local v = redis.call('GET', KEYS[1])
if v and not tonumber(v) then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1]) end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if not v then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {n, redis.call('PTTL', KEYS[1])}
";

const WITHIN: &str = r"
local function kind(v) if tonumber(v) then return 'counter' end local t = string.sub(v, 1, 1) if t == 'V' then return 'value' end return 'idem' end
local v = redis.call('GET', KEYS[1])
if v and not tonumber(v) then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[1]) end
local cur = tonumber(v) or 0
local by, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur + by > limit then
  local ttl = 0
  if v then ttl = redis.call('PTTL', KEYS[1]) end
  return {0, cur, ttl}
end
local n = redis.call('INCRBY', KEYS[1], by)
if not v then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, n, redis.call('PTTL', KEYS[1])}
";

// ARGV holds (by, limit or -1, window) per key. Every limit is checked first.
const ALL: &str = r"
local function kind(v) if tonumber(v) then return 'counter' end local t = string.sub(v, 1, 1) if t == 'V' then return 'value' end return 'idem' end
local cur = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and not tonumber(v) then return redis.error_reply('WRONGKIND ' .. kind(v) .. ' ' .. KEYS[i]) end
  cur[i] = v
end
for i = 1, #KEYS do
  local by, limit = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])
  local n = tonumber(cur[i]) or 0
  if limit >= 0 and n + by > limit then
    local ttl = 0
    if cur[i] then ttl = redis.call('PTTL', KEYS[i]) end
    return {0, i - 1, n, ttl}
  end
end
local out = {1}
for i = 1, #KEYS do
  local n = redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
  if not cur[i] then redis.call('PEXPIRE', KEYS[i], ARGV[3*i]) end
  table.insert(out, n)
  table.insert(out, redis.call('PTTL', KEYS[i]))
end
return out
";

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`).
    ///
    /// # Errors
    /// A bad URL or an unreachable server.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let shown = redacted(url);
        let client =
            redis::Client::open(url).map_err(|e| StoreError::BadSpec(format!("{shown}: {e}")))?;
        // Bounded waits: a Redis that stops answering (a hung host, a partition) fails
        // each operation after RESPONSE_TIMEOUT instead of holding the call; the manager
        // reconnects on its own when Redis is back.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StoreError::Stopped(format!("redis at {shown} did not answer within 5 s")))?
        .map_err(|e| StoreError::Stopped(format!("cannot reach redis at {shown}: {e}")))?;
        Ok(Self {
            conn,
            url: url.to_owned(),
            begin: Script::new(&format!("{NOW}{BEGIN}")),
            finish: Script::new(&format!("{NOW}{FINISH}")),
            abandon: Script::new(&format!("{NOW}{ABANDON}")),
            resolve: Script::new(&format!("{NOW}{RESOLVE}")),
            look: Script::new(&format!("{NOW}{LOOK}")),
            incr: Script::new(INCR),
            within: Script::new(WITHIN),
            all: Script::new(ALL),
        })
    }

    /// Stores a settled idempotency record: `tag` `D` (done) or `H` (held).
    async fn settle(
        &self,
        key: &str,
        tag: &[u8],
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        let ttl = millis("the ttl", ttl)?;
        let mut c = self.conn.clone();
        let _: i64 = self
            .finish
            .key(key)
            .arg(tag)
            .arg(bytes)
            .arg(ttl)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "an idempotency record"))?;
        Ok(())
    }

    /// Every key starting with `prefix`, sorted.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let mut c = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(|e| self.error(&e, "a value"))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn error(&self, e: &redis::RedisError, wanted: &'static str) -> StoreError {
        if e.code() == Some("WRONGKIND") {
            let detail = e.detail().unwrap_or_default().trim();
            let (found, key) = detail.split_once(' ').unwrap_or(("", detail));
            return StoreError::WrongKind {
                key: key.to_owned(),
                found: kind_name(found),
                wanted,
            };
        }
        StoreError::Unreachable(format!("redis at {}: {e}", redacted(&self.url)))
    }
}

/// What an entry is, as error messages name it (the names the other backends use).
fn kind_name(tag: &str) -> &'static str {
    match tag {
        "counter" => "a counter",
        "value" => "a value",
        _ => "an idempotency record",
    }
}

/// The kind of a raw entry read with GET.
fn kind_of(bytes: &[u8]) -> &'static str {
    if std::str::from_utf8(bytes).is_ok_and(|s| s.parse::<i64>().is_ok()) {
        "a counter"
    } else if bytes.first() == Some(&b'V') {
        "a value"
    } else {
        "an idempotency record"
    }
}

/// An idempotency record as the scripts return it: `None` for nothing there.
fn idem(state: i64, bytes: Vec<u8>, ms: i64) -> Option<Idem> {
    Some(match state {
        0 => Idem::Started,
        1 => Idem::InFlight {
            lapses_in: ms_dur(ms),
            claim: bytes,
        },
        2 => Idem::Done(bytes),
        3 => Idem::Held(bytes),
        4 => Idem::Lapsed(bytes),
        _ => return None,
    })
}

fn ms_dur(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn idem_claim(&self, key: &str, claim: &IdemClaim<'_>) -> Result<Idem, StoreError> {
        check_key(key)?;
        let lease = millis("the claim's lease", claim.lease)?;
        let hold = millis("the claim's hold", claim.hold)?;
        let mut c = self.conn.clone();
        let (state, bytes, ms): (i64, Vec<u8>, i64) = self
            .begin
            .key(key)
            .arg(lease)
            .arg(hold)
            .arg(claim.claim)
            .arg(u8::from(claim.retake))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "an idempotency record"))?;
        Ok(idem(state, bytes, ms).unwrap_or(Idem::Started))
    }

    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.settle(key, b"D", result, ttl).await
    }

    async fn idem_hold(&self, key: &str, held: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.settle(key, b"H", held, ttl).await
    }

    async fn idem_resolve(
        &self,
        key: &str,
        to: Option<(&[u8], Duration)>,
    ) -> Result<Option<Idem>, StoreError> {
        check_key(key)?;
        let (mode, result, ttl) = match to {
            None => (0, &[][..], 1),
            Some((r, ttl)) => (1, r, millis("the ttl", ttl)?),
        };
        let mut c = self.conn.clone();
        let (state, bytes, ms): (i64, Vec<u8>, i64) = self
            .resolve
            .key(key)
            .arg(mode)
            .arg(result)
            .arg(ttl)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "an idempotency record"))?;
        Ok(idem(state, bytes, ms))
    }

    async fn idem_list(&self, prefix: &str) -> Result<Vec<(String, Idem, Duration)>, StoreError> {
        let keys = self.keys(prefix).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut c = self.conn.clone();
        for key in keys {
            let (state, bytes, ms, ttl): (i64, Vec<u8>, i64, i64) = self
                .look
                .key(&key)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.error(&e, "an idempotency record"))?;
            if let Some(i) = idem(state, bytes, ms) {
                out.push((key, i, ms_dur(ttl)));
            }
        }
        Ok(out)
    }

    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut c = self.conn.clone();
        let n: i64 = self
            .abandon
            .key(key)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "an idempotency record"))?;
        Ok(n == 1)
    }

    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError> {
        check_key(key)?;
        let window = millis("the window", window)?;
        let mut c = self.conn.clone();
        let (n, ttl): (i64, i64) = self
            .incr
            .key(key)
            .arg(by)
            .arg(window)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "a counter"))?;
        Ok(Counter {
            total: count(n),
            resets_in: ms_dur(ttl),
        })
    }

    async fn incr_within(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window: Duration,
    ) -> Result<Admission, StoreError> {
        check_key(key)?;
        let window = millis("the window", window)?;
        let mut c = self.conn.clone();
        let (ok, n, ttl): (i64, i64, i64) = self
            .within
            .key(key)
            .arg(by)
            .arg(limit)
            .arg(window)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "a counter"))?;
        let counter = Counter {
            total: count(n),
            resets_in: ms_dur(ttl),
        };
        Ok(if ok == 1 {
            Admission::Admitted(counter)
        } else {
            Admission::Refused(counter)
        })
    }

    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        if incs.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let mut inv = self.all.prepare_invoke();
        for inc in incs {
            check_key(&inc.key)?;
            let window = millis("the window", inc.window)?;
            inv.key(&inc.key);
            inv.arg(inc.by)
                .arg(
                    inc.limit
                        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
                )
                .arg(window);
        }
        let mut c = self.conn.clone();
        let out: Vec<i64> = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "a counter"))?;
        match out.as_slice() {
            [1, rest @ ..] => Ok(Ok(rest
                .chunks(2)
                .map(|p| Counter {
                    total: count(p.first().copied().unwrap_or(0)),
                    resets_in: ms_dur(p.get(1).copied().unwrap_or(0)),
                })
                .collect())),
            [0, index, total, ttl] => Ok(Err((
                usize::try_from(*index).unwrap_or(0),
                Counter {
                    total: count(*total),
                    resets_in: ms_dur(*ttl),
                },
            ))),
            other => Err(StoreError::Stopped(format!(
                "unexpected answer from redis: {other:?}"
            ))),
        }
    }

    async fn get_counter(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c.get(key).await.map_err(|e| self.error(&e, "a counter"))?;
        match v {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::WrongKind {
                    key: key.to_owned(),
                    found: kind_of(&bytes),
                    wanted: "a counter",
                }),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        check_key(key)?;
        let ttl = millis("the ttl", ttl)?;
        let mut tagged = Vec::with_capacity(value.len() + 1);
        tagged.push(b'V');
        tagged.extend_from_slice(value);
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(tagged)
            .arg("PX")
            .arg(ttl)
            .query_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "a value"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c.get(key).await.map_err(|e| self.error(&e, "a value"))?;
        match v {
            None => Ok(None),
            Some(bytes) => match bytes.split_first() {
                Some((b'V', rest)) => Ok(Some(rest.to_vec())),
                _ => Err(StoreError::WrongKind {
                    key: key.to_owned(),
                    found: kind_of(&bytes),
                    wanted: "a value",
                }),
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut c = self.conn.clone();
        let n: i64 = c.del(key).await.map_err(|e| self.error(&e, "a value"))?;
        Ok(n > 0)
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let keys = self.keys(prefix).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(|e| self.error(&e, "a value"))?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| match v?.split_first() {
                Some((b'V', rest)) => Some((k, rest.to_vec())),
                _ => None,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        // Redis expires keys itself.
        Ok(0)
    }
}

/// Escapes Redis glob characters so a prefix matches literally.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
