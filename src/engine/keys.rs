//! Steps 7 and 7b of a call: claiming its idempotency key before anything is sent, and
//! settling it after. Also the reconcile GET that may prove a held write did not land,
//! and the audit intent written just before a write goes out.
//!
//! Owns turning what `idempotency` found into the call's result: a replay, a refusal that
//! says what to do (in flight, outcome unknown, a conflict), or the claim. What a key
//! means is `idempotency`'s; whether a failed send may have reached the upstream is
//! `upstream`'s word (`Sent::reached`).

use std::time::Duration;

use serde_json::{Value, json};

use super::result::Failure;
use super::steps::{replay, state_failure};
use super::{Call, Engine, Outgoing};
use crate::catalog::{DEFAULT_IDEM_TTL, Reconcile};
use crate::idempotency::{self, Begin, Claim, ClaimInfo, Claiming, Held, Scope, Stored};
use crate::redact::{DetectorSet, redact_value};

/// What step 7 found: a stored outcome to return, or the claim (if the call is keyed).
pub(super) enum Claimed {
    Replay(Result<Value, Failure>),
    New(Option<Claim>),
}

/// What a reconcile GET showed.
enum Reconciled {
    /// The write landed: what the GET showed of it.
    Landed(Value),
    /// It did not: the write may be sent.
    NotLanded,
    /// Nothing proven: why.
    Inconclusive(String),
}

impl Engine {
    /// Step 7: the call's key (the client's, else the tool's template), claimed. A held
    /// key is taken over only when sending again is safe (the upstream deduplicates) or
    /// a reconcile GET proves the write did not land.
    pub(super) async fn claim(
        &self,
        c: &mut Call<'_>,
        base: &reqwest::Url,
    ) -> Result<Claimed, Failure> {
        let Some(key) = super::steps::idempotency_key(c)? else {
            return Ok(Claimed::New(None));
        };
        c.result.idempotency_key = Some(key.clone());
        let tool = c.tool;
        let plan = tool.idempotency.as_ref();
        let ttl = plan.map_or(DEFAULT_IDEM_TTL, |p| p.ttl);
        let scope = plan.map_or(Scope::Actor, |p| p.scope);
        let reconcile = plan.and_then(|p| p.reconcile.as_ref());
        let retries = if tool.request.retryable(tool.dedupes()) {
            tool.request.retries
        } else {
            0
        };
        let lease = idempotency::lease(tool.request.timeout, retries);
        let now = self.clock.now_ms();
        let info = ClaimInfo {
            key,
            actor: c.result.actor.clone(),
            trace_id: c.trace.trace_id.clone(),
            args: c.digest().to_owned(),
            at_ms: now,
        };
        let store_key = idempotency::store_key(&tool.id, scope, &info.actor, &info.key);
        let store = self.store.as_ref();
        let begin =
            |retake| idempotency::begin(store, store_key.clone(), &info, lease, ttl, retake);
        // The first claim counts the call's limits in the same write (one disk sync); a
        // refusal leaves the key unclaimed and is step 8's answer.
        let breaker_can_refuse =
            tool.breaker.is_some() || c.catalog.breakers.contains_key(&tool.request.upstream.name);
        let (mut found, counted) = {
            let plan = c.catalog.limits.plan(&c.metered(), now);
            let incs = if breaker_can_refuse { &[] } else { plan.incs() };
            let how = Claiming {
                lease,
                ttl,
                retake: false,
            };
            let (found, counted) =
                idempotency::begin_counted(store, store_key.clone(), &info, how, incs)
                    .await
                    .map_err(state_failure)?;
            (found, counted.map(|counted| plan.judge(counted)))
        };
        if let Some(Err(_)) = counted {
            c.counted = counted;
            c.claimed = Some(info);
            return Ok(Claimed::New(None));
        }
        c.counted = counted;
        // A breaker (step 8a) may still refuse the call between the claim and step 8,
        // and a refused call must count against nothing: with one, step 8 counts.
        if breaker_can_refuse {
            c.counted = None;
        }
        // A reconcile GET waits one lease after the held call started: the upstream may
        // still be working on the original, and a GET before it finished would not see it.
        let reconcile_in = match &found {
            Begin::Unknown(held) if reconcile.is_some() && !tool.dedupes() => {
                let ready = held.call.at_ms.saturating_add(duration_ms(lease));
                Duration::from_millis(ready.saturating_sub(now))
            }
            _ => Duration::ZERO,
        };
        if let Begin::Unknown(held) = &found
            && same_args(&held.call, &info)
            && (tool.dedupes() || reconcile.is_some())
            && reconcile_in.is_zero()
        {
            let held = held.clone();
            found = begin(true).await.map_err(state_failure)?;
            if let Some(rec) = reconcile
                && let Begin::Claimed(claim) = found
            {
                found = match self.reconcile(c, base, rec).await {
                    Reconciled::NotLanded => {
                        tracing::info!(tool = %tool.id, "reconcile: the held write did not land; sending it");
                        Begin::Claimed(claim)
                    }
                    Reconciled::Landed(seen) => return self.landed(c, &claim, &info, seen).await,
                    Reconciled::Inconclusive(why) => {
                        let still = Held {
                            why: format!(
                                "{} (a retry's reconcile request did not settle it: {why})",
                                held.why
                            ),
                            ..held
                        };
                        if let Err(e) = idempotency::hold(store, &claim, &still).await {
                            tracing::error!(error = %e, tool = %tool.id, "could not hold a key again after an inconclusive reconcile; its claim lapses and the key is then held");
                        }
                        Begin::Unknown(still)
                    }
                };
            }
        }
        c.claimed = Some(info.clone());
        let upstream = &tool.request.upstream.name;
        match found {
            Begin::Claimed(claim) => Ok(Claimed::New(Some(claim))),
            Begin::Replay(stored) if stored.args != info.args => {
                let first = ClaimInfo {
                    actor: stored.actor.clone().unwrap_or_default(),
                    at_ms: stored.at_ms.unwrap_or(0),
                    ..ClaimInfo::default()
                };
                Err(conflict(&info, &first, now))
            }
            Begin::Replay(stored) => {
                self.metrics.replay(&tool.id);
                Ok(Claimed::Replay(replay(stored, &mut c.result)))
            }
            Begin::InFlight { by, .. } if !same_args(&by, &info) => Err(conflict(&info, &by, now)),
            Begin::InFlight { lapses_in, by } => {
                self.metrics.refusal(&tool.id, "in_flight");
                Err(Failure::Limited(idempotency::in_flight(
                    &info.key, lapses_in, &by, now,
                )))
            }
            Begin::Unknown(held) if !same_args(&held.call, &info) => {
                Err(conflict(&info, &held.call, now))
            }
            Begin::Unknown(held) => {
                self.metrics.refusal(&tool.id, "held");
                c.result.held = true;
                let mut msg = idempotency::unknown(&tool.id, upstream, &info.key, &held, now);
                if !reconcile_in.is_zero() {
                    msg = format!(
                        "{msg}. This tool can check it itself: retry in {} and a reconcile request will look whether the write landed (and send it only if it did not)",
                        crate::util::duration::human(reconcile_in)
                    );
                }
                Err(Failure::OutcomeUnknown(msg))
            }
        }
    }

    /// Step 7b: stores the outcome under the key, holds the key when the outcome is
    /// unknown, or releases it when nothing reached the upstream. Returns the outcome,
    /// with a note when the key is now held.
    pub(super) async fn settle(
        &self,
        c: &mut Call<'_>,
        claim: Option<Claim>,
        outcome: Result<Value, Failure>,
    ) -> Result<Value, Failure> {
        let Some(claim) = claim else { return outcome };
        let store = self.store.as_ref();
        let info = c.claimed.clone().unwrap_or_default();
        match c.result.status {
            // The upstream answered: this outcome is the key's for its whole TTL.
            Some(status) if status < 500 => {
                let stored = Stored {
                    status,
                    ok: outcome.as_ref().ok().cloned(),
                    error: outcome.as_ref().err().map(Failure::message),
                    trace_id: info.trace_id,
                    args: info.args,
                    actor: Some(info.actor),
                    at_ms: Some(info.at_ms),
                    key: Some(info.key),
                    settled_by: None,
                };
                if let Err(e) = idempotency::finish(store, &claim, &stored).await {
                    tracing::error!(error = %e, tool = %c.tool.id, "the write was sent but its idempotency record could not be stored; its claim lapses and the key is then held");
                }
                outcome
            }
            // Never reached the upstream: a retry may go at once.
            _ if !c.reached => {
                idempotency::abandon(store, &claim).await;
                outcome
            }
            // It may have reached the upstream and we do not know what happened.
            status => {
                let dedupes = c.tool.dedupes();
                if dedupes {
                    idempotency::abandon(store, &claim).await;
                } else {
                    let why = match (&outcome, status) {
                        (_, Some(s)) => {
                            format!("was answered with status {s} after the request had been sent")
                        }
                        (Err(f), None) => format!("got no answer ({})", f.message()),
                        (Ok(_), None) => "ended without an answer".to_owned(),
                    };
                    let held = Held {
                        call: info,
                        why,
                        status,
                    };
                    if let Err(e) = idempotency::hold(store, &claim, &held).await {
                        tracing::error!(error = %e, tool = %c.tool.id, "could not hold a key whose outcome is unknown; its claim lapses and the key is then held");
                    }
                    c.result.held = true;
                    tracing::warn!(tool = %c.tool.id, trace_id = %c.trace.trace_id, "write outcome unknown: idempotency key held");
                }
                outcome.map_err(|f| f.noted(&idempotency::held_note(&claim.key, dedupes)))
            }
        }
    }

    /// A reconcile GET proved the held write landed: its record becomes a success.
    async fn landed(
        &self,
        c: &mut Call<'_>,
        claim: &Claim,
        info: &ClaimInfo,
        seen: Value,
    ) -> Result<Claimed, Failure> {
        let result = json!({
            "idempotency_key": claim.key,
            "outcome": "sent",
            "detail": "an earlier call with this key ended with its outcome unknown; the tool's reconcile request shows that write landed, so it was not sent again",
            "observed": seen,
        });
        let stored = Stored {
            status: 200,
            ok: Some(result.clone()),
            error: None,
            trace_id: info.trace_id.clone(),
            args: info.args.clone(),
            actor: Some(info.actor.clone()),
            at_ms: Some(info.at_ms),
            key: Some(info.key.clone()),
            settled_by: Some("reconcile".to_owned()),
        };
        idempotency::finish(self.store.as_ref(), claim, &stored)
            .await
            .map_err(state_failure)?;
        tracing::info!(tool = %c.tool.id, "reconcile: the held write landed; not sending it again");
        self.metrics.replay(&c.tool.id);
        c.result.replayed = true;
        c.result.status = Some(200);
        Ok(Claimed::Replay(Ok(result)))
    }

    /// Sends the tool's reconcile GET and judges its reply.
    async fn reconcile(
        &self,
        c: &mut Call<'_>,
        base: &reqwest::Url,
        rec: &Reconcile,
    ) -> Reconciled {
        let tool = c.tool;
        let secrets = match tool.secrets.as_ref() {
            Ok(s) => s,
            Err(e) => return Reconciled::Inconclusive(e.to_string()),
        };
        let args = c.template_args().clone();
        let req = match (rec.request).render(&tool.id, &tool.templates, base, &args, secrets) {
            Ok(r) => r,
            Err(e) => return Reconciled::Inconclusive(e.to_string()),
        };
        if let Err(e) = c.catalog.egress.check(&req.url) {
            return Reconciled::Inconclusive(e.to_string());
        }
        let sent = (rec.request.upstream)
            .send_retrying(&tool.id, &req, rec.request.retries, &|_| {})
            .await;
        let reply = match sent.reply {
            Ok(r) => r,
            Err(e) => return Reconciled::Inconclusive(secrets.scrub(e.to_string())),
        };
        if reply.status == 404 {
            return Reconciled::NotLanded;
        }
        if !(200..300).contains(&reply.status) {
            return Reconciled::Inconclusive(format!("it answered status {}", reply.status));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
            return Reconciled::Inconclusive("its reply is not JSON".to_owned());
        };
        let want = match &rec.equals {
            None => None,
            Some(t) => {
                let ctx = minijinja::context! { args => args };
                match tool.templates.render_value(t, &ctx) {
                    Ok(v) => Some(v),
                    Err(e) => return Reconciled::Inconclusive(e.to_string()),
                }
            }
        };
        let nodes = rec.landed.select(&body);
        let hit = nodes
            .into_iter()
            .find(|n| want.as_ref().is_none_or(|w| json_eq(n, w)));
        match hit {
            None => Reconciled::NotLanded,
            Some(node) => {
                let mut seen = node.clone();
                redact_value(&mut seen, DetectorSet::ALL, &c.catalog.policy.redaction);
                Reconciled::Landed(seen)
            }
        }
    }

    /// Step 9b: a write (any method but GET, or a keyed call) leaves an audit record of
    /// intent before it is sent, so a kill between the send and the call's record still
    /// shows the write that may have happened.
    pub(super) fn intent(&self, c: &mut Call<'_>, out: &Outgoing<'_>) {
        let Some(audit) = &self.audit else { return };
        let method = &out.request.method;
        if *method == reqwest::Method::GET && c.result.idempotency_key.is_none() {
            return;
        }
        let intent = super::record::intent(c.tool, &c.args, &c.result, method.as_str());
        c.result.intent = audit.record(&intent);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether two calls of one key carry the same arguments (a record of an older version
/// has no digest: taken as the same).
fn same_args(first: &ClaimInfo, now: &ClaimInfo) -> bool {
    first.args.is_empty() || first.args == now.args
}

fn conflict(info: &ClaimInfo, first: &ClaimInfo, now: u64) -> Failure {
    Failure::InvalidArguments(idempotency::conflict(&info.key, first, now))
}

/// JSON equality that takes `10` and `10.0` as one number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}
