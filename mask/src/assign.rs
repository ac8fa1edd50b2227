//! A hand-written matcher for the `NAME=VALUE` detectors (`detectors::PASS_NAMES`,
//! `SECRET_NAMES` followed by `["']?\s*[=:]\s*VALUE`), the most common and the most
//! expensive of the regexes: it has no literal prefix, so the regex engine finds a
//! keyword, runs a reverse automaton back to the start of the name and a forward one
//! over the value, for every `key=`, `token:` or `"private_key":` in a text.
//!
//! What the regex does, worked out (the `assignments_agree_with_regexes` test holds
//! the two together on the corpus and on generated near-misses):
//! - `[A-Za-z0-9_.-]*` is greedy and keyword letters are in its class, so the name
//!   ends at the last keyword, in the run of name characters, that a valid rest
//!   follows. A rest starts with a quote, a space, `=` or `:`, none of them name
//!   characters, so an ASCII keyword must end where the run ends.
//! - `(?i)` folds `k` with U+212A (KELVIN SIGN) and `s` with U+017F (LONG S): those
//!   are not name characters, so the run ends where one stands in a keyword.
//! - The match starts at the first word boundary in the run at or before the keyword.
//! - `["']?`, both `\s*` and the value are all greedy with nothing to give back to.
use std::ops::Range;

use crate::groups::{boundary, is_space};

/// `[A-Za-z0-9_.-]`.
fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

const LONG_S: &[u8] = "\u{17f}".as_bytes();
const KELVIN: &[u8] = "\u{212a}".as_bytes();

/// The end of `kw` (lowercase ASCII) matched case-insensitively at `at`, with the two
/// non-ASCII case folds of ASCII letters.
fn keyword_at(h: &[u8], mut at: usize, kw: &[u8]) -> Option<usize> {
    for &c in kw {
        let b = *h.get(at)?;
        if b.to_ascii_lowercase() == c {
            at += 1;
        } else if c == b's' && h[at..].starts_with(LONG_S) {
            at += LONG_S.len();
        } else if c == b'k' && h[at..].starts_with(KELVIN) {
            at += KELVIN.len();
        } else {
            return None;
        }
    }
    Some(at)
}

/// The type names a declaration may put between a name and its `=`
/// (`var token string = …`, `val token: String = …`), in the regex's order.
const TYPES: &[&[u8]] = &[b"string", b"String", b"str", b"&str"];

fn spaces(h: &[u8], mut at: usize) -> usize {
    while h.get(at).is_some_and(|&b| is_space(b)) {
        at += 1;
    }
    at
}

/// `TYPE \s* =` at `at`: its end, for the first type name that fits.
fn typed(h: &[u8], at: usize) -> Option<usize> {
    TYPES.iter().find_map(|t| {
        if !h[at.min(h.len())..].starts_with(t) {
            return None;
        }
        let p = spaces(h, at + t.len());
        (h.get(p) == Some(&b'=')).then_some(p + 1)
    })
}

/// The ends of the operator alternatives that parse at `at`, in the regex's order
/// (`detectors::ASSIGN_OPS`):
/// `\s*:\s*TYPE\s*=`, `\s+TYPE\s*=`, `\s*(?::{1,3}=|[?+]=|=>|[=:])`, `\s+\.=`.
fn operators(h: &[u8], at: usize) -> [Option<usize>; 7] {
    let p = spaces(h, at);
    let byte = |i: usize| h.get(i).copied();
    let colon_typed = (byte(p) == Some(b':'))
        .then(|| typed(h, spaces(h, p + 1)))
        .flatten();
    let spaced_typed = (p > at).then(|| typed(h, p)).flatten();
    let colons = h[p.min(h.len())..]
        .iter()
        .take_while(|&&b| b == b':')
        .count();
    let walrus =
        ((1..=3).contains(&colons) && byte(p + colons) == Some(b'=')).then_some(p + colons + 1);
    let compound =
        (matches!(byte(p), Some(b'?' | b'+')) && byte(p + 1) == Some(b'=')).then_some(p + 2);
    let arrow = (byte(p) == Some(b'=') && byte(p + 1) == Some(b'>')).then_some(p + 2);
    let plain = matches!(byte(p), Some(b'=' | b':')).then_some(p + 1);
    let append = (p > at && byte(p) == Some(b'.') && byte(p + 1) == Some(b'=')).then_some(p + 2);
    [
        colon_typed,
        spaced_typed,
        walrus,
        compound,
        arrow,
        plain,
        append,
    ]
}

/// `VALUE` at `at`: the value (inside its quotes) and where the match ends.
fn value(h: &[u8], at: usize, quoted_only: bool) -> Option<(Range<usize>, usize)> {
    match *h.get(at)? {
        q @ (b'"' | b'\'') => {
            let close = at + 1 + h[at + 1..].iter().position(|&b| b == q)?;
            Some((at + 1..close, close + 1))
        }
        _ if quoted_only => None,
        _ => {
            let n = h[at..]
                .iter()
                .position(|&b| is_space(b) || matches!(b, b'"' | b'\'' | b',' | b';' | b'&'))
                .unwrap_or(h.len() - at);
            (n > 0).then_some((at..at + n, at + n))
        }
    }
}

/// What follows a name (`detectors::ASSIGN_REST`) at `at`: the value and the end of
/// the match, taking the alternatives in the regex's order. A call argument
/// (`("NAME", "value")`) wants both quoted; otherwise an optional closing quote of the
/// name, an operator, spaces and a value.
pub(crate) fn rest_at(h: &[u8], at: usize) -> Option<(Range<usize>, usize)> {
    let quote = matches!(h.get(at), Some(b'"' | b'\''));
    if quote {
        let p = spaces(h, at + 1);
        if h.get(p) == Some(&b',')
            && let Some(v) = value(h, spaces(h, p + 1), true)
        {
            return Some(v);
        }
    }
    // With a quote there, no operator can start at it: only the quoted form counts.
    let at = at + usize::from(quote);
    operators(h, at)
        .into_iter()
        .flatten()
        .find_map(|op| value(h, spaces(h, op), false))
}

/// The end of the match when a valid rest follows at `at`.
fn rest(h: &[u8], at: usize) -> Option<usize> {
    rest_at(h, at).map(|(_, end)| end)
}

/// The names' keywords, in the regex's order of alternatives.
pub(crate) struct Assign {
    keywords: &'static [&'static str],
    /// The keywords' last letters, lower case: a run of name characters that ends in
    /// none of them needs no closer look (most words before a space).
    last: [bool; 128],
}

pub(crate) const PASS_KEYWORDS: &[&str] = &["password", "passwd", "passphrase", "pass", "pwd"];
/// `credentials?` is greedy: with the `s` first.
pub(crate) const SECRET_KEYWORDS: &[&str] = &[
    "secret",
    "token",
    "key",
    "apikey",
    "credentials",
    "credential",
    "auth",
    "access_id",
    "accessid",
];

impl Assign {
    pub(crate) fn new(keywords: &'static [&'static str]) -> Assign {
        let mut last = [false; 128];
        for kw in keywords {
            last[usize::from(*kw.as_bytes().last().expect("a keyword"))] = true;
        }
        Assign { keywords, last }
    }

    /// The last keyword start `q` in `rs..=re` (the run of name characters `rs..re`)
    /// with a valid rest, and the end of that rest. At one start at most one keyword
    /// can be followed by a rest (the others would need a name character there).
    fn last_keyword(&self, h: &[u8], rs: usize, re: usize) -> Option<(usize, usize)> {
        // What ends the run is where a rest or a folded letter begins, or nothing can.
        let folded = matches!(h.get(re), Some(0xC5 | 0xE2));
        if !folded
            && !h
                .get(re)
                .is_some_and(|&b| is_space(b) || b"\"'=:?+".contains(&b))
        {
            return None;
        }
        // Without a fold after it, an ASCII keyword ends the run itself.
        if !folded && (re == rs || !self.last[usize::from(h[re - 1].to_ascii_lowercase() & 0x7F)]) {
            return None;
        }
        let mut best: Option<(usize, usize)> = None;
        for kw in self.keywords {
            let kw = kw.as_bytes();
            // The first `j` letters in the run, the rest from its end on: plain ASCII
            // (j == len) or from a folded letter on.
            let lo = if folded { 0 } else { kw.len() };
            for j in (lo..=kw.len()).rev() {
                if re - rs < j {
                    continue;
                }
                let q = re - j;
                if best.is_some_and(|(b, _)| b >= q) {
                    continue;
                }
                if let Some(end) = keyword_at(h, q, kw)
                    && let Some(stop) = rest(h, end)
                {
                    best = Some((q, stop));
                }
            }
        }
        best
    }

    /// The matches `Regex::find_iter` gives for the pattern.
    pub(crate) fn find_iter(&self, text: &str, found: impl FnMut(Range<usize>)) {
        self.find_iter_runs(text.as_bytes(), found);
    }

    /// Every run of name characters in turn, and where a folded letter may start a
    /// keyword. A keyword must end its run: what may follow a name (a quote, a space,
    /// `=`, `:`, `?`, `+`) is no name character. Operators after a space (`.=`, a
    /// type name) rule out anchoring on `=` and looking back.
    fn find_iter_runs(&self, h: &[u8], mut found: impl FnMut(Range<usize>)) {
        let mut at = 0;
        while at < h.len() {
            let rs = at;
            let mut re = at;
            while re < h.len() && is_name(h[re]) {
                re += 1;
            }
            if re == rs && !matches!(h[at], 0xC5 | 0xE2) {
                at += 1;
                continue;
            }
            if let Some((q, stop)) = self.last_keyword(h, rs, re)
                && let Some(p) = (rs..=q).find(|&p| boundary(h, p))
            {
                found(p..stop);
                at = stop;
                continue;
            }
            at = re.max(rs + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{MaskConfig, Masker, corpus};

    fn near_misses(rng: &mut corpus::Rng, keywords: &[&str]) -> Vec<String> {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "7",
            "_",
            "-",
            ".",
            " ",
            "  ",
            "\t",
            "=",
            ":",
            "\"",
            "'",
            ",",
            ";",
            "&",
            "/",
            "x-",
            "my_",
            "ſ",
            "\u{212a}",
            "é",
            "İ",
            "ı",
            "Å",
            "…",
            "$",
            "=\"",
            "='",
            ": ",
            ":=",
            "::=",
            ":::=",
            "::::=",
            "?=",
            "+=",
            "=>",
            " .=",
            ".=",
            " string = ",
            ": String =",
            " str=",
            "&str",
            "\", \"",
            "', '",
            "`",
            "string",
        ];
        let mut out = Vec::new();
        for _ in 0..6000 {
            let mut t = String::new();
            for _ in 0..rng.range(1, 6) {
                match rng.below(4) {
                    0 => t.push_str(rng.pick(PIECES)),
                    1 => {
                        let kw = rng.pick(keywords);
                        // Random case and, now and then, a folded letter.
                        for c in kw.chars() {
                            match (c, rng.below(8)) {
                                ('s', 0) => t.push('ſ'),
                                ('k', 0) => t.push('\u{212a}'),
                                (c, 1 | 2) => t.push(c.to_ascii_uppercase()),
                                (c, _) => t.push(c),
                            }
                        }
                    }
                    2 => t.push_str(&rng.chars_n("abcXYZ019_.-", 1, 6)),
                    _ => t.push_str(&rng.chars_n("abcdef012345!@#%*()", 1, 20)),
                }
            }
            out.push(t);
        }
        out
    }

    /// Each assignment style with a generated value masks it; placeholders and
    /// references in the same places do not.
    #[test]
    fn assignment_styles_of_many_languages() {
        let m = Masker::new(&MaskConfig::default(), [2; 32]).unwrap();
        let v = "Qw7eR4tY9uI2oP5aS8dF";
        for text in [
            format!("apiToken := \"{v}\""),
            format!("API_TOKEN ::= {v}"),
            format!("API_TOKEN :::= {v}"),
            format!("API_TOKEN ?= {v}"),
            format!("API_TOKEN?={v}"),
            format!("API_TOKEN += {v}"),
            format!("  \"api_token\" => \"{v}\","),
            format!(":auth_token => '{v}'"),
            format!("$apiToken .= \"{v}\";"),
            format!("var apiToken string = \"{v}\""),
            format!("val apiToken: String = \"{v}\""),
            format!("let api_token: &str = \"{v}\";"),
            format!("System.setProperty(\"API_TOKEN\", \"{v}\")"),
            format!("os.getenv('API_TOKEN', '{v}')"),
            format!("apiToken := `{v}`"),
            format!("dbPassword := \"hunter2-{v}\""),
        ] {
            let out = m.mask(&text);
            assert!(!out.contains(v), "{text} -> {out}");
        }
        // In backquotes: ids of digits and UUID keys, which only unquoted pass.
        for (text, v) in [
            ("discordToken := `782316847738814426`", "782316847738814426"),
            (
                "snykToken := `3f2b8c1e-7d4a-4e2b-9c1d-5a6b7c8d9e0f`",
                "3f2b8c1e-7d4a-4e2b-9c1d-5a6b7c8d9e0f",
            ),
        ] {
            let out = m.mask(text);
            assert!(!out.contains(v), "{text} -> {out}");
        }
        for text in [
            "apiToken := os.Getenv(\"API_TOKEN\")",
            "API_TOKEN ?= ${CI_TOKEN}",
            "\"api_token\" => \"<your token>\"",
            "var apiToken string = \"\"",
            "System.setProperty(\"API_TOKEN\", \"xxxxxxxxxxxxxxxxxxxx\")",
            "dbPassword := \"$DB_PASSWORD\"",
            "PuttyPassword=0",
            "token, then the secret",
            "release_token = release-2024",
            "CACHE_KEY := 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            assert_eq!(m.mask(text), text, "changed");
        }
    }

    #[test]
    fn assignments_agree_with_regexes() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        let texts = corpus::texts();
        let mut rng = corpus::Rng::new(corpus::SEED);
        let mut assigns = 0;
        for d in m.detectors() {
            let Some(crate::tokens::Hand::Assign(a)) = &d.hand else {
                continue;
            };
            assigns += 1;
            let mut matched = 0;
            for t in texts.iter().chain(&near_misses(&mut rng, a.keywords)) {
                let want: Vec<_> = d.regex.find_iter(t).map(|m| m.range()).collect();
                let mut got = Vec::new();
                a.find_iter(t, |r| got.push(r));
                assert_eq!(got, want, "{} on {t:?}", d.kind);
                matched += want.len();
            }
            assert!(matched > 100, "{}: only {matched} matches compared", d.kind);
        }
        assert_eq!(assigns, 2, "password and secret assignments");
    }
}
