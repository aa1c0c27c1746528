use super::*;
use crate::config::policy::{EmailStyle, PanStyle};
use serde_json::json;

fn all(s: &str) -> (String, usize) {
    Redactor::all().redact_text(s)
}

fn style(email: EmailStyle, pan: PanStyle) -> RedactionSpec {
    RedactionSpec {
        email,
        pan,
        ..RedactionSpec::default()
    }
}

#[test]
fn emails_keep_first_letter_and_domain() {
    assert_eq!(mask_str("jane.doe@example.com"), "j***@example.com");
}

#[test]
fn non_emails_are_fully_masked() {
    assert_eq!(mask_str("4111111111111111"), "***");
    let mut v = json!(4111111111111111u64);
    assert!(mask_value(&mut v));
    assert_eq!(v, json!("***"));
}

#[test]
fn null_stays_null() {
    let mut v = Value::Null;
    assert!(!mask_value(&mut v));
    assert_eq!(v, Value::Null);
}

#[test]
fn emails_inside_text_are_masked_and_counted() {
    let (t, n) = mask_emails_in_text(
        "'/name': \"ann@example.com\" does not match; cc bob.x@corp.example.org.",
    );
    assert_eq!(
        t,
        "'/name': \"a***@example.com\" does not match; cc b***@corp.example.org."
    );
    assert_eq!(n, 2);
    assert_eq!(
        mask_emails_in_text("no at sign"),
        ("no at sign".to_owned(), 0)
    );
    assert_eq!(mask_emails_in_text("@handle and a@b").1, 0);
}

#[test]
fn things_that_are_not_emails_are_left_alone() {
    for s in [
        "user@localhost is local",
        "ping x@10.0.0.1 now",
        "@ann said hi",
        "a @ b.com",
        "meet me @ 5pm.ok",
        "ann@.com",
    ] {
        assert_eq!(all(s), (s.to_owned(), 0), "{s}");
    }
}

#[test]
fn full_email_style_keeps_the_punctuation_around_the_address() {
    let full = style(EmailStyle::Full, PanStyle::Last4);
    let (t, n) = redact_text(
        "write to ann@example.com, or \"bob@example.com\".",
        Detector::Email.into(),
        &full,
    );
    assert_eq!(t, "write to ***, or \"***\".");
    assert_eq!(n, 2);
}

#[test]
fn luhn_valid_cards_keep_their_last_four() {
    for card in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
    ] {
        let (t, n) = all(&format!("card {card} on file"));
        assert_eq!(
            (t.as_str(), n),
            ("card ************1111 on file", 1),
            "{card}"
        );
    }
}

#[test]
fn amex_and_nineteen_digit_groupings_are_cards_too() {
    assert_eq!(
        all("amex 3782 822463 10005."),
        ("amex ***********0005.".to_owned(), 1)
    );
    assert_eq!(
        all("card 6011-0009-9013-9424-009"),
        ("card ***************4009".to_owned(), 1)
    );
}

#[test]
fn numbers_failing_luhn_are_left_alone() {
    let (t, n) = all("order 4111111111111112 and id 1234567890123");
    assert_eq!(n, 0);
    assert_eq!(t, "order 4111111111111112 and id 1234567890123");
    let mut v = json!({"id": 4111111111111112u64, "card": 4111111111111111u64});
    assert_eq!(Redactor::all().redact_value(&mut v), 1);
    assert_eq!(
        v,
        json!({"id": 4111111111111112u64, "card": "************1111"})
    );
}

#[test]
fn a_card_followed_by_more_numbers_is_still_masked() {
    assert_eq!(
        all("card 4111 1111 1111 1111 2025 exp"),
        ("card ************1111 2025 exp".to_owned(), 1)
    );
    assert_eq!(
        all("qty 2 4111-1111-1111-1111"),
        ("qty 2 ************1111".to_owned(), 1)
    );
}

/// Regression: the first detector joined `2025-08-01 2025-08-31` into the 16 digits
/// `2025080120250831`, which pass the Luhn check, and masked an export's date range.
#[test]
fn dates_times_and_long_ids_are_not_cards() {
    for s in [
        "from 2025-08-01 2025-08-31 ok",
        "2025-08-01T10:00:00Z 2025-08-31T10:00:00Z",
        "call 0800 123 4567 or 0800 765 4321",
        "ref 41111111111111110000",
        "id 4111111111111112x",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
    ] {
        assert_eq!(all(s), (s.to_owned(), 0), "{s}");
    }
}

#[test]
fn full_pan_style_hides_every_digit() {
    let (t, _) = redact_text(
        "4111 1111 1111 1111",
        Detector::Pan.into(),
        &style(EmailStyle::Partial, PanStyle::Full),
    );
    assert_eq!(t, "***");
}

#[test]
fn secrets_are_replaced() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let cases = [
        (
            "Authorization: Bearer abcdef123456789".to_owned(),
            "Authorization: Bearer [REDACTED]",
        ),
        (
            "authorization: bearer abcdef123456789".to_owned(),
            "authorization: bearer [REDACTED]",
        ),
        (format!("token={jwt};"), "token=[REDACTED];"),
        (format!("the token is {jwt}."), "the token is [REDACTED]."),
        (
            "key sk-live1234567890abcdefXYZ here".to_owned(),
            "key [REDACTED] here",
        ),
        (
            "gh ghp_16C7e42F292c6912E7710c838347Ae178B4a ok".to_owned(),
            "gh [REDACTED] ok",
        ),
        (
            "slack xoxb-1234567890-abcdefghij".to_owned(),
            "slack [REDACTED]",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE".to_owned(), "aws [REDACTED]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----".to_owned(),
            "[REDACTED]",
        ),
        (
            "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg (cut off".to_owned(),
            "key: [REDACTED]",
        ),
    ];
    for (input, want) in cases {
        let (t, n) = all(&input);
        assert_eq!(t, want, "{input}");
        assert_eq!(n, 1, "{input}");
    }
}

/// Regression: the first detector stopped at a certificate and let the key after it out.
#[test]
fn a_private_key_after_a_certificate_is_still_found() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIEow\n-----END PRIVATE KEY-----\ntail";
    assert_eq!(
        all(pem),
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n[REDACTED]\ntail"
                .to_owned(),
            1
        )
    );
}

#[test]
fn secret_lookalikes_in_prose_are_left_alone() {
    for s in [
        "the bearer instrument is payable",
        "Bearer short",
        "a task-1234567890abcdefghij id",
        "desk_live_1234567890abcdefghij",
        "AKIA is a prefix; AKIAIOSFODNN7EXAMPLE1 is too long",
        "eyJ.not.a.token",
    ] {
        assert_eq!(all(s), (s.to_owned(), 0), "{s}");
    }
}

/// Regression: the first detector lost its place after a non-ASCII character.
#[test]
fn text_after_non_ascii_is_still_scanned() {
    assert_eq!(
        all("Bearer abc é Bearer longtoken1234 — écrire à zoë@exemple.fr"),
        (
            "Bearer abc é Bearer [REDACTED] — écrire à z***@exemple.fr".to_owned(),
            2
        )
    );
}

#[test]
fn emails_in_values_are_masked_per_style() {
    let mut v = json!({"who": "Contact ann@example.com now", "n": 3});
    assert_eq!(Redactor::all().redact_value(&mut v), 1);
    assert_eq!(v["who"], "Contact a***@example.com now");
    let full = Redactor::new([Detector::Email], &style(EmailStyle::Full, PanStyle::Last4));
    let (t, _) = full.redact_text("mail ann@example.com.");
    assert_eq!(t, "mail ***.");
}

#[test]
fn only_the_chosen_detectors_run() {
    let text = "ann@example.com 4111111111111111 Bearer abcdef123456789";
    let (t, n) = redact_text(text, Detector::Pan.into(), &RedactionSpec::default());
    assert_eq!(
        (t.as_str(), n),
        ("ann@example.com ************1111 Bearer abcdef123456789", 1)
    );
    assert_eq!(
        redact_text(text, DetectorSet::NONE, &RedactionSpec::default()),
        (text.to_owned(), 0)
    );
}

#[test]
fn values_and_keys_count_every_replacement() {
    let mut v = json!({
        "ann@example.com": ["bob@example.com and eve@example.com", 4111111111111111u64],
        "nested": {"token": "Bearer abcdef123456789", "n": 12, "ok": true, "none": null}
    });
    assert_eq!(Redactor::all().redact_value(&mut v), 5);
    assert_eq!(
        v,
        json!({
            "a***@example.com": ["b***@example.com and e***@example.com", "************1111"],
            "nested": {"token": "Bearer [REDACTED]", "n": 12, "ok": true, "none": null}
        })
    );
}

/// Regression (issue 14, item 3): keys were never scanned.
#[test]
fn keys_holding_pii_are_masked_and_keys_that_mask_alike_keep_their_values() {
    let mut v = json!({
        "jane@example.com": 1,
        "joe@example.com": 2,
        "4111 1111 1111 1111": {"5500005555555559": "x"},
        "plain": 3
    });
    assert_eq!(Redactor::all().redact_value(&mut v), 4);
    assert_eq!(
        v,
        json!({
            "j***@example.com": 1,
            "j***@example.com (2)": 2,
            "************1111": {"************5559": "x"},
            "plain": 3
        })
    );
}

/// Regression (issue 14, item 3): letters next to the digits hid the card.
#[test]
fn cards_glued_to_letters_are_cards_when_they_pass_luhn() {
    assert_eq!(
        all("x4111111111111111x sku A4111111111111111 id 4111111111111111x"),
        (
            "x************1111x sku A************1111 id ************1111x".to_owned(),
            3
        )
    );
}

/// Regression (found by the property test in tests/pii.rs): the partial mask keeps an
/// address's domain, and a card number starting in it survived.
#[test]
fn a_card_number_starting_in_an_addresses_domain_is_masked_too() {
    assert_eq!(
        all("jane@x4111111111111111.com"),
        ("j***@x************1111.com".to_owned(), 2)
    );
    assert_eq!(
        all("Kc+@\u{e9}u1003\u{ad}\u{2012}\u{1680}2696\u{2010}\u{ff0d}95105.com end"),
        ("K***@\u{e9}u*********5105.com end".to_owned(), 2)
    );
}

/// Regression (found by the property test in tests/pii.rs): a card number as an
/// address's local part left its last digits as a new address's local part, so a
/// second pass found something in the first one's output.
#[test]
fn a_card_number_as_an_addresses_local_part_is_masked_as_the_address() {
    for (text, masked) in [
        ("4111111111111111@x.com", "4***@x.com"),
        ("1000000000009@R.io end", "1***@R.io end"),
        ("4111 1111 1111 1111@x.com", "4***@x.com"),
    ] {
        assert_eq!(all(text), (masked.to_owned(), 1), "{text}");
        assert_eq!(all(masked).1, 0, "{masked}");
    }
}

/// Hex digests and trace ids hold long runs of digits; they are not cards.
#[test]
fn digits_inside_a_trace_id_or_digest_are_no_card() {
    for token in [
        "ab4111111111111111cdef0123456789",
        "4111111111111111aaaabbbbccccddddeeeeffff",
        "trace 00000000004111111111111111000000",
    ] {
        assert_eq!(all(token), (token.to_owned(), 0), "{token}");
    }
    // One character more and it is no digest: the card is found.
    assert_eq!(all("ab4111111111111111cdef0123456789a").1, 1);
}

/// Regression (issue 14, item 3): a no-break space or an en dash between groups.
#[test]
fn cards_grouped_with_unicode_spaces_dashes_or_json_escapes_are_cards() {
    for card in [
        "4111\u{a0}1111\u{a0}1111\u{a0}1111",
        "4111\u{202f}1111\u{202f}1111\u{202f}1111",
        "4111\u{2013}1111\u{2013}1111\u{2013}1111",
        "4111 1111-1111\u{3000}1111",
        "4111\\u00a01111\\u00a01111\\u00a01111",
        "4111\\t1111\\t1111\\t1111",
        "41\u{200b}11 1111 1111 1111",
    ] {
        let (t, n) = all(&format!("card {card}."));
        assert_eq!((t.as_str(), n), ("card ************1111.", 1), "{card:?}");
    }
}

/// Regression (issue 14, item 4): an upstream's 404 echoed the encoded request path.
#[test]
fn percent_encoded_pii_is_found_and_its_escapes_replaced() {
    assert_eq!(
        all("not found /probe/jane.doe%40example.com?card=4111%201111%201111%201111&x=%2540"),
        (
            "not found /probe/j***@example.com?card=************1111&x=%2540".to_owned(),
            2
        )
    );
    // Found as written, too: an escape next to a card does not hide it.
    assert_eq!(
        all("%204111111111111111"),
        ("%20************1111".to_owned(), 1)
    );
    assert_eq!(all("100% sure"), ("100% sure".to_owned(), 0));
}

#[test]
fn addresses_running_into_each_other_are_masked_as_one() {
    assert_eq!(
        all("foo@jane.doe@example.com"),
        ("f***@example.com".to_owned(), 1)
    );
    assert_eq!(
        all("mail jane@example.com123 or ann@example.org.5"),
        (
            "mail j***@example.com123 or a***@example.org.5".to_owned(),
            2
        )
    );
}

#[test]
fn card_numbers_written_as_floats_or_negative_are_cards() {
    let mut v: Value =
        serde_json::from_str(r#"[4111111111111111.0, -4111111111111111, 4.111111111111111e15]"#)
            .unwrap();
    assert_eq!(Redactor::all().redact_value(&mut v), 3);
    assert_eq!(
        v,
        json!(["************1111", "************1111", "************1111"])
    );
}

#[test]
fn known_secret_values_are_scrubbed_whatever_the_detectors() {
    register_secret("MCPD_T_KNOWN", "hunter2Zq8unit");
    register_secret("MCPD_T_SHORT", "abc");
    let (t, n) = redact_text(
        "echo hunter2Zq8unit and hunter2Zq8unit%21 abc",
        DetectorSet::NONE,
        &RedactionSpec::default(),
    );
    assert_eq!(
        t,
        "echo [secret MCPD_T_KNOWN] and [secret MCPD_T_KNOWN]%21 abc"
    );
    assert_eq!(n, 2);
    let mut v = json!({"hunter2Zq8unit": "x"});
    assert_eq!(
        redact_value(&mut v, DetectorSet::NONE, &RedactionSpec::default()),
        1
    );
    assert_eq!(v, json!({"[secret MCPD_T_KNOWN]": "x"}));
}

#[test]
fn nothing_to_find_changes_nothing() {
    let mut v =
        json!({"a": "plain text", "b": [1, 2, 3], "c": "2025-08-01", "d": 1234567890123u64});
    let before = v.clone();
    assert_eq!(Redactor::all().redact_value(&mut v), 0);
    assert_eq!(v, before);
    assert_eq!(all("plain text"), ("plain text".to_owned(), 0));
}

#[test]
fn redacting_twice_finds_nothing_new() {
    let text = "ann@example.com 4111 1111 1111 1111 Bearer abcdef123456789 AKIAIOSFODNN7EXAMPLE";
    let (once, n) = all(text);
    assert_eq!(n, 4);
    assert_eq!(all(&once), (once.clone(), 0));
}

#[test]
fn detector_sets_list_in_order_without_duplicates() {
    let set: DetectorSet = [Detector::Secret, Detector::Email, Detector::Secret]
        .into_iter()
        .collect();
    assert_eq!(
        set.into_iter().collect::<Vec<_>>(),
        vec![Detector::Email, Detector::Secret]
    );
    assert_eq!(format!("{set:?}"), "[Email, Secret]");
    assert_eq!(set.to_string(), "email, secret");
    assert!(DetectorSet::NONE.is_empty());
    assert_eq!(DetectorSet::ALL.iter().count(), 3);
}

#[test]
fn luhn_checks_digit_strings_only() {
    assert!(luhn("4111111111111111"));
    assert!(!luhn("4111111111111112"));
    assert!(!luhn("4111-1111-1111-1111"));
}

/// The masked form as first written: the email's first character, the mask, its domain.
fn mask_as_built(s: &str) -> String {
    let t = s.trim();
    match t.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !local.contains(char::is_whitespace)
                && !domain.contains(|c: char| c.is_whitespace() || c == '@') =>
        {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}{MASK}@{domain}")
        }
        _ if s.is_empty() => String::new(),
        _ => MASK.to_owned(),
    }
}

/// Text from a few characters that matter to masking: letters (one of two bytes), the
/// mask's star, the at sign, dots and whitespace.
fn masking_text(max: usize) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::strategy::Strategy;
    proptest::collection::vec(
        proptest::sample::select(vec!['a', 'é', '*', '@', '.', ' ', '\t', 'x', '1']),
        0..max,
    )
    .prop_map(|c| c.into_iter().collect())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Masking in place gives what building the masked form gives, and says it changed
    /// exactly when it did: over any text, and over text shaped like an address (with
    /// whitespace around it, an already masked local part, a one-character one).
    #[test]
    fn masking_in_place_equals_building_the_masked_form(
        any in masking_text(24),
        (lead, local, domain, tail) in (
            proptest::sample::select(vec!["", " ", "\t "]),
            proptest::sample::select(vec!["j", "é", "j***", "é***", "ann.lee", "**", "a*b"]),
            masking_text(8),
            proptest::sample::select(vec!["", " ", " \t"]),
        ),
    ) {
        let shaped = format!("{lead}{local}@{domain}.com{tail}");
        for s in [any, shaped] {
            let want = mask_as_built(&s);
            proptest::prop_assert_eq!(mask_str(&s), want.clone());
            let mut v = Value::String(s.clone());
            let changed = mask_value(&mut v);
            proptest::prop_assert_eq!(changed, want != s);
            proptest::prop_assert_eq!(v, Value::String(want));
        }
    }
}
