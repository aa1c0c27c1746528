//! Percent-decoding for the scanner: `jane.doe%40example.com` in an echoed URL is an
//! email address, and `4111%201111%201111%201111` a card number.
//!
//! Owns decoding a string's `%XX` escapes (up to three times, for double encoding) while
//! remembering, for every decoded byte, where it came from, so a hit in the decoded
//! bytes replaces the encoded text it came from. It decides nothing about what is found.

/// How many rounds of decoding are tried (`%2540` is `%40` is `@`).
const ROUNDS: usize = 3;

/// Whether `b` holds a `%XX` escape.
pub(super) fn has_escape(b: &[u8]) -> bool {
    memchr::memchr_iter(b'%', b).any(|i| escape_at(b, i).is_some())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    match b.get(i..i + 3)? {
        [b'%', h, l] => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

/// `b` decoded, and for each decoded byte (plus one past the end) its offset in `b`.
pub(super) fn decode(b: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = b.to_vec();
    let mut origin: Vec<usize> = (0..=b.len()).collect();
    for _ in 0..ROUNDS {
        if !has_escape(&bytes) {
            break;
        }
        let (mut next, mut next_origin) = (Vec::with_capacity(bytes.len()), Vec::new());
        next_origin.reserve(bytes.len() + 1);
        let mut i = 0;
        while let Some(&c) = bytes.get(i) {
            next_origin.push(origin.get(i).copied().unwrap_or(b.len()));
            match escape_at(&bytes, i) {
                Some(d) => {
                    next.push(d);
                    i += 3;
                }
                None => {
                    next.push(c);
                    i += 1;
                }
            }
        }
        next_origin.push(b.len());
        bytes = next;
        origin = next_origin;
    }
    (bytes, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_bytes_point_back_at_their_escapes() {
        let (d, o) = decode(b"a%40b%2540c");
        assert_eq!(d, b"a@b@c");
        assert_eq!(o, vec![0, 1, 4, 5, 10, 11]);
        assert!(!has_escape(b"100% sure"));
    }
}
