//! Where the secret is inside a detector's match, without running the regex's capture
//! engine.
//!
//! Captures cost several microseconds a match (a backtracking or Pike VM over the
//! span), against a fraction of that for the DFA that finds the match. Most built-in
//! patterns have a shape that puts the secret at a place the match's bounds and a few
//! byte tests determine, so they run `find` only; the rest (and the policy's own
//! patterns with groups) keep `captures`. The `shapes_agree_with_captures` test checks
//! every shape against the regex's own groups on the whole corpus.
use std::ops::Range;

use regex::Captures;

/// The parts of one match a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Groups {
    pub whole: Range<usize>,
    /// The secret: group `s` (or `s2`, `s3`); the whole match when a pattern has none.
    pub s: Option<Range<usize>>,
    /// The name in `NAME=VALUE` patterns.
    pub n: Option<Range<usize>>,
}

impl Groups {
    /// From a built-in pattern's captures: `s`, else `s2`, else `s3`.
    pub fn builtin(c: &Captures<'_>) -> Groups {
        let whole = c.get(0).map_or(0..0, |m| m.range());
        let s = c
            .name("s")
            .or_else(|| c.name("s2"))
            .or_else(|| c.name("s3"))
            .or_else(|| c.name("s4"))
            .or_else(|| c.name("s5"))
            .map(|m| m.range());
        Groups {
            whole,
            s,
            n: c.name("n").map(|m| m.range()),
        }
    }

    /// From a policy pattern's captures: `s`, else group 1, else the whole match.
    pub fn custom(c: &Captures<'_>) -> Groups {
        let whole = c.get(0).map_or(0..0, |m| m.range());
        let s = c
            .name("s")
            .or_else(|| c.get(1))
            .or_else(|| c.get(0))
            .map(|m| m.range());
        Groups { whole, s, n: None }
    }
}

/// How to find the secret in a match of a pattern.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// The secret is the whole match (`\b(?P<s>...)\b`, or no groups at all).
    Whole,
    /// A flag or a `NAME=VALUE` assignment ending in `detectors::VALUE` (a double-quoted,
    /// single-quoted or bare value); `named` when the name is group `n`.
    Value { named: bool },
    /// The secret is the run of `class` bytes that ends the match, starting no earlier
    /// than just after the first `sep` in the match. Holds when the byte before the
    /// secret is either outside `class` or that first `sep`.
    Tail {
        sep: Option<u8>,
        class: fn(u8) -> bool,
    },
    /// The secret runs from just after the `nth` `sep` in the match to `trim` bytes
    /// before its end. Holds when what comes before the secret holds `nth` of `sep`
    /// whatever the text (`"private_key_id"\s*:\s*"HEX"`, `scheme://user:PASS@`).
    Nth { sep: u8, nth: usize, trim: usize },
    /// `(?:^|[SEP])(?P<s>...)`: the secret is the match without its first byte when
    /// that byte is in `sep`, which holds no byte the secret can start with.
    Lead { sep: fn(u8) -> bool },
    /// Anything else: the regex's capture groups.
    Captures,
}

/// `(?-u:\s)`: what the built-ins treat as whitespace.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// `(?-u:\w)`: ASCII word characters, as `(?-u:\b)` sees them.
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `(?-u:\b)` at `at`.
pub(crate) fn boundary(h: &[u8], at: usize) -> bool {
    let before = at > 0 && is_word(h[at - 1]);
    let after = h.get(at).is_some_and(|&b| is_word(b));
    before != after
}

fn skip(h: &[u8], mut at: usize, end: usize, f: impl Fn(u8) -> bool) -> usize {
    while at < end && f(h[at]) {
        at += 1;
    }
    at
}

impl Shape {
    /// The groups of the match `whole` in `text`; `None` for [`Shape::Captures`].
    pub fn groups(&self, text: &str, whole: Range<usize>) -> Option<Groups> {
        let h = text.as_bytes();
        let (a, b) = (whole.start, whole.end);
        let (s, n) = match *self {
            Shape::Whole => (Some(a..b), None),
            Shape::Tail { sep, class } => {
                let mut start = b;
                while start > a && class(h[start - 1]) {
                    start -= 1;
                }
                if let Some(sep) = sep
                    && let Some(i) = h[a..b].iter().position(|&x| x == sep)
                {
                    start = start.max(a + i + 1);
                }
                (Some(start..b), None)
            }
            Shape::Value { named } => {
                if named {
                    // NAME then what `assign::rest_at` parses: the name is the whole
                    // run of name characters, since what follows it is none of them.
                    let end = skip(h, a, b, |c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
                    });
                    let s = crate::assign::rest_at(&h[..b], end).map(|(v, _)| v);
                    return Some(Groups {
                        whole,
                        s,
                        n: Some(a..end),
                    });
                }
                let (at, n) = {
                    // (^|[\s"']) --? NAME (= | \s+) VALUE
                    let mut at = a;
                    if at < b && h[at] != b'-' {
                        at += 1;
                    }
                    at = skip(h, at, b, |c| c == b'-');
                    at = skip(h, at, b, |c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')
                    });
                    if at < b && h[at] == b'=' {
                        at += 1;
                    } else {
                        at = skip(h, at, b, is_space);
                    }
                    (at, None)
                };
                let s = match h.get(at) {
                    Some(&q @ (b'"' | b'\'')) if b >= at + 2 && h[b - 1] == q => at + 1..b - 1,
                    _ => at.min(b)..b,
                };
                (Some(s), n)
            }
            Shape::Nth { sep, nth, trim } => {
                let end = b - trim;
                let s = h[a..end]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &x)| x == sep)
                    .nth(nth - 1)
                    .map(|(i, _)| a + i + 1..end);
                (s, None)
            }
            Shape::Lead { sep } => (Some(a + usize::from(a < b && sep(h[a]))..b), None),
            Shape::Captures => return None,
        };
        Some(Groups { whole, s, n })
    }
}

#[cfg(test)]
mod tests {
    use crate::{MaskConfig, Masker, corpus};

    /// Every built-in detector with a shape, on every text of the corpus (argv
    /// elements, env entries, joined lines): the shape's groups are the regex's.
    #[test]
    fn shapes_agree_with_captures() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        let texts = corpus::texts();
        let mut checked = 0;
        for d in m.detectors() {
            if matches!(d.shape, super::Shape::Captures) {
                continue;
            }
            for t in &texts {
                for c in d.regex.captures_iter(t) {
                    let want = super::Groups::builtin(&c);
                    let mut got = d.shape.groups(t, want.whole.clone()).unwrap();
                    if c.len() == 1 {
                        // No groups: only the whole match matters.
                        got.s = None;
                    }
                    assert_eq!(got, want, "{} on {t:?}", d.kind);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "only {checked} matches checked");
    }
}
