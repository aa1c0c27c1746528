//! The meaning of keys on an in-memory store and a manual clock: claimed, replayed,
//! held when the outcome is unknown (also when the holder died), whose key it is, and
//! what operators see and resolve.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::operator::{self, Resolution, ResolveError, State};
use super::*;
use crate::store::MemoryStore;
use crate::util::Clock;

const T0: u64 = 1_750_000_000_000;
const TTL: Duration = Duration::from_secs(24 * 3600);
const LEASE: Duration = Duration::from_secs(10);

fn store() -> (Arc<MemoryStore>, Clock) {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_millis(T0));
    (Arc::new(MemoryStore::with_clock(clock.clone())), clock)
}

fn info(key: &str, actor: &str, args: &str) -> ClaimInfo {
    ClaimInfo {
        key: key.to_owned(),
        actor: actor.to_owned(),
        trace_id: "t1".to_owned(),
        args: args.to_owned(),
        at_ms: T0,
    }
}

async fn claim(s: &MemoryStore, scope: Scope, i: &ClaimInfo, retake: bool) -> Begin {
    let k = store_key("order.place", scope, &i.actor, &i.key);
    begin(s, k, i, LEASE, TTL, retake).await.unwrap()
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_saying_what_a_key_may_hold() {
    assert_eq!(check_key("order-42"), Ok(()));
    for bad in ["", "tab\there", &"k".repeat(MAX_KEY + 1)] {
        assert_eq!(check_key(bad), Err(IdempotencyError::InvalidKey), "{bad}");
    }
    assert_eq!(
        IdempotencyError::InvalidKey.to_string(),
        "idempotency key must be 1 to 200 printable ASCII characters (it is sent as the Idempotency-Key header)"
    );
}

#[test]
fn a_lease_covers_every_attempt_its_backoff_and_a_margin() {
    assert_eq!(lease(Duration::from_secs(5), 0), Duration::from_secs(10));
    assert_eq!(
        lease(Duration::from_secs(5), 2),
        Duration::from_millis(15_000 + 100 + 200 + 5_000)
    );
}

#[test]
fn a_tool_scoped_key_is_one_for_every_actor_and_an_actor_scoped_key_is_not() {
    let a = store_key("order.place", Scope::Tool, "agent:a", "ord-7");
    let b = store_key("order.place", Scope::Tool, "agent:b", "ord-7");
    assert_eq!(a, b);
    let a = store_key("order.place", Scope::Actor, "agent:a", "ord-7");
    let b = store_key("order.place", Scope::Actor, "agent:b", "ord-7");
    assert_ne!(a, b);
}

#[tokio::test]
async fn an_unknown_outcome_holds_the_key_until_a_retake_or_an_operator() {
    let (s, _) = store();
    let first = info("ord-7", "agent:a", "d1");
    let Begin::Claimed(c) = claim(&s, Scope::Actor, &first, false).await else {
        panic!("claimed");
    };
    let held = Held {
        call: first.clone(),
        why: "got no answer".to_owned(),
        status: None,
    };
    hold(s.as_ref(), &c, &held).await.unwrap();
    let Begin::Unknown(found) = claim(&s, Scope::Actor, &first, false).await else {
        panic!("held");
    };
    assert_eq!(found, held);
    // An operator resolves it as sent: repeats get a success naming who said so.
    let e = operator::resolve(
        s.as_ref(),
        "order.place",
        "ord-7",
        None,
        Resolution::SentOk,
        "user:ops",
        T0 + 1,
    )
    .await
    .unwrap();
    assert_eq!(e.owner, "agent:a");
    let Begin::Replay(stored) = claim(&s, Scope::Actor, &first, false).await else {
        panic!("replay");
    };
    assert_eq!(stored.status, 200);
    assert_eq!(
        stored.settled_by.as_deref(),
        Some("operator user:ops: sent-ok")
    );
    assert_eq!(stored.ok.unwrap()["outcome"], "sent");
}

#[tokio::test]
async fn a_holder_that_died_leaves_its_key_held_after_the_lease_never_free() {
    let (s, clock) = store();
    let first = info("ord-8", "agent:a", "d1");
    assert!(matches!(
        claim(&s, Scope::Actor, &first, false).await,
        Begin::Claimed(_)
    ));
    let Begin::InFlight { lapses_in, by } = claim(&s, Scope::Actor, &first, false).await else {
        panic!("in flight");
    };
    assert_eq!((lapses_in, by), (LEASE, first.clone()));
    clock.advance(LEASE);
    let Begin::Unknown(held) = claim(&s, Scope::Actor, &first, false).await else {
        panic!("held");
    };
    assert_eq!(held.call, first);
    assert!(held.why.contains("stopped"), "{}", held.why);
    // Listed as held; resolved as not sent, the next call claims it.
    let listed = operator::list(s.as_ref(), Some("order.place"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state.word(), "held");
    assert_eq!(listed[0].key, "ord-8");
    operator::resolve(
        s.as_ref(),
        "order.place",
        "ord-8",
        Some("agent:a"),
        Resolution::NotSent,
        "user:ops",
        T0,
    )
    .await
    .unwrap();
    assert!(matches!(
        claim(&s, Scope::Actor, &first, false).await,
        Begin::Claimed(_)
    ));
}

#[tokio::test]
async fn only_a_held_key_is_resolved_and_several_holders_need_an_actor() {
    let (s, _) = store();
    let err = operator::resolve(
        s.as_ref(),
        "order.place",
        "nope",
        None,
        Resolution::NotSent,
        "o",
        T0,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
    let a = info("ord-9", "agent:a", "d1");
    claim(&s, Scope::Actor, &a, false).await;
    let err = operator::resolve(
        s.as_ref(),
        "order.place",
        "ord-9",
        None,
        Resolution::NotSent,
        "o",
        T0,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("still in flight"), "{err}");
    // Two actors each hold their own 'ord-9'.
    let b = info("ord-9", "agent:b", "d1");
    for i in [&a, &b] {
        let k = store_key("order.place", Scope::Actor, &i.actor, &i.key);
        s.idem_hold(
            &k,
            &serde_json::to_vec(&Held {
                call: i.clone(),
                why: "w".into(),
                status: Some(503),
            })
            .unwrap(),
            TTL,
        )
        .await
        .unwrap();
    }
    let err = operator::resolve(
        s.as_ref(),
        "order.place",
        "ord-9",
        None,
        Resolution::NotSent,
        "o",
        T0,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "several actors hold idempotency key 'ord-9' (agent:a, agent:b); name one with --actor"
    );
    let listed = operator::list(s.as_ref(), None).await.unwrap();
    assert!(listed.iter().all(|e| e.state == State::Held("w".into())));
}

#[test]
fn the_words_say_what_happened_how_long_ago_and_what_to_do() {
    let mut call = info("ord-1", "agent:a", "d1");
    call.at_ms = T0 - 180_000;
    let held = Held {
        call: call.clone(),
        why: "got no answer (upstream 'orders' did not answer within 300ms)".into(),
        status: None,
    };
    let msg = unknown("order.place", "orders", "ord-1", &held, T0);
    assert!(msg.starts_with("outcome unknown: an earlier call of order.place with idempotency key 'ord-1' (by agent:a, 3 min ago, trace t1) got no answer"), "{msg}");
    assert!(msg.contains("will not send this write again"), "{msg}");
    assert!(
        msg.contains("mcpd idempotency resolve 'ord-1' --tool order.place --sent-ok"),
        "{msg}"
    );
    let msg = conflict("ord-1", &call, T0);
    assert!(
        msg.contains("'ord-1' was already used with other arguments (by agent:a, 3 min ago"),
        "{msg}"
    );
    assert!(msg.contains("Do not retry it under a new key"), "{msg}");
    assert!(!msg.contains("use a new key"), "{msg}");
    let msg = in_flight("ord-1", Duration::from_secs(42), &call, T0);
    assert!(
        msg.contains("still in flight (by agent:a, 3 min ago"),
        "{msg}"
    );
    assert!(msg.contains("within 42 s"), "{msg}");
}
