//! Tokens: issuing, verifying, expiry on the identity's clock and the leeway, remembered tokens.

use super::*;
use std::time::UNIX_EPOCH;

fn identity(clock: &Clock, audience: &str) -> Identity {
    let (key, _) = keygen("k1").unwrap();
    let spec: IdentitySpec = serde_saphyr::from_str(&format!("audience: {audience}\n")).unwrap();
    let vars = Vars::default().with(DEFAULT_KEY_ENV, &key);
    Identity::build(&spec, &vars, Path::new("."))
        .unwrap()
        .with_clock(clock.clone())
}

fn token(id: &Identity, ttl_s: u64) -> String {
    id.issue(&TokenRequest {
        subject: "agent:a".into(),
        scopes: vec!["*".into()],
        ttl: Duration::from_secs(ttl_s),
        ..TokenRequest::default()
    })
    .unwrap()
}

#[test]
fn a_token_expires_on_the_identity_clock_once_past_the_leeway() {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let id = identity(&clock, "mcpd-test");
    let t = token(&id, 60);
    assert_eq!(id.actor_for(&t).unwrap().subject, "agent:a");
    clock.advance(Duration::from_secs(60) + DEFAULT_LEEWAY);
    assert!(
        id.actor_for(&t).is_ok(),
        "still within the clock-skew leeway"
    );
    clock.advance(Duration::from_secs(1));
    // Both the cached actor and a fresh verification say it expired.
    let e = id.actor_for(&t).unwrap_err();
    assert!(matches!(e, TokenError::Expired(_)), "{e}");
    let e = id.verify(&t).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the token expired 6 s ago; issue a new one with 'mcpd token issue' and update the host's config"
    );
}

#[test]
fn many_callers_tokens_are_each_verified_once_and_a_forged_one_is_never_remembered() {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let id = identity(&clock, "mcpd-test");
    let (a, b) = (token(&id, 60), token(&id, 120));
    for _ in 0..3 {
        assert_eq!(id.actor_for(&a).unwrap().subject, "agent:a");
        assert_eq!(id.actor_for(&b).unwrap().subject, "agent:a");
    }
    assert_eq!(id.cache.lock().unwrap().len(), 2);
    // The same claims with another signature: refused, and not remembered.
    let (head, _) = a.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", B64.encode([7u8; 64]));
    assert!(matches!(
        id.actor_for(&forged),
        Err(TokenError::BadSignature)
    ));
    assert_eq!(id.cache.lock().unwrap().len(), 2);
    // Each expires on its own: `a` after 60 s (and the leeway), `b` still good.
    clock.advance(Duration::from_secs(61) + DEFAULT_LEEWAY);
    assert!(matches!(id.actor_for(&a), Err(TokenError::Expired(_))));
    assert!(id.actor_for(&b).is_ok());
}

#[test]
fn identity_leeway_sets_how_long_after_exp_a_token_is_accepted() {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let (key, _) = keygen("k1").unwrap();
    let vars = Vars::default().with(DEFAULT_KEY_ENV, &key);
    let with = |leeway: &str| {
        let spec: IdentitySpec =
            serde_saphyr::from_str(&format!("audience: a\nleeway: {leeway}\n")).unwrap();
        Identity::build(&spec, &vars, Path::new("."))
    };
    let strict = with("0s").unwrap().with_clock(clock.clone());
    let loose = with("30s").unwrap().with_clock(clock.clone());
    let t = token(&strict, 60);
    clock.advance(Duration::from_secs(60));
    assert!(strict.verify(&t).is_ok(), "valid up to its exp");
    clock.advance(Duration::from_secs(1));
    assert!(matches!(strict.verify(&t), Err(TokenError::Expired(_))));
    assert!(loose.verify(&t).is_ok());
    clock.advance(Duration::from_secs(30));
    assert!(matches!(loose.verify(&t), Err(TokenError::Expired(_))));
    let e = with("10m").unwrap_err().to_string();
    assert_eq!(
        e,
        "identity.leeway: '10m' is more than the 5m a clock can reasonably be off"
    );
}

#[test]
fn an_expired_token_for_another_audience_is_reported_as_expired() {
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let other = identity(&clock, "mcpd-other");
    let t = token(&other, 60);
    let ours = identity(&clock, "mcpd-test");
    // The same key signed it, as the library's own order of checks would find.
    let ours = Identity {
        verifiers: other.verifiers.clone(),
        ..ours
    };
    assert!(matches!(
        ours.verify(&t),
        Err(TokenError::WrongAudience { .. })
    ));
    clock.advance(Duration::from_secs(3600));
    assert!(matches!(ours.verify(&t), Err(TokenError::Expired(_))));
}
