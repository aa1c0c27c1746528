//! What a stored entry is, how it is encoded, and what each write does to it.
//!
//! `apply` is the meaning of every write operation as a pure function of the entry
//! found and the time: both backends call it inside their own atomic section, so they
//! cannot disagree. This module must not do I/O or read the clock.

use std::time::Duration;

use super::{Admission, Counter, Idem, StoreError};

/// One stored entry: what it holds and when it expires (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Expiry, Unix milliseconds; the entry is dead from this instant on.
    pub(crate) expires_ms: u64,
    /// What the entry holds.
    pub(crate) body: Body,
}

/// The kinds of entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// An idempotency key claimed by a call that has not finished: until `lease_ms`
    /// (Unix ms) its holder is taken to be alive; after it the claim has lapsed (the
    /// holder died or lost the store) and the outcome is unknown. `claim` is the
    /// holder's description of itself, opaque here.
    InFlight { lease_ms: u64, claim: Vec<u8> },
    /// An idempotency key whose call's outcome is unknown (a timeout, a 5xx): held, with
    /// what its holder knew.
    Held(Vec<u8>),
    /// An idempotency key whose call finished, with its result.
    Done(Vec<u8>),
    /// A fixed-window counter.
    Counter(u64),
    /// A value stored by `put`.
    Value(Vec<u8>),
}

/// A claim of an mcpd before leases: its lease ends with the entry.
const TAG_IN_FLIGHT: u8 = 1;
const TAG_DONE: u8 = 2;
const TAG_COUNTER: u8 = 3;
const TAG_VALUE: u8 = 4;
const TAG_CLAIM: u8 = 5;
const TAG_HELD: u8 = 6;

impl Body {
    /// The kind, as error messages name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::InFlight { .. } | Self::Held(_) | Self::Done(_) => "an idempotency record",
            Self::Counter(_) => "a counter",
            Self::Value(_) => "a value",
        }
    }
}

impl Record {
    /// Whether the entry is still alive at `now`.
    pub(crate) fn live(&self, now: u64) -> bool {
        self.expires_ms > now
    }

    /// Time left until the entry expires.
    fn remaining(&self, now: u64) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(now))
    }

    /// `[tag][expiry, u64 little-endian][payload]`. A new kind takes a new tag, so an
    /// older mcpd reports it as unreadable rather than misreading it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, payload): (u8, &[u8]) = match &self.body {
            Body::InFlight { claim, .. } => (TAG_CLAIM, claim),
            Body::Held(b) => (TAG_HELD, b),
            Body::Done(b) => (TAG_DONE, b),
            Body::Counter(_) => (TAG_COUNTER, &[]),
            Body::Value(b) => (TAG_VALUE, b),
        };
        let mut out = Vec::with_capacity(1 + 8 + 8 + payload.len());
        out.push(tag);
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        match self.body {
            Body::Counter(n) => out.extend_from_slice(&n.to_le_bytes()),
            Body::InFlight { lease_ms, .. } => out.extend_from_slice(&lease_ms.to_le_bytes()),
            _ => {}
        }
        out.extend_from_slice(payload);
        out
    }

    /// The inverse of [`Record::encode`]; `None` for bytes it never produces.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        let (expiry, payload) = rest.split_first_chunk::<8>()?;
        let expires_ms = u64::from_le_bytes(*expiry);
        let body = match tag {
            TAG_IN_FLIGHT if payload.is_empty() => Body::InFlight {
                lease_ms: expires_ms,
                claim: Vec::new(),
            },
            TAG_CLAIM => {
                let (lease, claim) = payload.split_first_chunk::<8>()?;
                Body::InFlight {
                    lease_ms: u64::from_le_bytes(*lease),
                    claim: claim.to_vec(),
                }
            }
            TAG_HELD => Body::Held(payload.to_vec()),
            TAG_DONE => Body::Done(payload.to_vec()),
            TAG_COUNTER => Body::Counter(u64::from_le_bytes(*<&[u8; 8]>::try_from(payload).ok()?)),
            TAG_VALUE => Body::Value(payload.to_vec()),
            _ => return None,
        };
        Some(Self { expires_ms, body })
    }
}

/// A write operation on one key. Durations are already checked and in milliseconds.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    IdemBegin {
        lease_ms: u64,
        hold_ms: u64,
        claim: Vec<u8>,
        retake: bool,
    },
    IdemFinish {
        result: Vec<u8>,
        ttl_ms: u64,
    },
    IdemHold {
        held: Vec<u8>,
        ttl_ms: u64,
    },
    IdemAbandon,
    /// Settles a held key (or a lapsed claim): removes it (`None`) or stores this result.
    IdemResolve {
        to: Option<(Vec<u8>, u64)>,
    },
    Incr {
        by: u64,
        window_ms: u64,
    },
    IncrWithin {
        by: u64,
        limit: u64,
        window_ms: u64,
    },
    Put {
        value: Vec<u8>,
        ttl_ms: u64,
    },
    Delete,
}

/// The write of [`super::Store::idem_claim`], its durations checked.
pub(crate) fn claim_op(c: &super::IdemClaim<'_>) -> Result<Op, StoreError> {
    Ok(Op::IdemBegin {
        lease_ms: super::millis("the claim's lease", c.lease)?,
        hold_ms: super::millis("the claim's hold", c.hold)?,
        claim: c.claim.to_vec(),
        retake: c.retake,
    })
}

/// The write of [`super::Store::idem_resolve`], its duration checked.
pub(crate) fn resolve_op(to: Option<(&[u8], Duration)>) -> Result<Op, StoreError> {
    Ok(Op::IdemResolve {
        to: match to {
            None => None,
            Some((result, ttl)) => Some((result.to_vec(), super::millis("the ttl", ttl)?)),
        },
    })
}

/// What a write does to the stored entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Leave it as it is.
    Keep,
    /// Store this record in its place.
    Write(Record),
    /// Remove it (expired or not).
    Remove,
}

/// What a write answers; each public method unwraps the one it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Idem(Idem),
    Found(Option<Idem>),
    Counter(Counter),
    Admission(Admission),
    Flag(bool),
    Unit,
    Swept(usize),
    All(super::AllOrNone),
    /// A claim, and the counters counted with it (`idem_claim_counted`).
    Claimed(Idem, Option<super::AllOrNone>),
}

impl Reply {
    pub(crate) fn mismatch(self) -> StoreError {
        StoreError::Stopped(format!("internal: unexpected store reply {self:?}"))
    }
    pub(crate) fn idem(self) -> Result<Idem, StoreError> {
        match self {
            Self::Idem(i) => Ok(i),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn found(self) -> Result<Option<Idem>, StoreError> {
        match self {
            Self::Found(f) => Ok(f),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn counter(self) -> Result<Counter, StoreError> {
        match self {
            Self::Counter(c) => Ok(c),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn admission(self) -> Result<Admission, StoreError> {
        match self {
            Self::Admission(a) => Ok(a),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn flag(self) -> Result<bool, StoreError> {
        match self {
            Self::Flag(f) => Ok(f),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn unit(self) -> Result<(), StoreError> {
        match self {
            Self::Unit => Ok(()),
            other => Err(other.mismatch()),
        }
    }
    pub(crate) fn all(self) -> Result<super::AllOrNone, StoreError> {
        match self {
            Self::All(a) => Ok(a),
            other => Err(other.mismatch()),
        }
    }

    pub(crate) fn claimed(self) -> Result<(Idem, Option<super::AllOrNone>), StoreError> {
        match self {
            Self::Claimed(i, counted) => Ok((i, counted)),
            other => Err(other.mismatch()),
        }
    }

    pub(crate) fn swept(self) -> Result<usize, StoreError> {
        match self {
            Self::Swept(n) => Ok(n),
            other => Err(other.mismatch()),
        }
    }
}

fn wrong(key: &str, found: &Body, wanted: &'static str) -> StoreError {
    StoreError::WrongKind {
        key: key.to_owned(),
        found: found.kind(),
        wanted,
    }
}

/// The meaning of `op` on `key`, whose stored entry is `current` (expired or not), at
/// `now` (Unix ms). Fails, changing nothing, when the key holds another kind of entry.
pub(crate) fn apply(
    key: &str,
    op: Op,
    current: Option<Record>,
    now: u64,
) -> Result<(Change, Reply), StoreError> {
    let live = current.filter(|r| r.live(now));
    let at = |ms: u64| now.saturating_add(ms);
    Ok(match op {
        Op::IdemBegin {
            lease_ms,
            hold_ms,
            claim,
            retake,
        } => {
            let fresh = || {
                let record = Record {
                    expires_ms: at(hold_ms.max(lease_ms)),
                    body: Body::InFlight {
                        lease_ms: at(lease_ms),
                        claim,
                    },
                };
                (Change::Write(record), Reply::Idem(Idem::Started))
            };
            match live.map(|r| idem_state(r, now)) {
                None => fresh(),
                Some(Ok(Idem::Lapsed(_) | Idem::Held(_))) if retake => fresh(),
                Some(Ok(found)) => (Change::Keep, Reply::Idem(found)),
                Some(Err(body)) => return Err(wrong(key, &body, "an idempotency record")),
            }
        }
        Op::IdemFinish { result, ttl_ms } => idem_write(key, live, at(ttl_ms), Body::Done(result))?,
        Op::IdemHold { held, ttl_ms } => idem_write(key, live, at(ttl_ms), Body::Held(held))?,
        Op::IdemAbandon => match live.map(|r| idem_state(r, now)) {
            Some(Ok(Idem::InFlight { .. } | Idem::Lapsed(_))) => {
                (Change::Remove, Reply::Flag(true))
            }
            None | Some(Ok(_)) => (Change::Keep, Reply::Flag(false)),
            Some(Err(body)) => return Err(wrong(key, &body, "an idempotency record")),
        },
        Op::IdemResolve { to } => match live.map(|r| idem_state(r, now)) {
            Some(Ok(found @ (Idem::Lapsed(_) | Idem::Held(_)))) => {
                let change = match to {
                    None => Change::Remove,
                    Some((result, ttl_ms)) => Change::Write(Record {
                        expires_ms: at(ttl_ms),
                        body: Body::Done(result),
                    }),
                };
                (change, Reply::Found(Some(found)))
            }
            Some(Ok(found)) => (Change::Keep, Reply::Found(Some(found))),
            None => (Change::Keep, Reply::Found(None)),
            Some(Err(body)) => return Err(wrong(key, &body, "an idempotency record")),
        },
        Op::Incr { by, window_ms } => {
            let (total, expires_ms) = counted(key, live, now, window_ms)?;
            let total = total.saturating_add(by);
            counter_write(total, expires_ms, now, Reply::Counter)
        }
        Op::IncrWithin {
            by,
            limit,
            window_ms,
        } => {
            let existed = live.is_some();
            let (total, expires_ms) = counted(key, live, now, window_ms)?;
            match total.checked_add(by).filter(|t| *t <= limit) {
                Some(total) => counter_write(total, expires_ms, now, |c| {
                    Reply::Admission(Admission::Admitted(c))
                }),
                None => {
                    let resets_in = if existed {
                        Duration::from_millis(expires_ms.saturating_sub(now))
                    } else {
                        Duration::ZERO
                    };
                    (
                        Change::Keep,
                        Reply::Admission(Admission::Refused(Counter { total, resets_in })),
                    )
                }
            }
        }
        Op::Put { value, ttl_ms } => (
            Change::Write(Record {
                expires_ms: at(ttl_ms),
                body: Body::Value(value),
            }),
            Reply::Unit,
        ),
        // An expired entry is removed too, but reported as absent.
        Op::Delete => (Change::Remove, Reply::Flag(live.is_some())),
    })
}

/// What an idempotency record means at `now`; the body back when it is another kind.
pub(crate) fn idem_state(record: Record, now: u64) -> Result<Idem, Body> {
    Ok(match record.body {
        Body::InFlight { lease_ms, claim } if lease_ms > now => Idem::InFlight {
            lapses_in: Duration::from_millis(lease_ms - now),
            claim,
        },
        Body::InFlight { claim, .. } => Idem::Lapsed(claim),
        Body::Held(b) => Idem::Held(b),
        Body::Done(b) => Idem::Done(b),
        other => return Err(other),
    })
}

/// Replaces an idempotency record (or nothing) with `body`, expiring at `expires_ms`.
fn idem_write(
    key: &str,
    live: Option<Record>,
    expires_ms: u64,
    body: Body,
) -> Result<(Change, Reply), StoreError> {
    if let Some(Record {
        body: other @ (Body::Counter(_) | Body::Value(_)),
        ..
    }) = live
    {
        return Err(wrong(key, &other, "an idempotency record"));
    }
    Ok((Change::Write(Record { expires_ms, body }), Reply::Unit))
}

/// A live idempotency record, for listing: what it means and when it expires; `None`
/// for a dead entry or one of another kind.
pub(crate) fn read_idem(current: Record, now: u64) -> Option<(Idem, Duration)> {
    if !current.live(now) {
        return None;
    }
    let left = current.remaining(now);
    idem_state(current, now).ok().map(|i| (i, left))
}

/// A live counter's total and expiry, or a fresh window's.
fn counted(
    key: &str,
    live: Option<Record>,
    now: u64,
    window_ms: u64,
) -> Result<(u64, u64), StoreError> {
    match live {
        None => Ok((0, now.saturating_add(window_ms))),
        Some(Record {
            body: Body::Counter(n),
            expires_ms,
        }) => Ok((n, expires_ms)),
        Some(other) => Err(wrong(key, &other.body, "a counter")),
    }
}

fn counter_write(
    total: u64,
    expires_ms: u64,
    now: u64,
    reply: impl FnOnce(Counter) -> Reply,
) -> (Change, Reply) {
    let record = Record {
        expires_ms,
        body: Body::Counter(total),
    };
    let counter = Counter {
        total,
        resets_in: record.remaining(now),
    };
    (Change::Write(record), reply(counter))
}

/// Checks one increment of an all-or-none batch without applying it: the counter as it
/// stands when the increment would pass the limit.
pub(crate) fn refuses(
    key: &str,
    by: u64,
    limit: Option<u64>,
    window_ms: u64,
    current: Option<Record>,
    now: u64,
) -> Result<Option<Counter>, StoreError> {
    let Some(limit) = limit else {
        // Still check the kind: a batch must not fail half-way through its writes.
        counted(key, current.filter(|r| r.live(now)), now, window_ms)?;
        return Ok(None);
    };
    match apply(
        key,
        Op::IncrWithin {
            by,
            limit,
            window_ms,
        },
        current,
        now,
    )?
    .1
    {
        Reply::Admission(Admission::Refused(c)) => Ok(Some(c)),
        _ => Ok(None),
    }
}

/// A live counter's total, for reads.
pub(crate) fn read_counter(
    key: &str,
    current: Option<Record>,
    now: u64,
) -> Result<u64, StoreError> {
    match current.filter(|r| r.live(now)) {
        None => Ok(0),
        Some(Record {
            body: Body::Counter(n),
            ..
        }) => Ok(n),
        Some(other) => Err(wrong(key, &other.body, "a counter")),
    }
}

/// A live value, for reads.
pub(crate) fn read_value(
    key: &str,
    current: Option<Record>,
    now: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    match current.filter(|r| r.live(now)) {
        None => Ok(None),
        Some(Record {
            body: Body::Value(v),
            ..
        }) => Ok(Some(v)),
        Some(other) => Err(wrong(key, &other.body, "a value")),
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
