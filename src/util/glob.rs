//! Globs (`orders.*`, `/flags/prod/*`), as rules, budgets, scopes and grants write them.
//!
//! Owns the matching rule only: `*` matches any run of characters (`/` included),
//! everything else matches itself. No character classes, no escaping: tool ids have no
//! `*`. Matching takes time linear in the name for each star (no backtracking blow-up
//! on a long path an argument chose), and [`overlap`] tells whether two globs can match
//! one string.

/// Whether `name` matches `pattern`.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // After a star: where the pattern resumes, and the next name position it may claim.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = n.get(ni) {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ni));
                pi += 1;
            }
            Some(&want) if want == c => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // The last star takes one more character; the rest is tried again.
                Some((resume, taken)) => {
                    pi = resume;
                    ni = taken + 1;
                    star = Some((resume, taken + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// Whether some string matches both globs (`*` as in [`glob`] on both sides).
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let width = b.len() + 1;
    // can[i * width + j]: a[i..] and b[j..] can match one string; filled from the ends.
    let mut can = vec![false; (a.len() + 1) * width];
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            let at = |i: usize, j: usize| can.get(i * width + j).copied().unwrap_or(false);
            let value = match (a.get(i), b.get(j)) {
                (None, None) => true,
                // A star may match nothing, or take the other side's next character
                // (or all the other side's star matches).
                (Some(b'*'), other) => at(i + 1, j) || (other.is_some() && at(i, j + 1)),
                (other, Some(b'*')) => at(i, j + 1) || (other.is_some() && at(i + 1, j)),
                (Some(x), Some(y)) => x == y && at(i + 1, j + 1),
                _ => false,
            };
            if let Some(cell) = can.get_mut(i * width + j) {
                *cell = value;
            }
        }
    }
    can.first().copied().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::{glob, overlap};

    #[test]
    fn globs_match_prefixes_and_middles() {
        assert!(glob("orders.*", "orders.export"));
        assert!(!glob("orders.*", "flag.set"));
        assert!(glob("*", "anything"));
        assert!(glob("*", "flag.set"));
        assert!(glob("*.set", "flag.set"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("orders.*", "order.export"));
        assert!(!glob("flag.set", "flag.set2"));
        assert!(!glob("a*c", "abcd"));
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(glob("**", ""));
        assert!(glob("/flags/prod/*", "/flags/prod/checkout_v2"));
        assert!(glob("/flags/*", "/flags/prod/checkout_v2"));
        assert!(!glob("/flags/prod/*", "/flags/staging/prod/x"));
        assert!(glob("/f/*/x", "/f/a/b/x"));
        assert!(glob("é*ü", "éaaü"));
    }

    #[test]
    fn a_long_name_against_many_stars_takes_no_time() {
        let name = "a".repeat(20_000);
        let t = std::time::Instant::now();
        assert!(!glob("*a*a*a*a*a*a*b", &name));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn overlapping_globs_share_a_match() {
        assert!(overlap("/flags/prod/*", "/flags/*/*"));
        assert!(overlap("/flags/*", "/flags/prod/x"));
        assert!(overlap("*", "anything*"));
        assert!(overlap("a*", "*b"));
        assert!(overlap("", ""));
        assert!(overlap("*", ""));
        assert!(!overlap("/flags/prod/*", "/admin/*"));
        assert!(!overlap("/flags/prod/*", "/flags/staging/x"));
        assert!(!overlap("a", "b"));
        assert!(!overlap("a*", "b*"));
        assert!(!overlap("*a", "*b"));
    }

    /// Every string in a small alphabet: brute force agrees with the dynamic program.
    #[test]
    fn overlap_agrees_with_brute_force_on_small_globs() {
        let alphabet = ["", "a", "b", "*"];
        let mut globs = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for g in &globs {
                for c in alphabet {
                    next.push(format!("{g}{c}"));
                }
            }
            globs = next;
        }
        globs.sort();
        globs.dedup();
        let mut strings = vec![String::new()];
        for len in 1..=6 {
            let mut s = vec![String::new()];
            for _ in 0..len {
                s = s
                    .iter()
                    .flat_map(|p| [format!("{p}a"), format!("{p}b")])
                    .collect();
            }
            strings.extend(s);
        }
        for a in &globs {
            for b in &globs {
                let brute = strings.iter().any(|s| glob(a, s) && glob(b, s));
                assert_eq!(overlap(a, b), brute, "{a:?} {b:?}");
            }
        }
    }
}
