//! What a built-in detector's match must pass to be masked (its `check`), how much of
//! the secret stays visible in the marker (`keep`), and the cheap gates that decide
//! whether its regex runs at all.
use std::ops::Range;

use crate::{Scan, checks, groups::Groups};

/// The secret of a match, with the text it spans.
struct Secret<'h> {
    range: Range<usize>,
    text: &'h str,
}

impl Secret<'_> {
    fn as_str(&self) -> &str {
        self.text
    }

    fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    fn start(&self) -> usize {
        self.range.start
    }

    fn end(&self) -> usize {
        self.range.end
    }

    fn len(&self) -> usize {
        self.range.len()
    }
}

fn secret<'h>(g: &Groups, h: &'h str) -> Option<Secret<'h>> {
    let range = g.s.clone()?;
    let text = h.get(range.clone())?;
    Some(Secret { range, text })
}

pub(super) fn plain(g: &Groups, _: &str) -> Option<Range<usize>> {
    g.s.clone().filter(|r| !r.is_empty())
}

pub(super) fn none(_: &str) -> (usize, usize) {
    (0, 0)
}

pub(super) fn keep_to_underscore_or_dash(s: &str) -> (usize, usize) {
    // Vendor prefixes end at their last `_` or `-` within the first 12 bytes
    // (`ghp_`, `github_pat_`, `sk-proj-`, `xoxb-`, `glpat-`).
    let head = &s[..s.len().min(12)];
    (head.rfind(['_', '-']).map_or(0, |i| i + 1), 0)
}

pub(super) fn keep4(_: &str) -> (usize, usize) {
    (4, 0)
}

pub(super) fn keep3(_: &str) -> (usize, usize) {
    (3, 0)
}

pub(super) fn keep2(_: &str) -> (usize, usize) {
    (2, 0)
}

pub(super) fn keep_domain(s: &str) -> (usize, usize) {
    (0, s.len() - s.rfind('@').unwrap_or(s.len()))
}

pub(super) fn keep_last4(_: &str) -> (usize, usize) {
    (0, 4)
}

/// From the end of a `BEGIN ... PRIVATE KEY` line to its `END` line, or to the end of
/// the text when it was cut off (argv is capped).
pub(super) fn pem_body(g: &Groups, h: &str) -> Option<Range<usize>> {
    let start = g.whole.end;
    let end = h[start..].find("-----END ").map_or(h.len(), |i| start + i);
    (end - start >= 8).then_some(start..end)
}

pub(super) fn openai(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let tail = &h[m.start() + 3..m.end()];
    let mixed = tail.bytes().any(|b| b.is_ascii_digit())
        && tail.bytes().any(|b| b.is_ascii_uppercase())
        && tail.bytes().any(|b| b.is_ascii_lowercase());
    mixed.then(|| m.range())
}

pub(super) fn jwt(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::jwt(m.as_str()).then(|| m.range())
}

pub(super) fn has_digit_or_case_mix(v: &str) -> bool {
    v.bytes().any(|b| b.is_ascii_digit())
        || (v.bytes().any(|b| b.is_ascii_uppercase()) && v.bytes().any(|b| b.is_ascii_lowercase()))
        || v.len() >= 20
}

pub(super) fn token_value(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    (has_digit_or_case_mix(m.as_str()) && checks::is_literal_password(m.as_str()))
        .then(|| m.range())
}

pub(super) fn password_value(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::is_literal_password(m.as_str()).then(|| m.range())
}

pub(super) fn secret_flag_value(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let v = m.as_str();
    (checks::is_literal_password(v) && !v.starts_with(['/', '~', '.', '@'])).then(|| m.range())
}

/// `needle` (lowercase ASCII) in `hay`, ASCII case-insensitively: the name checks run
/// on every `NAME=VALUE` candidate, and lowercasing a copy first costs an allocation.
pub(super) fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

pub(super) fn ends_with_ci(hay: &str, suffix: &str) -> bool {
    hay.len() >= suffix.len()
        && hay.as_bytes()[hay.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

pub(crate) fn password_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("pwd") || name.eq_ignore_ascii_case("oldpwd") {
        return false;
    }
    contains_ci(name, "password")
        || contains_ci(name, "passwd")
        || contains_ci(name, "passphrase")
        || ["pass", "pwd"].iter().any(|w| {
            name.eq_ignore_ascii_case(w)
                || (ends_with_ci(name, w)
                    && name[..name.len() - w.len()].ends_with(['_', '-', '.']))
        })
}

pub(super) fn password_assign(g: &Groups, h: &str) -> Option<Range<usize>> {
    let name = h.get(g.n.clone()?)?;
    if !password_name(name) {
        return None;
    }
    password_value(g, h)
}

/// Names of public key material and key ids: identifiers, not secrets (`GPG_KEY` holds a
/// fingerprint in the official language images).
pub(crate) fn public_name(name: &str) -> bool {
    ["gpg", "public", "pub_key", "pubkey"]
        .iter()
        .any(|w| contains_ci(name, w))
}

pub(super) fn secret_assign(g: &Groups, h: &str) -> Option<Range<usize>> {
    if public_name(h.get(g.n.clone()?)?) {
        return None;
    }
    let m = secret(g, h)?;
    checks::looks_random(m.as_str()).then(|| m.range())
}

pub(super) fn email(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    // `git@github.com:org/repo` is a remote, `ssh://git@host` a URL's user. Lengths
    // are checked here rather than counted in the regex, which would blow up its
    // automaton (RFC 5321: local part 64, domain 255).
    let at = m.as_str().rfind('@')?;
    if h[m.end()..].starts_with(':')
        || h[..m.start()].ends_with("//")
        || at > 64
        || m.len() - at - 1 > 255
    {
        return None;
    }
    Some(m.range())
}

pub(super) fn card(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::card(m.as_str()).then(|| m.range())
}

pub(super) fn ssn(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::ssn(m.as_str()).then(|| m.range())
}

pub(super) fn iban(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let len = checks::iban_prefix(m.as_str())?;
    Some(m.start()..m.start() + len)
}

pub(super) fn nanp(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::nanp(m.as_str()).then(|| m.range())
}

pub(super) fn e164(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    checks::e164(m.as_str()).then(|| m.range())
}

pub(super) fn not_numeric(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    (!m.as_str().bytes().all(|b| b.is_ascii_digit())).then(|| m.range())
}

pub(super) fn has_assign(h: &str, _: &Scan) -> bool {
    h.contains(['=', ':'])
}

pub(super) fn has_colon(h: &str, _: &Scan) -> bool {
    h.contains(':')
}

/// Two capitals and two digits after a word boundary, the start of every IBAN
/// candidate (and every IBAN has 8 digits or more).
pub(super) fn iban_gate(_: &str, s: &Scan) -> bool {
    s.digits >= 8 && s.iban_head
}
