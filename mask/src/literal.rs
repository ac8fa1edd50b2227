//! Hand-written matchers for detectors whose regex hangs off a fixed literal or byte:
//! emails (`@`), PEM private keys (`-----BEGIN `), GCP key ids (`"private_key_id"`),
//! Slack webhooks (`hooks.slack.com/`), Azure keys (`=` after `AccountKey`) and SAS
//! signatures (`sig=` after `?` or `&`), and passwords in URLs (`://`).
//!
//! The regex engine searches these with a literal prefilter too, but then runs its lazy
//! DFA over each candidate (and back over emails and URLs for their start), through
//! tables that, with forty detectors, no longer fit in the CPU's caches. Here the rest
//! is a few scans of byte classes. The regexes stay the definition:
//! `literal_matchers_agree_with_regexes` runs both on the corpus and on near-misses.
//!
//! What the regexes do, worked out:
//! - No class in these patterns holds the byte that must follow it (`@` after the local
//!   part, `.` after a domain label, `:` after a URL's user), so each greedy run takes
//!   all it can and giving bytes back never helps; the exceptions are below.
//! - Email: the domain's labels are whole runs, and `\.[A-Za-z]{2,24}\b` can only end
//!   where a label's leading letters end before a non-word byte. The greedy
//!   `(?:\.label)*` wants the last label where that holds.
//! - Private key: `(?:[A-Z0-9]+ )*` swallows `PRIVATE ` too, so it is the last word
//!   start followed by `PRIVATE KEY` (and ` BLOCK` when there is one) that counts.
//! - Starts: the leftmost position before the anchor from which the run of the
//!   pattern's head class reaches it, at a word boundary where the pattern has `\b`.
//! - `(?i)` folds `k` and `s` with U+212A and U+017F: the Azure key names are matched
//!   with them, the URL scheme (a counted class) goes to the regex on texts holding
//!   their lead bytes ([`Literal::handles`]).
use std::ops::Range;

use memchr::memmem::Finder;

use crate::groups::{is_space, is_word};

/// The end of the run of `class` bytes from `at`.
fn run(h: &[u8], mut at: usize, class: impl Fn(u8) -> bool) -> usize {
    while at < h.len() && class(h[at]) {
        at += 1;
    }
    at
}

/// Where `kw` (lowercase ASCII) ends at `end` under `(?i)`, not starting before `from`:
/// its start. A byte before `end` is either an ASCII letter or the last byte of a fold,
/// so matching backwards needs no choices.
fn folded_before(h: &[u8], from: usize, end: usize, kw: &[u8]) -> Option<usize> {
    const LONG_S: &[u8] = "\u{17f}".as_bytes();
    const KELVIN: &[u8] = "\u{212a}".as_bytes();
    let mut at = end;
    for &c in kw.iter().rev() {
        if at > from && h[at - 1].to_ascii_lowercase() == c {
            at -= 1;
        } else if c == b's' && at >= from + 2 && h[..at].ends_with(LONG_S) {
            at -= 2;
        } else if c == b'k' && at >= from + 3 && h[..at].ends_with(KELVIN) {
            at -= 3;
        } else {
            return None;
        }
    }
    Some(at)
}

/// A detector's matcher: its kind and a searcher for its anchor.
pub(crate) struct Literal {
    pub(crate) kind: Kind,
    /// Boxed: a finder is several times the size of the other hand matchers.
    anchor: Box<Finder<'static>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Email,
    PrivateKey,
    GcpKeyId,
    SlackWebhook,
    AzureAccountKey,
    AzureSig,
    UrlPassword,
}

impl Literal {
    /// The matcher for a built-in pattern (as `detectors::builtins` gives it), if any.
    pub(crate) fn new(pattern: &str) -> Option<Literal> {
        let kind = Kind::new(pattern)?;
        Some(Literal {
            kind,
            anchor: Box::new(Finder::new(kind.anchor())),
        })
    }

    /// Whether [`Literal::find_iter`] stands in for the regex on `text`.
    pub(crate) fn handles(&self, text: &str) -> bool {
        self.kind != Kind::UrlPassword || memchr::memchr2(0xC5, 0xE2, text.as_bytes()).is_none()
    }

    /// The matches `Regex::find_iter` gives for the pattern.
    pub(crate) fn find_iter(&self, text: &str, mut found: impl FnMut(Range<usize>)) {
        let h = text.as_bytes();
        // Matches start at or after `from`, the end of the previous one.
        let (mut from, mut at) = (0, 0);
        while let Some(i) = self.anchor.find(&h[at..]).map(|i| at + i) {
            match self.kind.at(h, from, i) {
                Some(m) => {
                    at = m.end;
                    from = m.end;
                    found(m);
                }
                None => at = i + 1,
            }
        }
    }
}

impl Kind {
    fn new(pattern: &str) -> Option<Kind> {
        Some(match pattern {
            r"\b(?P<s>[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24})\b" => {
                Kind::Email
            }
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----" => Kind::PrivateKey,
            r#""private_key_id"(?-u:\s)*:(?-u:\s)*"(?P<s>[0-9a-f]{40})""# => Kind::GcpKeyId,
            r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_-]{10,})" => {
                Kind::SlackWebhook
            }
            r"(?i:AccountKey|SharedAccessKey)=(?P<s>[A-Za-z0-9+/=]{20,})" => Kind::AzureAccountKey,
            r"[?&]sig=(?P<s>[A-Za-z0-9%+/=]{16,})" => Kind::AzureSig,
            r"(?i:\b[a-z][a-z0-9+.-]{1,15}://[^\t\n\x0B\x0C\r :/@?#]*:)(?P<s>[^\t\n\x0B\x0C\r /@?#]+)@" => {
                Kind::UrlPassword
            }
            _ => return None,
        })
    }

    fn anchor(self) -> &'static [u8] {
        match self {
            Kind::Email => b"@",
            Kind::PrivateKey => b"-----BEGIN ",
            Kind::GcpKeyId => br#""private_key_id""#,
            Kind::SlackWebhook => b"hooks.slack.com/",
            Kind::AzureAccountKey => b"=",
            Kind::AzureSig => b"sig=",
            Kind::UrlPassword => b"://",
        }
    }

    /// The leftmost match that holds the anchor at `i`, if any; no match starting at or
    /// after `from` and before it exists.
    fn at(self, h: &[u8], from: usize, i: usize) -> Option<Range<usize>> {
        let after = i + self.anchor().len();
        match self {
            Kind::Email => {
                let end = email_domain(h, after)?;
                let local = |b: u8| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
                };
                let mut r = i;
                while r > from && local(h[r - 1]) {
                    r -= 1;
                }
                let start = (r..i)
                    .find(|&p| h[p].is_ascii_alphanumeric() && (p == 0 || !is_word(h[p - 1])))?;
                Some(start..end)
            }
            Kind::PrivateKey => {
                let mut at = after;
                let mut end = None;
                loop {
                    end = key_tail(h, at).or(end);
                    let w = run(h, at, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
                    if w == at || h.get(w) != Some(&b' ') {
                        break;
                    }
                    at = w + 1;
                }
                Some(i..end?)
            }
            Kind::GcpKeyId => {
                let at = run(h, after, is_space);
                (h.get(at) == Some(&b':')).then_some(())?;
                let v = run(h, at + 1, is_space);
                let hex = h.get(v..v + 42)?;
                let ok = hex[0] == b'"'
                    && hex[41] == b'"'
                    && hex[1..41]
                        .iter()
                        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                ok.then_some(i..v + 42)
            }
            Kind::SlackWebhook => {
                let word = [&b"services/"[..], b"workflows/", b"triggers/"]
                    .into_iter()
                    .find(|w| h[after..].starts_with(w))?;
                let v = after + word.len();
                let end = run(h, v, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')
                });
                (end - v >= 10).then_some(i..end)
            }
            Kind::AzureAccountKey => {
                let start = folded_before(h, from, i, b"accountkey")
                    .or_else(|| folded_before(h, from, i, b"sharedaccesskey"))?;
                let end = run(h, after, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
                });
                (end - after >= 20).then_some(start..end)
            }
            Kind::AzureSig => {
                if i <= from || !matches!(h[i - 1], b'?' | b'&') {
                    return None;
                }
                let end = run(h, after, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'%' | b'+' | b'/' | b'=')
                });
                (end - after >= 16).then_some(i - 1..end)
            }
            Kind::UrlPassword => {
                // `[^\s:/@?#]*:` then `[^\s/@?#]+@`.
                let user = run(h, after, |b| {
                    !is_space(b) && !matches!(b, b':' | b'/' | b'@' | b'?' | b'#')
                });
                (h.get(user) == Some(&b':')).then_some(())?;
                let pass = run(h, user + 1, |b| {
                    !is_space(b) && !matches!(b, b'/' | b'@' | b'?' | b'#')
                });
                (pass > user + 1 && h.get(pass) == Some(&b'@')).then_some(())?;
                // `\b[a-z][a-z0-9+.-]{1,15}` right before `://`.
                let scheme = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-');
                let mut r = i;
                while r > from && scheme(h[r - 1]) {
                    r -= 1;
                }
                let start = (r.max(i.saturating_sub(16))..i.saturating_sub(1))
                    .find(|&p| h[p].is_ascii_alphabetic() && (p == 0 || !is_word(h[p - 1])))?;
                Some(start..pass + 1)
            }
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b` at `at`: its end.
fn email_domain(h: &[u8], at: usize) -> Option<usize> {
    let label = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    if !h.get(at)?.is_ascii_alphanumeric() {
        return None;
    }
    let mut at = run(h, at, label);
    let mut end = None;
    while h.get(at) == Some(&b'.') && h.get(at + 1).is_some_and(|&b| label(b)) {
        let letters = run(h, at + 1, |b| b.is_ascii_alphabetic());
        if (2..=24).contains(&(letters - at - 1)) && h.get(letters).is_none_or(|&b| !is_word(b)) {
            end = Some(letters);
        }
        at = run(h, at + 1, label);
    }
    end
}

/// `PRIVATE KEY(?: BLOCK)?-----` at `at`: its end.
fn key_tail(h: &[u8], at: usize) -> Option<usize> {
    let rest = h[at..].strip_prefix(b"PRIVATE KEY")?;
    if rest.starts_with(b" BLOCK-----") {
        Some(at + 22)
    } else {
        rest.starts_with(b"-----").then_some(at + 16)
    }
}

#[cfg(test)]
mod tests;
