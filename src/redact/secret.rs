//! The secret finder: bearer tokens, JWTs, API keys with a well-known prefix and
//! private key blocks, by their shape.
//!
//! Owns the list of shapes. A shape must start at a word boundary (`task-1234...` is no
//! `sk-` key); values mcpd knows exactly are found by `known.rs`, not here. It must not
//! look back further than the byte before the start it is given.

/// Letters, digits and non-ASCII bytes: what glues a token to a word.
fn word_at(b: &[u8], i: usize) -> bool {
    b.get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c >= 0x80)
}

fn run_len(b: &[u8], from: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .map_or(0, |r| r.iter().take_while(|c| f(**c)).count())
}

/// Well-known API key prefixes and the least number of `[A-Za-z0-9_-]` after them.
const KEYS: &[(&[u8], usize)] = &[
    (b"sk-", 16),
    (b"sk_live_", 16),
    (b"sk_test_", 16),
    (b"rk_live_", 16),
    (b"ghp_", 16),
    (b"gho_", 16),
    (b"ghu_", 16),
    (b"ghs_", 16),
    (b"ghr_", 16),
    (b"github_pat_", 16),
    (b"glpat-", 16),
    (b"xoxb-", 10),
    (b"xoxp-", 10),
    (b"xoxa-", 10),
    (b"xoxs-", 10),
    (b"npm_", 30),
    (b"pypi-", 30),
];

/// Fixed-length keys: AWS access key ids and Google API keys, exactly this long after
/// the prefix.
const FIXED_KEYS: &[(&[u8], usize)] = &[(b"AKIA", 16), (b"ASIA", 16), (b"AIza", 35)];

fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A secret starting at `i`: the range to replace (for a bearer token, the token only).
pub(super) fn secret_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let rest = b.get(i..)?;
    if rest.starts_with(b"-----BEGIN ") {
        return private_key_at(b, i);
    }
    if i > 0 && word_at(b, i - 1) {
        return None;
    }
    if rest
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
    {
        let spaces = run_len(b, i + 6, |c| c == b' ' || c == b'\t');
        let start = i + 6 + spaces;
        let len = run_len(b, start, token_char);
        let token = b.get(start..start + len)?;
        // "the bearer instrument" is prose; in lower case, a token must look like one.
        let prose = rest.first() == Some(&b'b') && token.iter().all(u8::is_ascii_alphabetic);
        return (spaces > 0 && len >= 8 && !prose).then_some((start, start + len));
    }
    if rest.starts_with(b"eyJ") {
        // A JWT: three (or, encrypted, five) base64url parts; a trailing dot is prose.
        let mut len = run_len(b, i, |c| key_char(c) || c == b'.');
        while len > 0 && b.get(i + len - 1) == Some(&b'.') {
            len -= 1;
        }
        let jwt = b.get(i..i + len)?;
        let mut parts = jwt.split(|c| *c == b'.');
        let heads = parts.next().is_some_and(|p| !p.is_empty())
            && parts.next().is_some_and(|p| !p.is_empty());
        let dots = jwt.iter().filter(|c| **c == b'.').count();
        return (heads && dots >= 2 && len >= 20).then_some((i, i + len));
    }
    if let Some((prefix, len)) = FIXED_KEYS.iter().find(|(p, _)| rest.starts_with(p)) {
        let body = i + prefix.len();
        return (run_len(b, body, key_char) == *len).then_some((i, body + len));
    }
    let (prefix, min) = KEYS.iter().find(|(p, _)| rest.starts_with(p))?;
    let body = i + prefix.len();
    let len = run_len(b, body, key_char);
    (len >= *min).then_some((i, body + len))
}

/// A PEM private key block from its `-----BEGIN` at `i` to the end of its `-----END
/// ...-----` line, or to the end of the text when cut off. Other PEM blocks
/// (certificates, public keys) are not secrets and are skipped.
fn private_key_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    // The label is short (`ENCRYPTED PRIVATE KEY`): look no further than one line.
    let line = b.get(i..b.len().min(i + 80))?;
    let header_end = find(line, 11, b"-----")? + 5;
    let header = line.get(..header_end)?;
    if header.contains(&b'\n') || find(header, 0, b"PRIVATE KEY").is_none() {
        return None;
    }
    let end = find(b, i + header_end, b"-----END")
        .and_then(|e| find(b, e + 8, b"-----"))
        .map_or(b.len(), |e| e + 5);
    Some((i, end))
}
