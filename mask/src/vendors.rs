//! Vendor tokens with a published prefix: one detector (`vendor-token`), one literal
//! search over every prefix, and a table that says per vendor what follows the prefix,
//! what it must pass (a checksum, an embedded JSON or base64 header, not being a
//! placeholder) and what to call it in the marker.
//!
//! One detector rather than one each: detectors are selected with a 128-bit mask that
//! must leave room for the policy's 64 patterns, and sixty vendors would not fit. The
//! table is the definition here (the detector's regex only lists the prefixes, for the
//! trigger pass); the unit tests hold a valid token and near misses per entry.
//!
//! Formats are the vendors' published ones: prefix, alphabet and length, and where the
//! vendor documents one, the checksum (age's Bech32, GitHub's CRC32 in `checks`).
use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

use crate::{checks, groups::is_word};

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alpha(b: u8) -> bool {
    b.is_ascii_alphabetic()
}
fn hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}
fn hex_any(b: u8) -> bool {
    b.is_ascii_hexdigit()
}
fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
fn b64url_eq(b: u8) -> bool {
    b64url(b) || b == b'='
}
/// Standard base64 with padding.
fn b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}
fn b64_dot(b: u8) -> bool {
    b64url_eq(b) || b == b'.'
}
fn bech32(b: u8) -> bool {
    b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L".contains(&b)
}
fn url_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'@' | b'/' | b'_' | b'-')
}

/// What follows a prefix.
#[derive(Clone, Copy)]
enum Body {
    /// A run of `class`, `min..=max` long, that ends there (the next byte is not in
    /// `class`; with `word`, not a word character either).
    Run {
        class: fn(u8) -> bool,
        min: usize,
        max: usize,
        word: bool,
    },
    /// Given the text, where the prefix starts and where it ends: the token's range.
    Shape(fn(&[u8], usize, usize) -> Option<Range<usize>>),
}

/// One vendor's token.
pub(crate) struct Vendor {
    pub(crate) prefix: &'static str,
    pub(crate) kind: &'static str,
    body: Body,
    /// On the whole token.
    check: fn(&str) -> bool,
}

const fn run(class: fn(u8) -> bool, min: usize, max: usize) -> Body {
    Body::Run {
        class,
        min,
        max,
        word: true,
    }
}

/// A run of `class` that may be followed by anything (its class holds non-word bytes).
const fn open(class: fn(u8) -> bool, min: usize, max: usize) -> Body {
    Body::Run {
        class,
        min,
        max,
        word: false,
    }
}

const fn v(prefix: &'static str, kind: &'static str, body: Body) -> Vendor {
    Vendor {
        prefix,
        kind,
        body,
        check: |_| true,
    }
}

const fn vc(
    prefix: &'static str,
    kind: &'static str,
    body: Body,
    check: fn(&str) -> bool,
) -> Vendor {
    Vendor {
        prefix,
        kind,
        body,
        check,
    }
}

/// The table. Prefixes are case-sensitive and start a word (the byte before is not a
/// word character) unless the shape looks back itself.
pub(crate) const VENDORS: &[Vendor] = &[
    // Sourcegraph: `sgp_` [instance id (16 hex) or `local` `_`] 40 hex.
    v("sgp_", "sourcegraph-token", Body::Shape(sourcegraph)),
    // Hugging Face organisation tokens (user tokens are `hf_`, a detector of its own).
    v("api_org_", "huggingface-token", run(alpha, 34, 34)),
    // Sentry: org tokens are `sntrys_` base64(JSON with `iat`) `_` secret; user tokens
    // `sntryu_` 64 hex.
    vc(
        "sntrys_",
        "sentry-token",
        Body::Shape(sentry_org),
        sentry_org_json,
    ),
    v("sntryu_", "sentry-token", run(hex, 64, 64)),
    // Atlassian API tokens: `ATATT`, base64url, `=` and 8 hex digits.
    v("ATATT", "atlassian-token", Body::Shape(atlassian)),
    // Cloudflare Origin CA keys: `v1.0-` 24 hex `-` 146 hex.
    v(
        "v1.0-",
        "cloudflare-origin-ca-key",
        Body::Shape(cloudflare_ca),
    ),
    // age identities: Bech32 with the `age-secret-key-` human-readable part, upper case.
    vc(
        "AGE-SECRET-KEY-1",
        "age-secret-key",
        run(bech32, 58, 58),
        age_checksum,
    ),
    // JWTs with `"alg":"none"` have an empty signature: `header.payload.`
    vc("eyJ", "jwt", Body::Shape(unsigned_jwt), alg_none),
    v("ntn_", "notion-token", Body::Shape(notion)),
    // HashiCorp Vault service, batch and recovery tokens.
    v("hvs.", "vault-token", open(b64url, 24, 512)),
    v("hvb.", "vault-token", open(b64url, 24, 512)),
    v("hvr.", "vault-token", open(b64url, 24, 512)),
    // Microsoft Entra (Azure AD) client secrets: 3 characters, a digit, `Q~`, 31-34.
    v(
        "Q~",
        "azure-client-secret",
        Body::Shape(azure_client_secret),
    ),
    // 1Password account secret keys and service-account tokens.
    v("A3-", "1password-secret-key", Body::Shape(onepassword_key)),
    v("ops_eyJ", "1password-token", open(b64, 100, 4096)),
    v("s-s4t2ud-", "intra42-secret", run(hex, 64, 64)),
    v("s-s4t2af-", "intra42-secret", run(hex, 64, 64)),
    // Amazon Bedrock API keys: long-term `ABSK` + base64 of `BedrockAPIKey-…`,
    // short-term `bedrock-api-key-` + base64 of a presigned `bedrock.amazonaws.com` URL.
    vc("ABSK", "bedrock-api-key", open(b64, 24, 2048), bedrock_long),
    vc(
        "bedrock-api-key-",
        "bedrock-api-key",
        open(b64, 28, 8192),
        bedrock_short,
    ),
    v("EZAK", "easypost-key", run(alnum, 54, 54)),
    v("EZTK", "easypost-key", run(alnum, 54, 54)),
    v("pplx-", "perplexity-key", run(alnum, 40, 64)),
    v("dop_v1_", "digitalocean-token", run(hex, 64, 64)),
    v("doo_v1_", "digitalocean-token", run(hex, 64, 64)),
    v("dor_v1_", "digitalocean-token", run(hex, 64, 64)),
    v("lin_api_", "linear-key", run(alnum, 40, 40)),
    v("lin_oauth_", "linear-key", run(hex, 64, 64)),
    v("shippo_live_", "shippo-token", run(hex, 40, 40)),
    v("shippo_test_", "shippo-token", run(hex, 40, 40)),
    v("pscale_tkn_", "planetscale-token", open(b64_dot, 32, 64)),
    v("pscale_oauth_", "planetscale-token", open(b64_dot, 32, 64)),
    v("pscale_pw_", "planetscale-token", open(b64_dot, 32, 64)),
    v("tfp_", "typeform-token", open(b64_dot, 40, 72)),
    v("pul-", "pulumi-token", run(hex, 40, 40)),
    v("FLWSECK_TEST-", "flutterwave-key", Body::Shape(flutterwave)),
    v("FLWSECK-", "flutterwave-key", Body::Shape(flutterwave)),
    v("FLWPUBK_TEST-", "flutterwave-key", Body::Shape(flutterwave)),
    v("FLWPUBK-", "flutterwave-key", Body::Shape(flutterwave)),
    v("dapi", "databricks-token", Body::Shape(databricks)),
    v("shpat_", "shopify-token", run(hex_any, 32, 32)),
    v("shpca_", "shopify-token", run(hex_any, 32, 32)),
    v("shppa_", "shopify-token", run(hex_any, 32, 32)),
    v("shpss_", "shopify-token", run(hex_any, 32, 32)),
    v("PMAK-", "postman-key", Body::Shape(postman)),
    v("glc_", "grafana-token", open(b64, 32, 400)),
    v("glsa_", "grafana-token", Body::Shape(grafana_sa)),
    v("NRAK-", "newrelic-key", run(upper_digit, 27, 27)),
    v("NRII-", "newrelic-key", run(b64url, 32, 32)),
    v("SG.", "sendgrid-key", Body::Shape(sendgrid)),
    v("dckr_pat_", "docker-token", run(b64url, 27, 27)),
    v("pypi-AgEIcHlwaS5vcmc", "pypi-token", run(b64url, 50, 512)),
    v("dp.pt.", "doppler-token", run(alnum, 40, 44)),
    v("dp.st.", "doppler-token", open(b64_dot, 40, 64)),
    v("dp.sa.", "doppler-token", run(alnum, 40, 44)),
    v("dp.ct.", "doppler-token", run(alnum, 40, 44)),
    v(".atlasv1.", "terraform-token", Body::Shape(terraform)),
    v("rubygems_", "rubygems-token", run(hex, 48, 48)),
    v("HRKU-", "heroku-key", run(b64url, 40, 72)),
    v("fm1a_", "fly-token", open(b64, 40, 4096)),
    v("fm1r_", "fly-token", open(b64, 40, 4096)),
    v("fm2_", "fly-token", open(b64, 40, 4096)),
    v("CLOJARS_", "clojars-token", run(alnum, 60, 60)),
    // GitLab's other token prefixes (personal, deploy and runner ones are in
    // `gitlab-token`) and runner registration tokens.
    v("glffct-", "gitlab-token", run(b64url, 20, 64)),
    v("gloas-", "gitlab-token", run(b64url, 20, 128)),
    v("glsoat-", "gitlab-token", run(b64url, 20, 64)),
    v("glimt-", "gitlab-token", run(b64url, 20, 64)),
    v("glagent-", "gitlab-token", run(b64url, 40, 128)),
    v("glft-", "gitlab-token", run(b64url, 20, 64)),
    v("glwt-", "gitlab-token", run(b64url, 20, 64)),
    v("GR1348941", "gitlab-token", run(b64url, 20, 20)),
    v("sm_pat_", "settlemint-token", run(alnum, 16, 16)),
    v("sm_aat_", "settlemint-token", run(alnum, 16, 16)),
    v("sm_sat_", "settlemint-token", run(alnum, 16, 16)),
    v("duffel_test_", "duffel-token", open(b64url_eq, 43, 43)),
    v("duffel_live_", "duffel-token", open(b64url_eq, 43, 43)),
    v("pnu_", "prefect-token", run(alnum, 36, 36)),
    v("rdme_", "readme-token", run(alnum, 70, 70)),
    v("fio-u-", "frameio-token", open(b64url_eq, 64, 64)),
    vc("ico-", "infracost-token", run(alnum, 32, 32), mixed_case),
    v("sha256~", "openshift-token", run(b64url, 43, 43)),
    v("AKCp", "artifactory-key", run(alnum, 69, 69)),
    v("cmVmd", "artifactory-key", run(alnum, 59, 59)),
    v("dt0c01.", "dynatrace-token", Body::Shape(dynatrace)),
    v("access-sandbox-", "plaid-token", Body::Shape(uuid_body)),
    v("access-development-", "plaid-token", Body::Shape(uuid_body)),
    v("access-production-", "plaid-token", Body::Shape(uuid_body)),
    v("p8e-", "adobe-secret", run(alnum, 32, 32)),
    vc("LTAI", "alibaba-key", run(alnum, 20, 20), mixed),
    v("AQVN", "yandex-key", run(b64url, 35, 38)),
    vc("EAA", "facebook-token", run(alnum, 90, 400), mixed),
    v("sk.eyJ", "mapbox-token", Body::Shape(mapbox)),
    v("sk-or-v1-", "openrouter-key", run(hex, 64, 64)),
    // A JWT in base64 (`eyJ` encodes as `ZXlK`).
    vc("ZXlK", "jwt", open(b64, 40, 8192), base64_jwt),
    v("whsec_", "stripe-key", run(b64, 32, 64)),
    v("sq0atp-", "square-token", run(b64url, 22, 22)),
    v("sq0csp-", "square-token", run(b64url, 43, 43)),
    // Telegram bot tokens: the bot's id, `:`, then 35 characters starting `AA`.
    v(":AA", "telegram-token", Body::Shape(telegram)),
    // Incoming-webhook URLs: the path is the credential.
    v(
        "webhook.office.com/webhookb2/",
        "teams-webhook",
        open(url_path, 40, 512),
    ),
    v(
        "discord.com/api/webhooks/",
        "discord-webhook",
        open(url_path, 40, 256),
    ),
    v(
        "discordapp.com/api/webhooks/",
        "discord-webhook",
        open(url_path, 40, 256),
    ),
];

/// Bytes of a token kept in its marker: the prefix (a webhook's host and path), when
/// it is the token's start.
pub(crate) fn keep(vendor: &Vendor, token: &str) -> (usize, usize) {
    if token.starts_with(vendor.prefix) {
        (vendor.prefix.len(), 0)
    } else {
        (0, 0)
    }
}

/// The matcher over the whole table.
pub(crate) struct Vendors {
    prefixes: AhoCorasick,
}

impl Vendors {
    pub(crate) fn new() -> Vendors {
        let prefixes = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(VENDORS.iter().map(|v| v.prefix))
            .expect("vendor prefixes build");
        Vendors { prefixes }
    }

    /// The literal triggers: every prefix.
    pub(crate) fn triggers() -> Vec<&'static str> {
        VENDORS.iter().map(|v| v.prefix).collect()
    }

    /// Each token found, with its table entry, in order and without overlaps.
    pub(crate) fn find_iter(&self, text: &str, mut found: impl FnMut(Range<usize>, usize)) {
        let h = text.as_bytes();
        let mut from = 0;
        for m in self.prefixes.find_overlapping_iter(text) {
            let (i, at, after) = (m.pattern().as_usize(), m.start(), m.end());
            let vendor = &VENDORS[i];
            let range = match vendor.body {
                Body::Run {
                    class,
                    min,
                    max,
                    word,
                } => {
                    if at > 0 && is_word(h[at - 1]) {
                        continue;
                    }
                    let end = after + h[after..].iter().take_while(|&&b| class(b)).count();
                    let n = end - after;
                    let next_ok = h.get(end).is_none_or(|&b| !word || !is_word(b));
                    if n < min || n > max || !next_ok {
                        continue;
                    }
                    at..end
                }
                Body::Shape(shape) => match shape(h, at, after) {
                    Some(r) => r,
                    None => continue,
                },
            };
            if range.start < from {
                continue;
            }
            // Placeholders are judged on what follows the prefix, where the secret is.
            let body = if range.start == at {
                after
            } else {
                range.start
            };
            if !checks::placeholder(&text[body..range.end]) && (vendor.check)(&text[range.clone()])
            {
                from = range.end;
                found(range, i);
            }
        }
    }
}

/// The end of the run of `class` from `at`.
fn end_of(h: &[u8], at: usize, class: fn(u8) -> bool) -> usize {
    at + h[at.min(h.len())..]
        .iter()
        .take_while(|&&b| class(b))
        .count()
}

/// `class{n}` exactly at `at`: its end.
fn exactly(h: &[u8], at: usize, n: usize, class: fn(u8) -> bool) -> Option<usize> {
    (end_of(h, at, class) - at == n).then_some(at + n)
}

fn word_start(h: &[u8], at: usize) -> bool {
    at == 0 || !is_word(h[at - 1])
}

fn word_end(h: &[u8], at: usize) -> bool {
    h.get(at).is_none_or(|&b| !is_word(b))
}

fn sourcegraph(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    let mut body = after;
    if h[after..].starts_with(b"local_") {
        body += 6;
    } else if let Some(e) = exactly(h, after, 16, hex_any)
        && h.get(e) == Some(&b'_')
    {
        body = e + 1;
    }
    let end = exactly(h, body, 40, hex_any)?;
    word_end(h, end).then_some(at..end)
}

fn sentry_org(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    // base64 (no `_`) of the JSON, `_`, the secret.
    let json = end_of(h, after, b64);
    if json - after < 16 || h.get(json) != Some(&b'_') {
        return None;
    }
    // The secret: 32 random bytes, 43 characters of unpadded base64.
    let end = end_of(h, json + 1, b64);
    (end - json - 1 == 43).then_some(at..end)
}

fn sentry_org_json(token: &str) -> bool {
    let body = &token["sntrys_".len()..];
    let json = body.split('_').next().unwrap_or("");
    let json = json.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(json)
        .is_ok_and(|b| b.starts_with(b"{") && b.windows(5).any(|w| w == b"\"iat\""))
}

fn atlassian(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    let body = end_of(h, after, b64url);
    if body - after < 150 || h.get(body) != Some(&b'=') {
        return None;
    }
    let end = exactly(h, body + 1, 8, |b| {
        b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
    })?;
    word_end(h, end).then_some(at..end)
}

fn cloudflare_ca(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    let e = exactly(h, after, 24, hex)?;
    (h.get(e) == Some(&b'-')).then_some(())?;
    let end = exactly(h, e + 1, 146, hex)?;
    word_end(h, end).then_some(at..end)
}

fn unsigned_jwt(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    let head = end_of(h, after, b64url);
    if head - after < 8 || h.get(head) != Some(&b'.') || !h[head + 1..].starts_with(b"eyJ") {
        return None;
    }
    let body = end_of(h, head + 1, b64url);
    if body - head < 8 || h.get(body) != Some(&b'.') {
        return None;
    }
    // No signature: what follows the last dot is no token character.
    h.get(body + 1)
        .is_none_or(|&b| !b64url(b) && b != b'.')
        .then_some(at..body + 1)
}

fn alg_none(token: &str) -> bool {
    let header = token.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|b| {
            let s = String::from_utf8_lossy(&b)
                .replace(' ', "")
                .to_ascii_lowercase();
            s.starts_with('{') && s.contains("\"alg\":\"none\"")
        })
}

fn notion(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    // 11 digits, then 35 alphanumerics (which may start with digits too).
    let end = end_of(h, after, alnum);
    let digits = h[after..end]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (end - after == 46 && digits >= 11 && word_end(h, end)).then_some(at..end)
}

fn azure_client_secret(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let class = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'.' | b'-');
    if at < 4 || !h[at - 1].is_ascii_digit() || !h[at - 4..at - 1].iter().all(|&b| class(b)) {
        return None;
    }
    let start = at - 4;
    if start > 0 && class(h[start - 1]) {
        return None;
    }
    let end = end_of(h, after, class);
    let n = end - after;
    let secret = std::str::from_utf8(&h[start..end]).ok()?;
    ((31..=34).contains(&n) && mixed(secret) && !checks::placeholder(secret)).then_some(start..end)
}

fn onepassword_key(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    // A3-XXXXXX-XXXXXXXXXXX-XXXXX-XXXXX-XXXXX, the third group also split 6-5.
    let mut p = exactly(h, after, 6, upper_digit)?;
    let mut groups: &[usize] = &[11, 5, 5, 5];
    if end_of(h, p + 1, upper_digit) - p - 1 == 6 {
        groups = &[6, 5, 5, 5, 5];
    }
    for &n in groups {
        (h.get(p) == Some(&b'-')).then_some(())?;
        p = exactly(h, p + 1, n, upper_digit)?;
    }
    word_end(h, p).then_some(at..p)
}

fn flutterwave(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    // Encryption keys: 12 hex digits.
    if let Some(e) = exactly(h, after, 12, hex_any)
        && word_end(h, e)
        && h[at..after].starts_with(b"FLWSECK")
    {
        return Some(at..e);
    }
    let e = exactly(h, after, 32, hex_any)?;
    (h[e..].starts_with(b"-X") && word_end(h, e + 2)).then_some(at..e + 2)
}

fn databricks(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    if !word_start(h, at) {
        return None;
    }
    let mut end = exactly(h, after, 32, hex)?;
    if h.get(end) == Some(&b'-') && h.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 2;
    }
    word_end(h, end).then_some(at..end)
}

fn postman(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let e = exactly(h, after, 24, hex)?;
    (word_start(h, at) && h.get(e) == Some(&b'-')).then_some(())?;
    let end = exactly(h, e + 1, 34, hex)?;
    word_end(h, end).then_some(at..end)
}

fn grafana_sa(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let e = exactly(h, after, 32, alnum)?;
    (word_start(h, at) && h.get(e) == Some(&b'_')).then_some(())?;
    let end = exactly(h, e + 1, 8, hex_any)?;
    word_end(h, end).then_some(at..end)
}

fn sendgrid(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let e = exactly(h, after, 22, b64url)?;
    (word_start(h, at) && h.get(e) == Some(&b'.')).then_some(())?;
    let end = exactly(h, e + 1, 43, b64url)?;
    Some(at..end)
}

fn terraform(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    // 14 alphanumerics before the prefix.
    let start = at.checked_sub(14)?;
    if !h[start..at].iter().all(|&b| alnum(b)) || !word_start(h, start) {
        return None;
    }
    let end = end_of(h, after, b64url_eq);
    (60..=70).contains(&(end - after)).then_some(start..end)
}

fn dynatrace(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let e = exactly(h, after, 24, upper_digit)?;
    (word_start(h, at) && h.get(e) == Some(&b'.')).then_some(())?;
    let end = exactly(h, e + 1, 64, upper_digit)?;
    Some(at..end)
}

fn uuid_body(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let end = end_of(h, after, |b| hex(b) || b == b'-');
    (word_start(h, at) && end - after == 36 && word_end(h, end)).then_some(at..end)
}

fn mapbox(h: &[u8], at: usize, after: usize) -> Option<Range<usize>> {
    let e = end_of(h, after, b64url);
    (word_start(h, at) && e - after >= 50 && h.get(e) == Some(&b'.')).then_some(())?;
    let end = end_of(h, e + 1, b64url);
    (end - e > 20).then_some(at..end)
}

fn telegram(h: &[u8], at: usize, _after: usize) -> Option<Range<usize>> {
    let mut start = at;
    while start > 0 && h[start - 1].is_ascii_digit() {
        start -= 1;
    }
    if !(8..=10).contains(&(at - start)) || !word_start(h, start) {
        return None;
    }
    let end = end_of(h, at + 1, b64url);
    (end - at - 1 == 35 && word_end(h, end)).then_some(start..end)
}

/// Upper and lower case letters and digits.
fn mixed(token: &str) -> bool {
    let b = token.as_bytes();
    b.iter().any(u8::is_ascii_uppercase)
        && b.iter().any(u8::is_ascii_lowercase)
        && b.iter().any(u8::is_ascii_digit)
}

fn mixed_case(token: &str) -> bool {
    mixed(token.split_once('-').map_or(token, |(_, t)| t))
}

fn base64_jwt(token: &str) -> bool {
    let s = token.trim_end_matches('=');
    let n = s.len() / 4 * 4;
    base64::engine::general_purpose::STANDARD
        .decode(&s[..n])
        .is_ok_and(|b| std::str::from_utf8(&b).is_ok_and(checks::jwt))
}

fn age_checksum(token: &str) -> bool {
    checks::bech32_valid(&token.to_ascii_lowercase())
}

fn bedrock_long(token: &str) -> bool {
    decoded_starts_with(&token[4..], b"BedrockAPIKey-")
}

fn bedrock_short(token: &str) -> bool {
    decoded_starts_with(&token["bedrock-api-key-".len()..], b"bedrock.amazonaws.com")
}

/// Whether the base64 `s` decodes to something starting with `want` (only whole
/// groups of four are decoded, so a token cut short still counts).
fn decoded_starts_with(s: &str, want: &[u8]) -> bool {
    let s = s.trim_end_matches('=');
    let n = s.len() / 4 * 4;
    base64::engine::general_purpose::STANDARD
        .decode(&s[..n])
        .is_ok_and(|b| b.starts_with(want))
}

#[cfg(test)]
mod tests;
