//! Hand-written matchers for the digit-gated personal-data detectors: card numbers,
//! SSNs, IBANs and phone numbers (E.164 and NANP).
//!
//! These detectors have no literal trigger (E.164's `+` aside), so their regexes run on
//! every text with a long enough run of digits, and each run is a lazy-DFA walk of the
//! whole text through tables that, among forty detectors, are rarely in cache. The
//! matchers here look only where a match can start (a word start, a `+`, a separator)
//! and parse from there, which is a few byte tests on most texts. The phone patterns'
//! secret follows a separator the match includes: `Shape::Lead` finds it without
//! captures.
//!
//! They find exactly what the regexes find. The patterns are leftmost-first, with
//! greedy counted repeats and a `\b` that can make the count back off; each parse
//! follows the regex's backtracking order, and where a pattern has an optional piece
//! the comments say why leaving it out when it is present cannot match. The regexes
//! stay the definition: `pii_matchers_agree_with_regexes` runs both on the corpus and
//! on generated near-misses.
//!
//! `\d` in these patterns is Unicode (`٣`, `３`). Decimal digits other than ASCII start
//! at U+0660, so a text whose characters all lie below U+0600 (UTF-8 lead bytes up to
//! 0xD8) holds none and the byte tests here are exact; other text goes to the regex.
use std::ops::Range;

use crate::groups::{boundary, is_word};

/// The patterns as `builtins` hands them over (`\s` already rewritten).
const CARD: &str = r"\b(?P<s>[2-6]\d{3}(?:[ -]?\d){9,15})\b";
const SSN: &str = r"\b(?P<s>\d{3}-\d{2}-\d{4})\b";
const IBAN: &str = r"\b(?P<s>[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})\b";
const E164: &str = r"(?:^|[\t\n\x0B\x0C\r :=,;\x22'(])(?P<s>\+[1-9](?:[ .-]?\(?\d\)?){7,14})\b";
const NANP: &str = r"(?:^|[\t\n\x0B\x0C\r :=,;\x22'])(?P<s>(?:\+?1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4})\b";

/// What may precede an E.164 number (`(?:^|[\s:=,;"'(])`); the number starts with `+`.
pub(crate) fn e164_sep(b: u8) -> bool {
    CLASS[usize::from(b)] & E164_SEP != 0
}

/// What may precede a NANP number; the number starts with `+`, `1`, `(` or `[2-9]`.
pub(crate) fn nanp_sep(b: u8) -> bool {
    CLASS[usize::from(b)] & NANP_SEP != 0
}

// Byte classes, looked up once per byte in the scans for where a match can start.
const WORD: u8 = 1;
const DIGIT: u8 = 2;
const UPPER: u8 = 4;
/// `[2-6]`, a card number's first digit.
const CARD_FIRST: u8 = 8;
const E164_SEP: u8 = 16;
const NANP_SEP: u8 = 32;
/// `[+1(2-9]`, a NANP number's first byte.
const NANP_FIRST: u8 = 64;

const fn class_of(c: u8) -> u8 {
    // `(?-u:\s)`
    let space = matches!(c, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ');
    let nanp_sep = space || matches!(c, b':' | b'=' | b',' | b';' | b'"' | b'\'');
    let bits = [
        (c.is_ascii_alphanumeric() || c == b'_', WORD),
        (c.is_ascii_digit(), DIGIT),
        (c.is_ascii_uppercase(), UPPER),
        (matches!(c, b'2'..=b'6'), CARD_FIRST),
        (nanp_sep || c == b'(', E164_SEP),
        (nanp_sep, NANP_SEP),
        (matches!(c, b'+' | b'1' | b'(' | b'2'..=b'9'), NANP_FIRST),
    ];
    let (mut class, mut i) = (0, 0);
    while i < bits.len() {
        if bits[i].0 {
            class |= bits[i].1;
        }
        i += 1;
    }
    class
}

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = class_of(b as u8);
        b += 1;
    }
    t
};

fn digit(h: &[u8], i: usize) -> bool {
    h.get(i).is_some_and(u8::is_ascii_digit)
}

fn one_of(h: &[u8], i: usize, set: &[u8]) -> bool {
    h.get(i).is_some_and(|b| set.contains(b))
}

/// `\b` at `i` after a word byte.
fn ends_word(h: &[u8], i: usize) -> bool {
    h.get(i).is_none_or(|&b| !is_word(b))
}

/// `[2-9]\d{2}` at `i`.
fn three(h: &[u8], i: usize) -> bool {
    h.get(i).is_some_and(|b| (b'2'..=b'9').contains(b)) && digit(h, i + 1) && digit(h, i + 2)
}

/// `(?:SEP?X){lo,hi}\b` from `at`, where SEP is one of `seps` and X a word byte in
/// `class` (no separator is in `class`): the end, or `None`.
///
/// A separator is taken only when an X follows, since X would fail on it anyway, so
/// every round is forced. Greedy, the count backs off from the most rounds to the first
/// whose end is a word boundary (X is a word byte: the next byte must not be one).
fn rounds(
    h: &[u8],
    mut at: usize,
    seps: &[u8],
    class: fn(u8) -> bool,
    lo: usize,
    hi: usize,
) -> Option<usize> {
    let x = |i: usize| h.get(i).is_some_and(|&b| class(b));
    let mut best = None;
    for n in 1..=hi {
        at = if x(at) {
            at + 1
        } else if one_of(h, at, seps) && x(at + 1) {
            at + 2
        } else {
            break;
        };
        if n >= lo && ends_word(h, at) {
            best = Some(at);
        }
    }
    best
}

/// The end of a card number at `p`: `[2-6]\d{3}(?:[ -]?\d){9,15}\b`.
fn card(h: &[u8], p: usize) -> Option<usize> {
    if !(b'2'..=b'6').contains(&h[p]) || !(1..4).all(|k| digit(h, p + k)) {
        return None;
    }
    rounds(h, p + 4, b" -", |b| b.is_ascii_digit(), 9, 15)
}

/// `\d{3}-\d{2}-\d{4}\b`: nothing optional.
fn ssn(h: &[u8], p: usize) -> Option<usize> {
    let ok = (0..3).all(|k| digit(h, p + k))
        && one_of(h, p + 3, b"-")
        && digit(h, p + 4)
        && digit(h, p + 5)
        && one_of(h, p + 6, b"-")
        && (7..11).all(|k| digit(h, p + k))
        && ends_word(h, p + 11);
    ok.then_some(p + 11)
}

/// `[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`.
fn iban(h: &[u8], p: usize) -> Option<usize> {
    let upper = |i: usize| h.get(i).is_some_and(u8::is_ascii_uppercase);
    if !(upper(p) && upper(p + 1) && digit(h, p + 2) && digit(h, p + 3)) {
        return None;
    }
    rounds(
        h,
        p + 4,
        b" ",
        |b| b.is_ascii_uppercase() || b.is_ascii_digit(),
        11,
        30,
    )
}

/// The first match at a word start at or after `from` whose first byte has class
/// `first` (`at` gives the end of the match at a byte, or `None`): the three patterns
/// that open with `\b` and a word byte.
fn at_word_starts(
    h: &[u8],
    from: usize,
    first: u8,
    at: impl Fn(&[u8], usize) -> Option<usize>,
) -> Option<Range<usize>> {
    let class = |i: usize| CLASS[usize::from(h[i])];
    let mut p = from;
    loop {
        while p < h.len() && class(p) & first == 0 {
            p += 1;
        }
        if p == h.len() {
            return None;
        }
        if (p == 0 || class(p - 1) & WORD == 0)
            && let Some(end) = at(h, p)
        {
            return Some(p..end);
        }
        // No byte inside a word starts one.
        p += 1;
        while p < h.len() && class(p) & WORD != 0 {
            p += 1;
        }
    }
}

/// `(?:[ .-]?\(?\d\)?){n..=14}\b` from `at`, after `n` rounds, in the regex's order:
/// another round before stopping, and in a round `)` taken before not.
///
/// In a round the separator and `(` are taken when present (`\d` would fail on them),
/// so only `)` branches; leaving it out ends the rounds there (no round starts with
/// `)`), so the search stays linear.
fn e164_rounds(h: &[u8], at: usize, n: usize) -> Option<usize> {
    if n < 14 {
        let mut i = at + usize::from(one_of(h, at, b" .-"));
        i += usize::from(one_of(h, i, b"("));
        if digit(h, i) {
            i += 1;
            if one_of(h, i, b")")
                && let Some(end) = e164_rounds(h, i + 1, n + 1)
            {
                return Some(end);
            }
            if let Some(end) = e164_rounds(h, i, n + 1) {
                return Some(end);
            }
        }
    }
    (n >= 7 && boundary(h, at)).then_some(at)
}

/// An E.164 number's match: `+` after a separator (which the match includes) or at the
/// text's start.
fn e164(h: &[u8], from: usize) -> Option<Range<usize>> {
    for plus in memchr::memchr_iter(b'+', &h[from..]).map(|i| from + i) {
        // `^` only at 0, which the search reaches only when it starts there.
        let start = if plus == 0 {
            0
        } else if plus > from && e164_sep(h[plus - 1]) {
            plus - 1
        } else {
            continue;
        };
        if h.get(plus + 1).is_some_and(|b| (b'1'..=b'9').contains(b))
            && let Some(end) = e164_rounds(h, plus + 2, 0)
        {
            return Some(start..end);
        }
    }
    None
}

/// The end of a NANP number starting at `s`:
/// `(?:\+?1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}\b`.
///
/// Everything optional is taken when present: without the `+1 ` the area code would
/// start at `+` or `1`, without the space after `(212)` the exchange at a space. The
/// two area code forms differ in their first byte. So there is one way to match.
fn nanp_at(h: &[u8], s: usize) -> Option<usize> {
    let one = s + usize::from(one_of(h, s, b"+"));
    let mut i = if one_of(h, one, b"1") && one_of(h, one + 1, b" .-") {
        one + 2
    } else {
        s
    };
    if one_of(h, i, b"(") {
        if !(three(h, i + 1) && one_of(h, i + 4, b")")) {
            return None;
        }
        i += 5;
        i += usize::from(one_of(h, i, b" "));
    } else {
        if !(three(h, i) && one_of(h, i + 3, b" .-")) {
            return None;
        }
        i += 4;
    }
    let ok = three(h, i) && one_of(h, i + 3, b" .-") && (4..8).all(|k| digit(h, i + k));
    (ok && ends_word(h, i + 8)).then_some(i + 8)
}

/// A NANP number's match: after a separator (which the match includes) or at the
/// text's start.
fn nanp(h: &[u8], from: usize) -> Option<Range<usize>> {
    let class = |i: usize| h.get(i).map_or(0, |&b| CLASS[usize::from(b)]);
    for p in from..h.len() {
        // At 0 `^` comes first, but a number never starts with a separator.
        let s = if class(p) & NANP_SEP != 0 {
            p + 1
        } else if p == 0 {
            0
        } else {
            continue;
        };
        if class(s) & NANP_FIRST != 0
            && let Some(end) = nanp_at(h, s)
        {
            return Some(p..end);
        }
    }
    None
}

/// One detector's matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pii {
    Card,
    Ssn,
    Iban,
    E164,
    Nanp,
}

impl Pii {
    /// The matcher for a built-in detector's pattern, if it is one of these exactly.
    pub(crate) fn new(kind: &str, pattern: &str) -> Option<Pii> {
        Some(match (kind, pattern) {
            ("card", CARD) => Pii::Card,
            ("ssn", SSN) => Pii::Ssn,
            ("iban", IBAN) => Pii::Iban,
            ("phone", E164) => Pii::E164,
            ("phone", NANP) => Pii::Nanp,
            _ => return None,
        })
    }

    /// Whether `text` can hold no non-ASCII `\d` (see the module's comment).
    pub(crate) fn handles(&self, text: &str) -> bool {
        text.is_ascii() || text.bytes().all(|b| b < 0xD9)
    }

    /// The matches `Regex::find_iter` gives (the whole match, separator included).
    pub(crate) fn find_iter(&self, text: &str, mut found: impl FnMut(Range<usize>)) {
        let h = text.as_bytes();
        let mut from = 0;
        while let Some(m) = self.find_at(h, from) {
            from = m.end;
            found(m);
        }
    }

    fn find_at(&self, h: &[u8], from: usize) -> Option<Range<usize>> {
        match self {
            Pii::Card => at_word_starts(h, from, CARD_FIRST, card),
            Pii::Ssn => at_word_starts(h, from, DIGIT, ssn),
            Pii::Iban => at_word_starts(h, from, UPPER, iban),
            Pii::E164 => e164(h, from),
            Pii::Nanp => nanp(h, from),
        }
    }
}

#[cfg(test)]
mod tests;
