//! The shared store's wire protocol: one JSON line per store call ([`Req`]) and per
//! answer ([`Resp`]), bytes in hex, and the owner's side of each call ([`serve_one`]).
//!
//! Owns the shape of the messages and how they map to [`Store`] calls and back; it
//! knows nothing of sockets or of who owns the file (that is `shared.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::{Admission, Counter, Idem, Incr, Store, StoreError};

/// One store call on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Req {
    IdemClaim {
        key: String,
        claim: String,
        lease_ms: u64,
        hold_ms: u64,
        retake: bool,
    },
    IdemHold {
        key: String,
        held: String,
        ttl_ms: u64,
    },
    IdemResolve {
        key: String,
        result: Option<String>,
        ttl_ms: u64,
    },
    IdemList {
        prefix: String,
    },
    IdemFinish {
        key: String,
        result: String,
        ttl_ms: u64,
    },
    IdemAbandon {
        key: String,
    },
    Incr {
        key: String,
        by: u64,
        window_ms: u64,
    },
    IncrWithin {
        key: String,
        by: u64,
        limit: u64,
        window_ms: u64,
    },
    IncrAll {
        incs: Vec<Incr>,
    },
    GetCounter {
        key: String,
    },
    Put {
        key: String,
        value: String,
        ttl_ms: u64,
    },
    Get {
        key: String,
    },
    Delete {
        key: String,
    },
    Scan {
        prefix: String,
    },
    Sweep,
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Resp {
    Idem(IdemWire),
    Found(Option<IdemWire>),
    IdemEntries(Vec<(String, IdemWire, u64)>),
    Counter {
        total: u64,
        resets_in_ms: u64,
    },
    Refused {
        total: u64,
        resets_in_ms: u64,
    },
    Number(u64),
    Counters(Vec<(u64, u64)>),
    RefusedAt {
        index: usize,
        total: u64,
        resets_in_ms: u64,
    },
    Value(Option<String>),
    Bool(bool),
    Entries(Vec<(String, String)>),
    Unit,
    Error(String),
}

/// An [`Idem`] on the wire, bytes in hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum IdemWire {
    Started,
    InFlight { lapses_in_ms: u64, claim: String },
    Lapsed { bytes: String },
    Held { bytes: String },
    Done { bytes: String },
}

impl From<Idem> for IdemWire {
    fn from(i: Idem) -> Self {
        match i {
            Idem::Started => Self::Started,
            Idem::InFlight { lapses_in, claim } => Self::InFlight {
                lapses_in_ms: millis(lapses_in),
                claim: hex::encode(claim),
            },
            Idem::Lapsed(b) => Self::Lapsed {
                bytes: hex::encode(b),
            },
            Idem::Held(b) => Self::Held {
                bytes: hex::encode(b),
            },
            Idem::Done(b) => Self::Done {
                bytes: hex::encode(b),
            },
        }
    }
}

impl IdemWire {
    pub(super) fn into_idem(self) -> Result<Idem, StoreError> {
        Ok(match self {
            Self::Started => Idem::Started,
            Self::InFlight {
                lapses_in_ms,
                claim,
            } => Idem::InFlight {
                lapses_in: Duration::from_millis(lapses_in_ms),
                claim: unhex(&claim)?,
            },
            Self::Lapsed { bytes } => Idem::Lapsed(unhex(&bytes)?),
            Self::Held { bytes } => Idem::Held(unhex(&bytes)?),
            Self::Done { bytes } => Idem::Done(unhex(&bytes)?),
        })
    }
}

pub(super) async fn serve_one(s: &dyn Store, req: Req) -> Result<Resp, StoreError> {
    let ms = Duration::from_millis;
    Ok(match req {
        Req::IdemClaim {
            key,
            claim,
            lease_ms,
            hold_ms,
            retake,
        } => {
            let claim = unhex(&claim)?;
            let c = super::IdemClaim {
                claim: &claim,
                lease: ms(lease_ms),
                hold: ms(hold_ms),
                retake,
            };
            Resp::Idem(s.idem_claim(&key, &c).await?.into())
        }
        Req::IdemHold { key, held, ttl_ms } => {
            s.idem_hold(&key, &unhex(&held)?, ms(ttl_ms)).await?;
            Resp::Unit
        }
        Req::IdemResolve {
            key,
            result,
            ttl_ms,
        } => {
            let result = result.as_deref().map(unhex).transpose()?;
            let to = result.as_deref().map(|r| (r, ms(ttl_ms)));
            Resp::Found(s.idem_resolve(&key, to).await?.map(IdemWire::from))
        }
        Req::IdemList { prefix } => Resp::IdemEntries(
            s.idem_list(&prefix)
                .await?
                .into_iter()
                .map(|(k, i, left)| (k, i.into(), millis(left)))
                .collect(),
        ),
        Req::IdemFinish {
            key,
            result,
            ttl_ms,
        } => {
            s.idem_finish(&key, &unhex(&result)?, ms(ttl_ms)).await?;
            Resp::Unit
        }
        Req::IdemAbandon { key } => Resp::Bool(s.idem_abandon(&key).await?),
        Req::Incr { key, by, window_ms } => counter(s.incr(&key, by, ms(window_ms)).await?),
        Req::IncrWithin {
            key,
            by,
            limit,
            window_ms,
        } => match s.incr_within(&key, by, limit, ms(window_ms)).await? {
            Admission::Admitted(c) => counter(c),
            Admission::Refused(c) => Resp::Refused {
                total: c.total,
                resets_in_ms: millis(c.resets_in),
            },
        },
        Req::IncrAll { incs } => match s.incr_all(&incs).await? {
            Ok(cs) => Resp::Counters(cs.iter().map(|c| (c.total, millis(c.resets_in))).collect()),
            Err((index, c)) => Resp::RefusedAt {
                index,
                total: c.total,
                resets_in_ms: millis(c.resets_in),
            },
        },
        Req::GetCounter { key } => Resp::Number(s.get_counter(&key).await?),
        Req::Put { key, value, ttl_ms } => {
            s.put(&key, &unhex(&value)?, ms(ttl_ms)).await?;
            Resp::Unit
        }
        Req::Get { key } => Resp::Value(s.get(&key).await?.map(hex::encode)),
        Req::Delete { key } => Resp::Bool(s.delete(&key).await?),
        Req::Scan { prefix } => Resp::Entries(
            s.scan_prefix(&prefix)
                .await?
                .into_iter()
                .map(|(k, v)| (k, hex::encode(v)))
                .collect(),
        ),
        Req::Sweep => Resp::Number(u64::try_from(s.sweep().await?).unwrap_or(u64::MAX)),
    })
}

fn counter(c: Counter) -> Resp {
    Resp::Counter {
        total: c.total,
        resets_in_ms: millis(c.resets_in),
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn unhex(s: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(s).map_err(|e| StoreError::InvalidArgument(format!("bad hex value: {e}")))
}

pub(super) fn unexpected(r: &Resp) -> StoreError {
    StoreError::Stopped(format!("unexpected answer from the state owner: {r:?}"))
}

pub(super) fn to_counter(r: Resp) -> Result<Counter, StoreError> {
    match r {
        Resp::Counter {
            total,
            resets_in_ms,
        } => Ok(Counter {
            total,
            resets_in: Duration::from_millis(resets_in_ms),
        }),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn to_bool(r: Resp) -> Result<bool, StoreError> {
    match r {
        Resp::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn to_unit(r: Resp) -> Result<(), StoreError> {
    match r {
        Resp::Unit => Ok(()),
        other => Err(unexpected(&other)),
    }
}
