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

/// An assignment's value, inside Go's and shell's backquotes when it has them (the
/// pattern's bare value takes them along).
fn unquoted<'h>(g: &Groups, h: &'h str) -> Option<Secret<'h>> {
    let m = secret(g, h)?;
    let t = m.as_str();
    if t.len() >= 3 && t.starts_with('`') && t.ends_with('`') {
        let range = m.start() + 1..m.end() - 1;
        return Some(Secret {
            text: &h[range.clone()],
            range,
        });
    }
    Some(m)
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
    // Anthropic's `sk-ant-` keys are checked by their own detector.
    if m.as_str().starts_with("sk-ant-") {
        return None;
    }
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
    (checks::is_literal_password(m.as_str()) && !checks::not_a_password(m.as_str()))
        .then(|| m.range())
}

/// A header's credential: a literal that is no placeholder (`Bearer XXXXXXXX`) and
/// not a scheme left without its credential (`Authorization: Basic ...`).
pub(super) fn header_value(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let v = m.as_str();
    let scheme_alone = ["basic", "bearer", "digest", "negotiate", "token"]
        .iter()
        .any(|s| v.eq_ignore_ascii_case(s));
    (checks::is_literal_password(v) && !checks::placeholder(v) && !scheme_alone).then(|| m.range())
}

/// A vendor token that is no placeholder (`ghp_xxxx…`, `glptt-000000…`).
pub(super) fn vendor(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    (!checks::placeholder(m.as_str())).then(|| m.range())
}

/// GitHub tokens: a valid CRC-32 checksum proves one, whatever it looks like; without
/// one (older or fine-grained tokens) it must be no placeholder.
pub(super) fn github(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    (checks::github_checksum(m.as_str()) || !checks::placeholder(m.as_str())).then(|| m.range())
}

/// Slack tokens: after the type prefix, numeric ids and a random part, at least 20
/// characters with digits, not ending in a dash (a template with the secret cut off).
pub(super) fn slack(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let rest = m.as_str().split_once('-').map_or("", |(_, r)| r);
    // Ids may repeat digits; the random part is the last segment.
    let random = rest.rsplit('-').next().unwrap_or("");
    let ok = rest.len() >= 20
        && rest.bytes().any(|b| b.is_ascii_digit())
        && !rest.ends_with('-')
        && !checks::placeholder(random);
    ok.then(|| m.range())
}

/// Anthropic keys: `sk-ant-<type>-`, then 93 base64url characters and `AA`.
pub(super) fn anthropic(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let body = m.as_str()[7..].split_once('-').map_or("", |(_, b)| b);
    (body.len() >= 80 && body.ends_with("AA") && !checks::placeholder(body)).then(|| m.range())
}

/// Google API keys are exactly 39 characters: one that runs on is something else.
pub(super) fn google(g: &Groups, h: &str) -> Option<Range<usize>> {
    let m = secret(g, h)?;
    let next = h.as_bytes().get(m.end()).copied();
    let runs_on = next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!runs_on && !checks::placeholder(m.as_str())).then(|| m.range())
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
    let m = unquoted(g, h)?;
    (checks::is_literal_password(m.as_str()) && !checks::not_a_password(m.as_str()))
        .then(|| m.range())
}

/// Names of public key material and key ids: identifiers, not secrets (`GPG_KEY` holds a
/// fingerprint in the official language images).
pub(crate) fn public_name(name: &str) -> bool {
    [
        "gpg",
        "public",
        "pub_key",
        "pubkey",
        // Keys that index, sort or cache things, and keyboard keys.
        "cache_key",
        "cachekey",
        "cache-key",
        "sort_key",
        "sortkey",
        "partition_key",
        "partitionkey",
        "primary_key",
        "primarykey",
        "foreign_key",
        "foreignkey",
        "idempotency",
        "hash_key",
        "hashkey",
        "schema_key",
        "schemakey",
        "bucket_key",
        "bucketkey",
        "object_key",
        "objectkey",
        "hotkey",
        "monkey",
        "turkey",
    ]
    .iter()
    .any(|w| contains_ci(name, w))
}

pub(super) fn secret_assign(g: &Groups, h: &str) -> Option<Range<usize>> {
    let name = h.get(g.n.clone()?)?;
    if public_name(name) {
        return None;
    }
    let m = unquoted(g, h)?;
    // An id named as one (`ACCESS_ID`) holding a UUID is a reference, not a key.
    let id_name = ends_with_ci(name, "id");
    (checks::looks_random(m.as_str()) && !(id_name && checks::uuid_like(m.as_str())))
        .then(|| m.range())
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
    let v = m.as_str();
    (!v.bytes().all(|b| b.is_ascii_digit())
        && checks::is_literal_password(v)
        && !checks::not_a_password(v))
    .then(|| m.range())
}

/// Every assignment has an `=` or `:`, every call argument a `,`.
pub(super) fn has_assign(h: &str, _: &Scan) -> bool {
    h.contains(['=', ':', ','])
}

pub(super) fn has_colon(h: &str, _: &Scan) -> bool {
    h.contains(':')
}

/// Two capitals and two digits after a word boundary, the start of every IBAN
/// candidate (and every IBAN has 8 digits or more).
pub(super) fn iban_gate(_: &str, s: &Scan) -> bool {
    s.digits >= 8 && s.iban_head
}
