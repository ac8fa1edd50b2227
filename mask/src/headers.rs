//! Hand-written matchers for the header detectors (`authorization`, `api-key-header`,
//! `bearer-token` in `detectors`): they have no literal prefix the regex engine can
//! start from, so it runs a reverse automaton back from each keyword and a forward one
//! over the value, for every `Authorization:` or `Bearer` in a text.
//!
//! What the regexes do, worked out (`header_matchers_agree_with_regexes` holds the two
//! together on the corpus and on generated near-misses):
//! - A header match is `NAME \s* : \s* VALUE`: every match ends its name right before
//!   spaces and a `:`, and no name holds a `:`, so starting from each `:` in turn and
//!   looking back finds the matches in order.
//! - Of the names that end there, the leftmost that starts at a word boundary wins
//!   (`x-goog-api-key` over the `api-key` inside it); all share the value.
//! - `authorization`'s optional scheme (any word: `Bearer `, `Basic `, `Api-Token `)
//!   is taken when a value of 4 or more follows it, else the value starts at the
//!   scheme word itself.
//! - Under `(?i)`, `k` and `s` also match U+212A and U+017F, which only non-ASCII text
//!   holds: such texts go to the regex ([`Header::handles`]).
use std::ops::Range;

use crate::groups::{boundary, is_space};

/// `[^\s"',]`: a header value.
fn header_value(b: u8) -> bool {
    !is_space(b) && !matches!(b, b'"' | b'\'' | b',')
}

/// `[A-Za-z0-9._~+/=-]`: a bearer token.
fn bearer_value(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
}

fn run(h: &[u8], at: usize, class: fn(u8) -> bool) -> usize {
    h[at.min(h.len())..]
        .iter()
        .position(|&b| !class(b))
        .unwrap_or(h.len().saturating_sub(at))
}

fn skip_spaces(h: &[u8], mut at: usize) -> usize {
    while h.get(at).is_some_and(|&b| is_space(b)) {
        at += 1;
    }
    at
}

fn starts_with_ci(h: &[u8], at: usize, word: &[u8]) -> bool {
    h.len() >= at + word.len() && h[at..at + word.len()].eq_ignore_ascii_case(word)
}

const AUTHORIZATION: &[&str] = &["proxy-authorization", "authorization"];
/// `[a-z][a-z0-9_-]*` under `(?i)`: an authentication scheme (`Bearer`, `Basic`,
/// `Api-Token`, `SSWS`, any other), which comes before the credential.
fn scheme(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
const API_KEY_NAMES: &[&str] = &[
    "x-api-key",
    "api-key",
    "x-auth-token",
    "private-token",
    "x-vault-token",
    "x-goog-api-key",
    "x-api-token",
    "job-token",
    "api-token",
    "auth-token",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// `(?i:\b(?:proxy-)?authorization\s*:\s*(?:[a-z][a-z0-9_-]*\s+)?)[^\s"',]{4,}`
    Authorization,
    /// `(?i:\b(?:NAMES)\s*:\s*)[^\s"',]{4,}`
    ApiKey,
    /// `(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}`
    Bearer,
}

impl Header {
    /// Whether [`Header::find_iter`] stands in for the regex on `text`.
    pub(crate) fn handles(&self, text: &str) -> bool {
        text.is_ascii()
    }

    /// The matches `Regex::find_iter` gives for the pattern, on ASCII text.
    pub(crate) fn find_iter(&self, text: &str, mut found: impl FnMut(Range<usize>)) {
        let h = text.as_bytes();
        let mut at = 0;
        match self {
            Header::Bearer => {
                while let Some(i) = h[at..].iter().position(|&b| b | 0x20 == b'b') {
                    let q = at + i;
                    if starts_with_ci(h, q, b"bearer") && boundary(h, q) {
                        let v = skip_spaces(h, q + 6);
                        let n = run(h, v, bearer_value);
                        if v > q + 6 && n >= 8 {
                            found(q..v + n);
                            at = v + n;
                            continue;
                        }
                    }
                    at = q + 1;
                }
            }
            Header::Authorization | Header::ApiKey => {
                let names = if *self == Header::Authorization {
                    AUTHORIZATION
                } else {
                    API_KEY_NAMES
                };
                while let Some(i) = h[at..].iter().position(|&b| b == b':') {
                    let c = at + i;
                    if let Some(r) = self.header_at(h, at, c, names) {
                        at = r.end;
                        found(r);
                        continue;
                    }
                    at = c + 1;
                }
            }
        }
    }

    /// The match whose name ends before the `:` at `c` and starts at `from` or later.
    fn header_at(&self, h: &[u8], from: usize, c: usize, names: &[&str]) -> Option<Range<usize>> {
        let mut e = c;
        while e > from && is_space(h[e - 1]) {
            e -= 1;
        }
        // The leftmost start wins; at one start only one name can end at `e`.
        let start = names
            .iter()
            .filter_map(|n| {
                let s = e.checked_sub(n.len())?;
                (s >= from && h[s..e].eq_ignore_ascii_case(n.as_bytes()) && boundary(h, s))
                    .then_some(s)
            })
            .min()?;
        let v = skip_spaces(h, c + 1);
        if *self == Header::Authorization && h.get(v).is_some_and(u8::is_ascii_alphabetic) {
            // The scheme runs to its end, as only spaces may follow it.
            let e = v + run(h, v, scheme);
            let w = skip_spaces(h, e);
            let n = run(h, w, header_value);
            if w > e && n >= 4 {
                return Some(start..w + n);
            }
        }
        let n = run(h, v, header_value);
        (n >= 4).then_some(start..v + n)
    }
}

#[cfg(test)]
mod tests {
    use crate::{MaskConfig, Masker, corpus, tokens::Hand};

    /// Names, schemes and values around the edges: every count one short, exact and
    /// one over, word and non-word neighbours, names inside names, odd spacing.
    fn near_misses(rng: &mut corpus::Rng) -> Vec<String> {
        const WORDS: &[&str] = &[
            "Authorization",
            "proxy-authorization",
            "PROXY-Authorization",
            "xproxy-authorization",
            "xauthorization",
            "x-api-key",
            "X-Api-Key: ",
            "X-Goog-Api-Key",
            "ax-api-key",
            "api-key",
            "x-auth-token",
            "Private-Token",
            "x-vault-token",
            "x-api-token",
            "job-token",
            "bearer",
            "Bearer ",
            "bearer \t",
            "Authorization: Bearer ",
            "Bearer",
            "BEARER",
            "xbearer",
            "basic",
            "token",
            "digest",
            "negotiate",
            "apikey",
            "sso-key",
            "Api-Token",
            "api-token",
            "SSWS",
            "x_y",
            "A-",
        ];
        const PIECES: &[&str] = &[
            ":", ": ", " :", "  :\t", "\n", " ", "  ", "\"", "'", ",", "-", "_", "=", "a", "é",
        ];
        let mut out = Vec::new();
        for _ in 0..6000 {
            let mut t = String::new();
            for _ in 0..rng.range(1, 5) {
                match rng.below(4) {
                    0 | 1 => t.push_str(rng.pick(WORDS)),
                    2 => t.push_str(rng.pick(PIECES)),
                    _ => {
                        let n = *rng.pick(&[&1, &3, &4, &5, &7, &8, &9, &20]);
                        let alphabet = rng.pick(&[corpus::BASE64, corpus::BASE62, "ab.~=,\"' "]);
                        t.push_str(&rng.chars(alphabet, n));
                    }
                }
            }
            out.push(t);
        }
        out
    }

    /// Any scheme's credential is masked, not the scheme word; a scheme without one
    /// is left.
    #[test]
    fn any_authorization_scheme() {
        let m = Masker::new(&MaskConfig::default(), [2; 32]).unwrap();
        for scheme in ["Api-Token", "SSWS", "Bearer", "Basic", "Splunk", "GenieKey"] {
            let text = format!("curl -H \"Authorization: {scheme} 9f3Kx2Lm8Qw4Rt6Yp1Zs\" x");
            let out = m.mask(&text);
            assert!(out.contains(&format!("{scheme} …[")), "{out}");
            assert!(!out.contains("9f3Kx2Lm8Qw4Rt6Yp1Zs"), "{out}");
        }
        for text in [
            "Authorization: Basic ...",
            "Authorization: Bearer XXXXXXXXXXXX",
            "Authorization: Bearer $TOKEN",
        ] {
            assert_eq!(m.mask(text), text);
        }
        let out = m.mask("curl -H 'Api-Token: Sk94HG7f6KBq' x");
        assert!(!out.contains("Sk94HG7f6KBq"), "{out}");
    }

    #[test]
    fn header_matchers_agree_with_regexes() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        let mut texts = corpus::texts();
        let mut rng = corpus::Rng::new(corpus::SEED);
        texts.extend(near_misses(&mut rng));
        let mut headers = 0;
        for d in m.detectors() {
            let Some(Hand::Header(hand)) = &d.hand else {
                continue;
            };
            headers += 1;
            let (mut matched, mut handled) = (0, 0);
            for t in &texts {
                if !hand.handles(t) {
                    continue;
                }
                handled += 1;
                let want: Vec<_> = d.regex.find_iter(t).map(|m| m.range()).collect();
                let mut got = Vec::new();
                hand.find_iter(t, |r| got.push(r));
                assert_eq!(got, want, "{} on {t:?}", d.kind);
                matched += want.len();
            }
            assert!(
                matched > 100 && handled > 5000,
                "{}: only {matched} matches in {handled} texts compared",
                d.kind
            );
        }
        assert_eq!(headers, 3, "authorization, api-key and bearer headers");
    }
}
