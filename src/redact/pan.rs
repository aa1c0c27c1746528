//! The card-number finder: where a payment card number (PAN) starts and ends in a
//! string, however it is grouped.
//!
//! Owns what counts as a card number: 13 to 19 digits that pass the Luhn check, in one
//! run or grouped as cards are printed, with any separator between groups (ASCII space,
//! tab or hyphen, a Unicode space such as U+00A0, or a Unicode dash such as U+2013, as
//! is or JSON-escaped) and invisible characters (zero-width space, joiners, soft
//! hyphen, BOM) ignored anywhere.
//! Letters next to the digits do not matter (`x4111111111111111x` is a card): the Luhn
//! check decides, not word boundaries. Digits next to the digits do: a longer run of
//! digits is another number. It must not look at bytes before the start it is given.

use super::luhn_skipping as luhn_digits;

/// Most digits a card number has.
const MAX_DIGITS: usize = 19;
/// Fewest digits a card number has.
const MIN_DIGITS: usize = 13;
/// Most separator characters between two groups (`4111  1111` is still grouped).
const MAX_SEP: usize = 3;

/// The character at `i` and how many bytes it takes, written as is or as a JSON
/// escape (`\t`, `\u00a0`: a card inside JSON text inside a string is still a card).
fn char_at(b: &[u8], i: usize) -> Option<(char, usize)> {
    let first = *b.get(i)?;
    if first == b'\\' {
        return match b.get(i + 1)? {
            b't' => Some(('\t', 2)),
            b'u' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
                let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                Some((c, 6))
            }
            _ => None,
        };
    }
    let len = match first {
        0x00..=0x7F => return Some((char::from(first), 1)),
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    let c = std::str::from_utf8(b.get(i..i + len)?)
        .ok()?
        .chars()
        .next()?;
    Some((c, len))
}

/// Characters that render as nothing, skipped anywhere in a number: soft hyphen,
/// zero-width space and joiners, word joiner, byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
    )
}

/// Group separators: ASCII space, tab and hyphen; Unicode spaces (U+00A0, U+1680,
/// U+2000..U+200A, U+202F, U+205F, U+3000); Unicode dashes and minus signs
/// (U+2010..U+2015, U+2212, U+FE58, U+FE63, U+FF0D).
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '-'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
            | '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{fe58}'
            | '\u{fe63}'
            | '\u{ff0d}'
    )
}

/// The byte length of an invisible character at `i`.
fn invisible(b: &[u8], i: usize) -> Option<usize> {
    char_at(b, i)
        .filter(|(c, _)| is_invisible(*c))
        .map(|(_, len)| len)
}

/// The byte length of a group separator at `i`.
fn separator(b: &[u8], i: usize) -> Option<usize> {
    char_at(b, i)
        .filter(|(c, _)| is_separator(*c))
        .map(|(_, len)| len)
}

/// A group of digits from `i`, invisible characters skipped: (digits appended to
/// `digits`, the byte after the group's last digit). Stops at `MAX_DIGITS` in total.
fn group(b: &[u8], mut i: usize, digits: &mut Digits) -> (usize, usize) {
    let (mut n, mut end) = (0, i);
    loop {
        match b.get(i) {
            Some(c) if c.is_ascii_digit() => {
                if !digits.push(*c) {
                    // Too long to be a card; count it so the caller sees the run goes on.
                    return (n + 1, i + 1);
                }
                n += 1;
                i += 1;
                end = i;
            }
            _ => match invisible(b, i) {
                Some(len) => i += len,
                None => return (n, end),
            },
        }
    }
}

/// Separators (and invisible characters) between two groups from `i`: the position of
/// the next group's first digit, when one follows.
fn gap(b: &[u8], mut i: usize) -> Option<usize> {
    let mut seps = 0;
    loop {
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            return (seps > 0).then_some(i);
        }
        if let Some(len) = invisible(b, i) {
            i += len;
        } else if let Some(len) = separator(b, i).filter(|_| seps < MAX_SEP) {
            seps += 1;
            i += len;
        } else {
            return None;
        }
    }
}

/// The digits read so far, without separators.
struct Digits {
    buf: [u8; MAX_DIGITS],
    len: usize,
}

impl Digits {
    fn push(&mut self, d: u8) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = d;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// The digits of a card found by [`pan_at`], without its separators (escaped ones
/// included: the `00a0` of `\u00a0` is no part of the number).
pub(super) fn digits(found: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_DIGITS);
    let mut i = 0;
    while let Some(&c) = found.get(i) {
        if c.is_ascii_digit() {
            out.push(c);
            i += 1;
        } else {
            i += char_at(found, i).map_or(1, |(_, len)| len);
        }
    }
    out
}

/// Where the digits that start at `i` end when they are no card (the end of the run,
/// invisible characters included), so the scanner can skip them whole.
pub(super) fn run_end(b: &[u8], i: usize) -> usize {
    let mut end = i;
    let mut pos = i;
    loop {
        if b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
            end = pos;
        } else if let Some(len) = invisible(b, pos) {
            pos += len;
        } else {
            return end;
        }
    }
}

/// A card number starting at `i` (the first digit of a run): the byte after its last
/// digit. One run of 13 to 19 digits, or groups: a first group of four, middle groups
/// of four to six, a last group of one to six (4-4-4-4, 4-6-5, 4-4-4-4-3). The longest
/// grouping that passes the Luhn check wins, so `4111 1111 1111 1111 2025` masks the
/// card and keeps the year, and `2025-08-01` never groups (its second group is short).
pub(super) fn pan_at(b: &[u8], i: usize) -> Option<usize> {
    let mut digits = Digits {
        buf: [0; MAX_DIGITS],
        len: 0,
    };
    let (first, end) = group(b, i, &mut digits);
    if first >= MIN_DIGITS {
        let whole = first <= MAX_DIGITS && luhn_digits(digits.as_slice());
        return whole.then_some(end);
    }
    if first != 4 {
        return None;
    }
    let (mut pos, mut best) = (end, None);
    while let Some(next) = gap(b, pos) {
        let before = digits.len;
        let (len, end) = group(b, next, &mut digits);
        if len == 0 || len > 6 || before + len > MAX_DIGITS {
            break;
        }
        pos = end;
        if digits.len >= MIN_DIGITS && luhn_digits(digits.as_slice()) {
            best = Some(end);
        }
        if len < 4 {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Option<&str> {
        pan_at(s.as_bytes(), 0).map(|end| &s[..end])
    }

    #[test]
    fn groups_may_be_separated_by_unicode_spaces_and_dashes() {
        for sep in [
            " ", "-", "\u{a0}", "\u{2007}", "\u{202f}", "\u{2009}", "\u{3000}", "\u{2013}",
            "\u{2014}", "\u{2212}", "\u{ff0d}", "  ", " - ",
        ] {
            let card = ["4111", "1111", "1111", "1111"].join(sep);
            assert_eq!(found(&format!("{card}!")), Some(card.as_str()), "{sep:?}");
        }
    }

    #[test]
    fn invisible_characters_inside_a_number_are_skipped() {
        let card = "41\u{200b}11111111\u{ad}111111";
        assert_eq!(found(card), Some(card));
        assert_eq!(run_end(b"12\xE2\x80\x8B34x", 0), 7);
    }

    #[test]
    fn a_run_too_long_for_a_card_is_no_card() {
        assert_eq!(found("41111111111111110000"), None);
        assert_eq!(found("2025-08-01"), None);
    }
}
