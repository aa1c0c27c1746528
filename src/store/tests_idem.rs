//! Idempotency records beyond claim and finish, as every backend must keep them: a claim
//! whose lease lapsed is unknown (never free) until its record ends, a held key reports
//! what is known, only a retake claims either (exactly once), and an operator's
//! resolution settles only a held key.

use super::*;

const LEASE: Duration = Duration::from_secs(10);

fn claim(bytes: &[u8], retake: bool) -> IdemClaim<'_> {
    IdemClaim {
        claim: bytes,
        lease: LEASE,
        hold: 24 * 60 * MIN,
        retake,
    }
}

async fn a_lapsed_claim_is_unknown_and_never_free_until_its_record_ends(h: &Harness) {
    let s = &h.store;
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"first", false))
            .await
            .unwrap(),
        Idem::Started
    );
    h.advance(LEASE - Duration::from_millis(1));
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"second", false))
            .await
            .unwrap(),
        Idem::InFlight {
            lapses_in: Duration::from_millis(1),
            claim: b"first".to_vec()
        }
    );
    h.advance(Duration::from_millis(1));
    // The holder never settled it: whoever comes next learns the outcome is unknown.
    for _ in 0..2 {
        assert_eq!(
            s.idem_claim("idem:k", &claim(b"second", false))
                .await
                .unwrap(),
            Idem::Lapsed(b"first".to_vec())
        );
    }
    let listed = s.idem_list("idem:").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, Idem::Lapsed(b"first".to_vec()));
    h.advance(24 * 60 * MIN);
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"third", false))
            .await
            .unwrap(),
        Idem::Started
    );
}

async fn a_held_key_reports_what_is_known_and_only_a_retake_claims_it(h: &Harness) {
    let s = &h.store;
    s.idem_claim("idem:k", &claim(b"c", false)).await.unwrap();
    s.idem_hold("idem:k", b"timed out", MIN).await.unwrap();
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"c2", false)).await.unwrap(),
        Idem::Held(b"timed out".to_vec())
    );
    assert!(
        !s.idem_abandon("idem:k").await.unwrap(),
        "a held key is not released by abandon"
    );
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"c2", true)).await.unwrap(),
        Idem::Started
    );
    assert!(matches!(
        s.idem_claim("idem:k", &claim(b"c3", true)).await.unwrap(),
        Idem::InFlight { claim, .. } if claim == b"c2"
    ));
    // A finished key is never retaken.
    s.idem_finish("idem:k", b"done", MIN).await.unwrap();
    assert_eq!(
        s.idem_claim("idem:k", &claim(b"c4", true)).await.unwrap(),
        Idem::Done(b"done".to_vec())
    );
}

async fn concurrent_retakes_of_a_held_key_claim_it_exactly_once(h: &Harness) {
    h.store
        .idem_claim("idem:k", &claim(b"c", false))
        .await
        .unwrap();
    h.store.idem_hold("idem:k", b"unknown", MIN).await.unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { store.idem_claim("idem:k", &claim(b"r", true)).await })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Idem::Started => started += 1,
            Idem::InFlight { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

async fn resolving_settles_a_held_key_and_leaves_any_other_alone(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.idem_resolve("idem:none", None).await.unwrap(), None);
    // In flight: left alone.
    s.idem_claim("idem:a", &claim(b"a", false)).await.unwrap();
    assert!(matches!(
        s.idem_resolve("idem:a", None).await.unwrap(),
        Some(Idem::InFlight { .. })
    ));
    assert!(matches!(
        s.idem_claim("idem:a", &claim(b"x", false)).await.unwrap(),
        Idem::InFlight { .. }
    ));
    // Done: left alone.
    s.idem_finish("idem:a", b"r", MIN).await.unwrap();
    assert_eq!(
        s.idem_resolve("idem:a", None).await.unwrap(),
        Some(Idem::Done(b"r".to_vec()))
    );
    assert_eq!(
        s.idem_claim("idem:a", &claim(b"x", false)).await.unwrap(),
        Idem::Done(b"r".to_vec())
    );
    // Held, resolved as sent: it replays the operator's result.
    s.idem_claim("idem:b", &claim(b"b", false)).await.unwrap();
    s.idem_hold("idem:b", b"?", MIN).await.unwrap();
    assert_eq!(
        s.idem_resolve("idem:b", Some((b"sent", MIN)))
            .await
            .unwrap(),
        Some(Idem::Held(b"?".to_vec()))
    );
    assert_eq!(
        s.idem_claim("idem:b", &claim(b"x", false)).await.unwrap(),
        Idem::Done(b"sent".to_vec())
    );
    // Held, resolved as not sent: the next call claims it.
    s.idem_claim("idem:c", &claim(b"c", false)).await.unwrap();
    s.idem_hold("idem:c", b"?", MIN).await.unwrap();
    s.idem_resolve("idem:c", None).await.unwrap();
    assert_eq!(
        s.idem_claim("idem:c", &claim(b"x", false)).await.unwrap(),
        Idem::Started
    );
}

async fn a_listing_holds_every_idempotency_record_under_the_prefix(h: &Harness) {
    let s = &h.store;
    s.idem_claim("idem:t:a:1", &claim(b"one", false))
        .await
        .unwrap();
    s.idem_claim("idem:t:a:2", &claim(b"two", false))
        .await
        .unwrap();
    s.idem_hold("idem:t:a:2", b"held", MIN).await.unwrap();
    s.idem_claim("idem:t:b:3", &claim(b"three", false))
        .await
        .unwrap();
    s.idem_finish("idem:t:b:3", b"done", MIN).await.unwrap();
    s.idem_claim("idem:u:a:1", &claim(b"other tool", false))
        .await
        .unwrap();
    s.put("idem:t:value", b"not a record", MIN).await.unwrap();
    s.incr("idem:t:counter", 1, MIN).await.unwrap();
    let listed = s.idem_list("idem:t:").await.unwrap();
    let states: Vec<(&str, &Idem)> = listed.iter().map(|(k, i, _)| (k.as_str(), i)).collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(matches!(states[0], ("idem:t:a:1", Idem::InFlight { claim, .. }) if claim == b"one"));
    assert_eq!(states[1], ("idem:t:a:2", &Idem::Held(b"held".to_vec())));
    assert_eq!(states[2], ("idem:t:b:3", &Idem::Done(b"done".to_vec())));
    assert!(listed.iter().all(|(_, _, left)| *left <= 24 * 60 * MIN));
}

on_redis!(
    a_held_key_reports_what_is_known_and_only_a_retake_claims_it,
    concurrent_retakes_of_a_held_key_claim_it_exactly_once,
    resolving_settles_a_held_key_and_leaves_any_other_alone,
    a_listing_holds_every_idempotency_record_under_the_prefix,
);

conformance!(
    a_lapsed_claim_is_unknown_and_never_free_until_its_record_ends,
    a_held_key_reports_what_is_known_and_only_a_retake_claims_it,
    concurrent_retakes_of_a_held_key_claim_it_exactly_once,
    resolving_settles_a_held_key_and_leaves_any_other_alone,
    a_listing_holds_every_idempotency_record_under_the_prefix,
);
