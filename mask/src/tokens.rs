//! Hand-written matchers for the detectors whose match is a vendor prefix followed by
//! runs of one character class (`ghp_` + 36 base62, `AKIA` + 16 base32, JWTs).
//!
//! They find exactly what their regexes find, at a fraction of the cost: a regex's lazy
//! DFA walks each long token twice (forward for the end, backward for the start) through
//! transition tables that, with forty detectors, no longer fit in the CPU's caches; here
//! the prefixes come from one small literal search and the rest is a scan of a class.
//! The regexes stay the definition: `hand_matchers_agree_with_regexes` runs both on the
//! whole corpus and on edge cases, so the two cannot drift apart.
use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::{
    assign::{Assign, PASS_KEYWORDS, SECRET_KEYWORDS},
    groups::is_word,
    headers::Header,
    literal::Literal,
    pii::Pii,
    vendors::Vendors,
};

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn alnum_underscore(b: u8) -> bool {
    is_word(b)
}

fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// `[A-Za-z0-9_-]`: base64url.
fn base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn base32(b: u8) -> bool {
    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
}

fn lower_digit(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// The length of the run of `class` bytes at the start of `h`.
fn run(h: &[u8], class: fn(u8) -> bool) -> usize {
    h.iter().position(|&b| !class(b)).unwrap_or(h.len())
}

/// `[class]{lo,hi}` then the byte `sep`, between a prefix and the tail; `class` holds
/// no `sep`.
#[derive(Clone, Copy)]
struct Mid {
    class: fn(u8) -> bool,
    lo: usize,
    hi: usize,
    sep: u8,
}

/// `\b PREFIX [mid]{lo,hi} SEP CLASS{min,max} \b?` where every prefix starts with a word
/// character and `mid`'s class holds no `SEP`.
#[derive(Clone, Copy)]
struct Token {
    mid: Option<Mid>,
    class: fn(u8) -> bool,
    min: usize,
    max: usize,
    /// A trailing `\b`. Only for classes of word characters.
    end_boundary: bool,
}

impl Token {
    /// The end of the match that starts at `at` (`PREFIX` is `h[at..after]`).
    fn end(&self, h: &[u8], after: usize) -> Option<usize> {
        let mut at = after;
        if let Some(Mid { class, lo, hi, sep }) = self.mid {
            // The class cannot hold `sep`, so the count must take the whole run.
            let n = run(&h[at..], class);
            if n < lo || n > hi || h.get(at + n) != Some(&sep) {
                return None;
            }
            at += n + 1;
        }
        let n = run(&h[at..], self.class);
        if n < self.min {
            return None;
        }
        if !self.end_boundary {
            // Greedy and nothing after it: as many as allowed.
            return Some(at + n.min(self.max));
        }
        // Word characters on both sides of every shorter end: only the run's own end
        // can be a boundary, and only when the count allows it.
        let end = at + n;
        (n <= self.max && h.get(end).is_none_or(|&b| !is_word(b))).then_some(end)
    }
}

#[derive(Clone, Copy)]
enum Spec {
    Token(Token),
    /// `eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}` after the prefix
    /// `eyJ`: the class holds no `.`, so each count takes its whole run.
    Jwt,
}

impl Spec {
    fn end(&self, h: &[u8], after: usize) -> Option<usize> {
        match self {
            Spec::Token(t) => t.end(h, after),
            Spec::Jwt => {
                let mut at = after;
                for (min, dot) in [(8, true), (4, true), (8, false)] {
                    let n = run(&h[at..], base64url);
                    if n < min || (dot && h.get(at + n) != Some(&b'.')) {
                        return None;
                    }
                    at += n + usize::from(dot);
                }
                Some(at)
            }
        }
    }
}

/// A detector's hand-written matcher.
pub(crate) enum Hand {
    Prefixed(Prefixed),
    /// `NAME=VALUE` (`assign`).
    Assign(Assign),
    /// `Authorization:`, API key headers, `Bearer` (`headers`).
    Header(Header),
    /// Detectors anchored on a literal (`literal`).
    Literal(Literal),
    /// Cards, SSNs, IBANs, phone numbers (`pii`).
    Pii(Pii),
    /// The vendor-token table (`vendors`); `find` runs it itself, for the entry.
    Vendor(Vendors),
    /// Credential options of well-known tools (`tools`).
    Tools,
}

impl Hand {
    /// The matches `Regex::find_iter` would give: leftmost first, each search going on
    /// after the previous match.
    pub(crate) fn find_iter(&self, text: &str, found: impl FnMut(Range<usize>)) {
        match self {
            Hand::Prefixed(p) => p.find_iter(text, found),
            Hand::Assign(a) => a.find_iter(text, found),
            Hand::Header(h) => h.find_iter(text, found),
            Hand::Literal(l) => l.find_iter(text, found),
            Hand::Pii(p) => p.find_iter(text, found),
            Hand::Tools => crate::tools::find_iter(text, found),
            Hand::Vendor(v) => {
                let mut found = found;
                v.find_iter(text, |r, _| found(r));
            }
        }
    }

    /// Whether [`Hand::find_iter`] stands in for the regex on `text` (else run it).
    pub(crate) fn handles(&self, text: &str) -> bool {
        match self {
            Hand::Header(h) => h.handles(text),
            Hand::Literal(l) => l.handles(text),
            Hand::Pii(p) => p.handles(text),
            Hand::Prefixed(_) | Hand::Assign(_) | Hand::Vendor(_) | Hand::Tools => true,
        }
    }
}

/// Prefixes (case-sensitive, each starting with a word character) and what follows
/// them.
pub(crate) struct Prefixed {
    /// For the tests, which generate near-misses from them.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) literals: &'static [&'static str],
    prefixes: AhoCorasick,
    spec: Spec,
}

impl Prefixed {
    fn new(literals: &'static [&'static str], spec: Spec) -> Prefixed {
        let prefixes = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(literals)
            .expect("token prefixes build");
        Prefixed {
            literals,
            prefixes,
            spec,
        }
    }

    fn find_iter(&self, text: &str, mut found: impl FnMut(Range<usize>)) {
        let h = text.as_bytes();
        let mut from = 0;
        // Overlapping, so that a prefix inside another one that failed is still tried;
        // they come by end, which is start order as no prefix of a detector holds
        // another one after its first byte (`prefixes_come_in_start_order`).
        for m in self.prefixes.find_overlapping_iter(text) {
            let start = m.start();
            if start < from || (start > 0 && is_word(h[start - 1])) {
                continue;
            }
            if let Some(end) = self.spec.end(h, m.end()) {
                found(start..end);
                from = end;
            }
        }
    }
}

/// The hand matcher for a built-in detector (its pattern as written in `detectors`),
/// if it has one.
pub(crate) fn hand_matcher(kind: &str, pattern: &str) -> Option<Hand> {
    if pattern.contains("(?P<n>") {
        return match kind {
            "password" => Some(Hand::Assign(Assign::new(PASS_KEYWORDS))),
            "secret" => Some(Hand::Assign(Assign::new(SECRET_KEYWORDS))),
            _ => None,
        };
    }
    if kind == "password" && pattern.starts_with(crate::detectors::TOOLS_HEAD) {
        return Some(Hand::Tools);
    }
    match kind {
        "vendor-token" => return Some(Hand::Vendor(Vendors::new())),
        "authorization" => return Some(Hand::Header(Header::Authorization)),
        "api-key-header" => return Some(Hand::Header(Header::ApiKey)),
        "bearer-token" => return Some(Hand::Header(Header::Bearer)),
        "card" | "ssn" | "iban" | "phone" => return Pii::new(kind, pattern).map(Hand::Pii),
        _ => {}
    }
    if let Some(l) = Literal::new(pattern) {
        return Some(Hand::Literal(l));
    }
    let token = |class, min, max, end_boundary| {
        Spec::Token(Token {
            mid: None,
            class,
            min,
            max,
            end_boundary,
        })
    };
    let (prefixes, spec): (&'static [&'static str], Spec) = match pattern {
        r"\b(?P<s>(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z2-7]{16})\b" => (
            &[
                "AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "AGPA",
            ],
            token(base32, 16, 16, true),
        ),
        r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,251})\b" => (
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
            token(alnum, 36, 251, true),
        ),
        r"\b(?P<s>github_pat_[A-Za-z0-9_]{22,247})\b" => {
            (&["github_pat_"], token(alnum_underscore, 22, 247, true))
        }
        r"\b(?P<s>gl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]{20,})" => (
            &["glpat-", "gldt-", "glrt-", "glptt-", "glcbt-"],
            token(base64url, 20, usize::MAX, false),
        ),
        r"\b(?P<s>xox[abposre]-[A-Za-z0-9-]{10,})" => (
            &[
                "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-",
            ],
            token(alnum_dash, 10, usize::MAX, false),
        ),
        r"\b(?P<s>xapp-\d-[A-Za-z0-9-]{10,})" => (
            &[
                "xapp-0-", "xapp-1-", "xapp-2-", "xapp-3-", "xapp-4-", "xapp-5-", "xapp-6-",
                "xapp-7-", "xapp-8-", "xapp-9-",
            ],
            token(alnum_dash, 10, usize::MAX, false),
        ),
        r"\b(?P<s>sk-ant-[a-z0-9]{2,10}-[A-Za-z0-9_-]{20,})" => (
            &["sk-ant-"],
            Spec::Token(Token {
                mid: Some(Mid {
                    class: lower_digit,
                    lo: 2,
                    hi: 10,
                    sep: b'-',
                }),
                class: base64url,
                min: 20,
                max: usize::MAX,
                end_boundary: false,
            }),
        ),
        // The optional `proj-` (and the others) are in the class too: with or without
        // them the match runs to the end of the class after `sk-`, and it needs 20.
        r"\b(?P<s>sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,})" => {
            (&["sk-"], token(base64url, 20, usize::MAX, false))
        }
        r"\b(?P<s>AIza[0-9A-Za-z_-]{35})" => (&["AIza"], token(base64url, 35, 35, false)),
        r"\b(?P<s>hf_[A-Za-z0-9]{30,40})\b" => (&["hf_"], token(alnum, 30, 40, true)),
        r"\b(?P<s>[sr]k_(?:live|test|prod)_[A-Za-z0-9]{16,})" => (
            &[
                "sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_",
            ],
            token(alnum, 16, usize::MAX, false),
        ),
        r"\b(?P<s>npm_[A-Za-z0-9]{36})\b" => (&["npm_"], token(alnum, 36, 36, true)),
        r"\b(?P<s>gsk_[A-Za-z0-9]{40,})" => (&["gsk_"], token(alnum, 40, usize::MAX, false)),
        r"\b(?P<s>xai-[A-Za-z0-9]{40,})" => (&["xai-"], token(alnum, 40, usize::MAX, false)),
        r"\b(?P<s>r8_[A-Za-z0-9]{37})\b" => (&["r8_"], token(alnum, 37, 37, true)),
        r"\b(?P<s>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,})" => {
            (&["eyJ"], Spec::Jwt)
        }
        _ => return None,
    };
    Some(Hand::Prefixed(Prefixed::new(prefixes, spec)))
}

#[cfg(test)]
mod tests {
    use crate::{MaskConfig, Masker, corpus};

    /// Per detector, generated near-misses around its own prefixes: every count one
    /// short, exact and one over, word and non-word neighbours, prefixes inside prefixes.
    fn near_misses(rng: &mut corpus::Rng, literals: &[&str]) -> Vec<String> {
        const PIECES: &[&str] = &[
            "a", "Z", "7", "2", "_", "-", ".", " ", "/", "=", "é", "ab", "-x-", "..", "AA",
        ];
        let mut out = Vec::new();
        for _ in 0..3000 {
            let mut t = String::new();
            for _ in 0..rng.range(1, 4) {
                if rng.chance(30) {
                    t.push_str(rng.pick(PIECES));
                }
                t.push_str(rng.pick(literals));
                if rng.chance(20) {
                    t.push_str(&rng.chars_n("abcdefghijklmnopqrstuvwxyz0123456789", 1, 12));
                    t.push(*rng.pick(&[&'-', &'.', &'_']));
                }
                let alphabet = rng.pick(&[
                    corpus::BASE62,
                    corpus::BASE64URL,
                    corpus::BASE32,
                    "abc123",
                    "ABC234.-",
                ]);
                let n = *rng.pick(&[
                    &1, &9, &10, &11, &15, &16, &17, &19, &20, &21, &22, &29, &30, &34, &35, &36,
                    &37, &38, &39, &40, &41, &60, &247, &248, &251, &252,
                ]);
                t.push_str(&rng.chars(alphabet, n));
                if rng.chance(50) {
                    t.push_str(rng.pick(PIECES));
                }
            }
            out.push(t);
        }
        out
    }

    #[test]
    fn hand_matchers_agree_with_regexes() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        let texts = corpus::texts();
        let mut rng = corpus::Rng::new(corpus::SEED);
        let mut hands = 0;
        for d in m.detectors() {
            let Some(super::Hand::Prefixed(hand)) = &d.hand else {
                continue;
            };
            hands += 1;
            let mut matched = 0;
            for t in texts.iter().chain(&near_misses(&mut rng, hand.literals)) {
                let want: Vec<_> = d.regex.find_iter(t).map(|m| m.range()).collect();
                let mut got = Vec::new();
                hand.find_iter(t, |r| got.push(r));
                assert_eq!(got, want, "{} on {t:?}", d.kind);
                matched += want.len();
            }
            assert!(matched > 20, "{}: only {matched} matches compared", d.kind);
        }
        assert_eq!(
            hands, 16,
            "the vendor-token detectors and JWTs have hand matchers"
        );
    }

    /// `Hand::find_iter` relies on overlapping matches coming in start order: no prefix
    /// ends inside another one (after its first byte) or with it.
    #[test]
    fn prefixes_come_in_start_order() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        for d in m.detectors() {
            let Some(super::Hand::Prefixed(hand)) = &d.hand else {
                continue;
            };
            for a in hand.literals {
                for b in hand.literals {
                    for i in 1..a.len() {
                        // Inside `a` and ending no later: it would come first.
                        assert!(!a[i..].starts_with(b), "{b} in {a}");
                    }
                }
            }
        }
    }
}
