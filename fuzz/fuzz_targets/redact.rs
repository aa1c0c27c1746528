//! Fuzzes the redaction scanner with arbitrary text and JSON: it must never panic (its
//! byte arithmetic, percent-decoding and character boundaries), and what it returns
//! must come back unchanged when redacted again (nothing it left is a new hit).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpd::redact::Redactor;

fuzz_target!(|data: &[u8]| {
    let redactor = Redactor::all();
    if let Ok(text) = std::str::from_utf8(data) {
        let (once, _) = redactor.redact_text(text);
        let (twice, found) = redactor.redact_text(&once);
        assert_eq!(found, 0, "redacting {text:?} left {once:?}, which redacts to {twice:?}");
    }
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) {
        redactor.redact_value(&mut value);
    }
});
