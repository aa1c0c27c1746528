//! Records: every kind survives encoding, old and damaged bytes, kinds that do not mix.

use super::*;

#[test]
fn every_kind_of_record_survives_encoding() {
    for body in [
        Body::InFlight {
            lease_ms: 1_700_000_000_999,
            claim: b"{\"actor\":\"a\"}".to_vec(),
        },
        Body::InFlight {
            lease_ms: 0,
            claim: vec![],
        },
        Body::Held(b"{\"why\":\"timeout\"}".to_vec()),
        Body::Done(b"{\"ok\":true}".to_vec()),
        Body::Counter(u64::MAX - 3),
        Body::Value(vec![]),
        Body::Value(vec![0, 1, 2]),
    ] {
        let r = Record {
            expires_ms: 1_700_000_000_123,
            body,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
    }
}

#[test]
fn a_claim_written_before_leases_lapses_with_its_record() {
    let mut old = vec![TAG_IN_FLIGHT];
    old.extend_from_slice(&77u64.to_le_bytes());
    let r = Record::decode(&old).unwrap();
    assert_eq!(
        r.body,
        Body::InFlight {
            lease_ms: 77,
            claim: vec![]
        }
    );
}

#[test]
fn unknown_or_truncated_bytes_do_not_decode() {
    assert_eq!(Record::decode(&[]), None);
    assert_eq!(Record::decode(&[TAG_VALUE, 1, 2]), None);
    assert_eq!(Record::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    assert_eq!(
        Record::decode(&[TAG_CLAIM, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        None
    );
    assert_eq!(
        Record::decode(&[TAG_COUNTER, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        None
    );
}

#[test]
fn a_counter_is_not_an_idempotency_record() {
    let current = Some(Record {
        expires_ms: 10,
        body: Body::Counter(1),
    });
    let op = Op::IdemBegin {
        lease_ms: 5,
        hold_ms: 5,
        claim: vec![],
        retake: false,
    };
    let err = apply("k", op, current, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "state key 'k' holds a counter, not an idempotency record: keys of different kinds must not share a name"
    );
}

#[test]
fn an_expired_entry_of_another_kind_is_simply_replaced() {
    let current = Some(Record {
        expires_ms: 10,
        body: Body::Value(vec![1]),
    });
    let (change, reply) = apply(
        "k",
        Op::Incr {
            by: 2,
            window_ms: 5,
        },
        current,
        10,
    )
    .unwrap();
    assert_eq!(
        change,
        Change::Write(Record {
            expires_ms: 15,
            body: Body::Counter(2)
        })
    );
    assert_eq!(
        reply,
        Reply::Counter(Counter {
            total: 2,
            resets_in: Duration::from_millis(5)
        })
    );
}
