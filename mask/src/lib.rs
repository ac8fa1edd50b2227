//! Masking of credentials and personal data before anything leaves the host.
//!
//! A [`Masker`] finds secrets in text (built-in detectors plus patterns from the policy
//! file) and replaces each with a marker that keeps the value's kind, a short
//! non-secret part of its shape, and a keyed hash:
//!
//! ```text
//! ghp_…[github-token:3f9a1c2b]           vendor prefix kept
//! sk-proj-…[openai-key:0b61d2aa]
//! AKIA…[aws-access-key:91c0e7f3]
//! https://deploy:…[password:5d2e8c10]@db.internal/app   only the password
//! --password=…[password:5d2e8c10]
//! Authorization: Bearer …[bearer-token:77a0c4e9]
//! …[email:2ab49f01]@example.com          the domain stays
//! …[card:c0ffee12]1111                    the last four digits stay
//! DE…[iban:8e3d10aa]                      the country stays
//! -----BEGIN PRIVATE KEY-----…[private-key:4410be2d]-----END PRIVATE KEY-----
//! ```
//!
//! The marker is `PREFIX…[KIND:HASH]SUFFIX`: `…` is U+2026, KIND is `[a-z0-9-]{1,32}`,
//! HASH is the first 4 bytes (8 lowercase hex digits) of HMAC-SHA256(key, secret). The
//! same secret always gets the same hash under one key, so a reviewer can tell two
//! values apart or recognise one seen before without seeing it; hosts that share the
//! key file ([`load_or_create_key`]) produce the same hashes fleet-wide, hosts with
//! their own keys cannot be correlated. 32 bits is for telling values apart by eye, not
//! a commitment: do not treat equal hashes as proof of equal secrets.
//!
//! Masking is idempotent: text that holds markers passes through unchanged (a candidate
//! that overlaps a marker is never masked), so masking twice, or on two hosts, is safe.
//!
//! Speed: the detectors' literal triggers are searched in one Aho-Corasick pass and
//! their digit requirements in one count; only detectors whose triggers occur run.
//! Most detectors then run a hand-written matcher (`tokens`, `assign`, `headers`,
//! `literal`, `pii`) that finds exactly what its regex finds, which drift tests hold
//! them to; the regexes stay the definition, and run for the policy's own patterns and
//! for text a matcher does not handle. Two detectors are tables instead, whose regex
//! only lists their literals: vendor tokens by published prefix (`vendors`, one
//! detector whose hits name the vendor) and the credential options of well-known
//! command-line tools (`tools`, which `argv` also reads per argument). A caller that owns its command line masks it in
//! place ([`Masker::mask_argv_in_place`]), and arguments with nothing to mask are not
//! copied. Ordinary arguments cost the one pass.
mod argv;
mod assign;
mod checks;
pub mod corpus;
mod detectors;
mod find;
mod groups;
mod headers;
mod key;
mod literal;
mod marker;
mod pii;
mod prefilter;
mod tokens;
mod tools;
mod vendors;

use std::{borrow::Cow, collections::BTreeMap, ops::Range};

use hmac::{Hmac, Mac as _};
use regex::{Regex, RegexBuilder, RegexSet};
use sha2::Sha256;

use crate::{
    groups::Shape,
    prefilter::{Scan, Triggers},
};

pub use key::{KeyError, load_or_create_key, parse_key};

/// Policy limits: a pattern list this long is a mistake, and the regex size caps keep
/// one pattern from costing the daemon more than a few MB.
pub const MAX_PATTERNS: usize = 64;
/// Detectors are selected with a 128-bit mask: built-ins plus `MAX_PATTERNS` fit.
const MAX_DETECTORS: usize = 128;
pub const MAX_ALLOW: usize = 256;
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The smallest `min_run` of a digit-gated detector (E.164 phone numbers).
const MIN_GATED_RUN: usize = 8;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Extra detectors and allow-list entries, from the policy file's `mask:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskConfig {
    pub patterns: Vec<PatternConfig>,
    /// Regexes searched in each candidate's value and in the whole text its detector
    /// matched; a candidate any of them matches is left as it is. Anchor them (`^…$`)
    /// to allow one exact value.
    pub allow: Vec<String>,
}

/// A detector of one's own. With a capture group named `s` (or else group 1) only that
/// group is masked, otherwise the whole match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternConfig {
    /// The kind shown in markers: `[a-z0-9-]{1,32}`.
    pub name: String,
    pub regex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error(
        "mask pattern name {name:?}: must be 1 to 32 characters of a-z, 0-9 and '-' (it is shown in markers)"
    )]
    BadName { name: String },
    #[error("mask pattern name {name:?} is used twice")]
    DuplicateName { name: String },
    #[error("mask pattern {name:?}: invalid regex: {message}")]
    BadPattern { name: String, message: String },
    #[error("mask pattern {name:?} matches the empty string, so it would match everywhere")]
    MatchesEmpty { name: String },
    #[error("mask allow[{index}]: invalid regex: {message}")]
    BadAllow { index: usize, message: String },
    #[error("mask: at most {max} {what}, got {got}")]
    TooMany {
        what: &'static str,
        max: usize,
        got: usize,
    },
}

/// One masked value: its kind and where it was in the input (byte offsets of the text
/// given; `field` is the index in argv/env, `None` for plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: String,
    pub field: Option<usize>,
    pub start: usize,
    pub end: usize,
}

/// Counts by kind, for metrics.
pub fn counts(findings: &[Finding]) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for f in findings {
        *out.entry(f.kind.as_str()).or_insert(0) += 1;
    }
    out
}

enum CheckFn {
    Builtin(detectors::Check),
    Custom,
}

pub(crate) struct Detector {
    pub(crate) kind: String,
    pub(crate) regex: Regex,
    min_run: usize,
    gate: fn(&str, &Scan) -> bool,
    check: CheckFn,
    keep: fn(&str) -> (usize, usize),
    pub(crate) shape: Shape,
    /// Finds what `regex` finds, faster (`tokens`).
    pub(crate) hand: Option<tokens::Hand>,
}

/// Candidate selection options that depend on where the text came from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ctx {
    /// `ssh deploy@web1.example.com`: a login, not an email address.
    pub no_email: bool,
}

/// A value to replace, before rendering.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub range: Range<usize>,
    pub kind: usize,
    /// For the vendor-token detector: the entry of `vendors::VENDORS` whose kind the
    /// marker shows.
    pub sub: Option<u16>,
}

pub struct Masker {
    detectors: Vec<Detector>,
    triggers: Triggers,
    /// Detectors without triggers (digit-gated PII and custom patterns).
    always: Vec<usize>,
    email: Option<usize>,
    /// Detector indices of the kinds argv and env context produce.
    pub(crate) password: usize,
    pub(crate) secret: usize,
    pub(crate) aws_secret: usize,
    allow: Option<RegexSet>,
    /// HMAC-SHA256 keyed with the mask key, ready for a value.
    mac: Hmac<Sha256>,
    marker: Regex,
    /// No detector can match text shorter than this.
    min_len: usize,
    /// No patterns from the policy: the short-text shortcut in `find` holds.
    builtin_only: bool,
    argv: argv::ArgvRules,
}

/// Never shows the key.
impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("detectors", &self.detectors.len())
            .field("allow", &self.allow.as_ref().map_or(0, RegexSet::len))
            .finish_non_exhaustive()
    }
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    // ASCII word boundaries keep the lazy DFA usable on non-ASCII text.
    RegexBuilder::new(&pattern.replace(r"\b", r"(?-u:\b)"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(4 * REGEX_SIZE_LIMIT)
        .build()
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks one configured pattern on its own (for a policy parser that reports errors
/// at the pattern's position); [`Masker::new`] checks the same and duplicates.
pub fn validate_pattern(p: &PatternConfig) -> Result<(), MaskError> {
    if !valid_name(&p.name) {
        return Err(MaskError::BadName {
            name: p.name.clone(),
        });
    }
    let regex = build(&p.regex).map_err(|e| MaskError::BadPattern {
        name: p.name.clone(),
        message: e.to_string(),
    })?;
    if regex.is_match("") {
        return Err(MaskError::MatchesEmpty {
            name: p.name.clone(),
        });
    }
    Ok(())
}

/// Checks one allow-list entry.
pub fn validate_allow(index: usize, regex: &str) -> Result<(), MaskError> {
    build(regex).map(|_| ()).map_err(|e| MaskError::BadAllow {
        index,
        message: e.to_string(),
    })
}

impl Masker {
    /// Validates `config` and builds the detectors. `key` keys the hashes in markers.
    pub fn new(config: &MaskConfig, key: [u8; 32]) -> Result<Masker, MaskError> {
        if config.patterns.len() > MAX_PATTERNS {
            return Err(MaskError::TooMany {
                what: "patterns",
                max: MAX_PATTERNS,
                got: config.patterns.len(),
            });
        }
        if config.allow.len() > MAX_ALLOW {
            return Err(MaskError::TooMany {
                what: "allow entries",
                max: MAX_ALLOW,
                got: config.allow.len(),
            });
        }
        let mut detectors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // The policy's own patterns come first: they win overlaps with the built-ins.
        for p in &config.patterns {
            validate_pattern(p)?;
            if !seen.insert(p.name.as_str()) {
                return Err(MaskError::DuplicateName {
                    name: p.name.clone(),
                });
            }
            let regex = build(&p.regex).expect("validated");
            detectors.push((
                Detector {
                    kind: p.name.clone(),
                    min_run: 0,
                    gate: |_, _| true,
                    shape: if regex.captures_len() == 1 {
                        Shape::Whole
                    } else {
                        Shape::Captures
                    },
                    regex,
                    check: CheckFn::Custom,
                    keep: |_| (0, 0),
                    hand: None,
                },
                &[][..],
            ));
        }
        for b in detectors::builtins() {
            let regex = build(&b.pattern).unwrap_or_else(|e| panic!("built-in {}: {e}", b.kind));
            detectors.push((
                Detector {
                    kind: b.kind.to_owned(),
                    regex,
                    min_run: b.min_run,
                    gate: b.gate,
                    check: CheckFn::Builtin(b.check),
                    keep: b.keep,
                    shape: b.shape,
                    hand: tokens::hand_matcher(b.kind, &b.pattern),
                },
                b.triggers,
            ));
        }
        let allow = if config.allow.is_empty() {
            None
        } else {
            for (index, a) in config.allow.iter().enumerate() {
                validate_allow(index, a)?;
            }
            Some(
                RegexSet::new(&config.allow).map_err(|e| MaskError::BadAllow {
                    index: 0,
                    message: e.to_string(),
                })?,
            )
        };
        // Each literal with the detectors it enables (bit i: detector i).
        let mut literals: Vec<(&str, u128)> = Vec::new();
        let mut always = Vec::new();
        for (i, (_, triggers)) in detectors.iter().enumerate() {
            if triggers.is_empty() {
                always.push(i);
            }
            for t in *triggers {
                match literals.iter_mut().find(|(l, _)| l == t) {
                    Some((_, bits)) => *bits |= 1 << i,
                    None => literals.push((t, 1 << i)),
                }
            }
        }
        assert!(
            detectors.len() <= MAX_DETECTORS,
            "too many detectors for the mask"
        );
        let triggers = Triggers::new(&literals);
        let detectors: Vec<Detector> = detectors.into_iter().map(|(d, _)| d).collect();
        let email = detectors.iter().position(|d| d.kind == "email");
        let index = |kind: &str| {
            detectors
                .iter()
                .position(|d| d.kind == kind && matches!(d.check, CheckFn::Builtin(_)))
                .expect("built-in kind")
        };
        let (password, secret, aws_secret) =
            (index("password"), index("secret"), index("aws-secret-key"));
        let min_len = if config.patterns.is_empty() { 6 } else { 1 };
        Ok(Masker {
            detectors,
            triggers,
            always,
            email,
            password,
            secret,
            aws_secret,
            allow,
            mac: Hmac::<Sha256>::new_from_slice(&key).expect("any key length"),
            marker: Regex::new(r"…\[[a-z0-9-]{1,32}:[0-9a-f]{8}\]").expect("marker regex"),
            min_len,
            builtin_only: config.patterns.is_empty(),
            argv: argv::ArgvRules::new(),
        })
    }

    /// `text` with every secret masked; borrowed when nothing was found.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let hits = self.find(text, Ctx::default());
        self.render(text, &hits)
    }

    /// `text` masked, and what was found where.
    pub fn mask_report(&self, text: &str) -> (String, Vec<Finding>) {
        let hits = self.find(text, Ctx::default());
        let findings = self.findings(&hits, None);
        (self.render(text, &hits).into_owned(), findings)
    }

    /// A command line, with the context one argument gives the next
    /// (`--password SECRET`, `sshpass -p SECRET`, `curl -u user:SECRET`, no emails in
    /// `ssh user@host`).
    pub fn mask_argv(&self, argv: &[String]) -> Vec<String> {
        let mut out = argv.to_vec();
        argv::mask_argv(self, &mut out, false);
        out
    }

    /// [`Masker::mask_argv`] in place, for a caller that owns the command line (the
    /// agent): only arguments with something to mask are replaced, the rest are not
    /// copied.
    pub fn mask_argv_in_place(&self, argv: &mut [String]) {
        argv::mask_argv(self, argv, false);
    }

    pub fn mask_argv_report(&self, argv: &[String]) -> (Vec<String>, Vec<Finding>) {
        let mut out = argv.to_vec();
        let findings = argv::mask_argv(self, &mut out, true);
        (out, findings)
    }

    /// An environment, `NAME=VALUE` each: the whole value of a password-ish name, and
    /// of a secret-ish name (`*_TOKEN`, `*_KEY`, `*_SECRET`) when it looks generated.
    pub fn mask_env(&self, env: &[String]) -> Vec<String> {
        let mut out = env.to_vec();
        argv::mask_env(self, &mut out, false);
        out
    }

    /// [`Masker::mask_env`] in place.
    pub fn mask_env_in_place(&self, env: &mut [String]) {
        argv::mask_env(self, env, false);
    }

    pub fn mask_env_report(&self, env: &[String]) -> (Vec<String>, Vec<Finding>) {
        let mut out = env.to_vec();
        let findings = argv::mask_env(self, &mut out, true);
        (out, findings)
    }

    /// The kinds of the built-in and configured detectors.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .detectors
            .iter()
            .map(|d| d.kind.as_str())
            .filter(|&k| k != "vendor-token")
            .chain(vendors::VENDORS.iter().map(|v| v.kind))
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    pub(crate) fn findings(&self, hits: &[Hit], field: Option<usize>) -> Vec<Finding> {
        hits.iter()
            .map(|h| Finding {
                kind: self.kind_of(h).to_owned(),
                field,
                start: h.range.start,
                end: h.range.end,
            })
            .collect()
    }

    /// The kind a hit's marker shows.
    pub(crate) fn kind_of(&self, h: &Hit) -> &str {
        match h.sub {
            Some(i) => vendors::VENDORS[usize::from(i)].kind,
            None => &self.detectors[h.kind].kind,
        }
    }

    pub(crate) fn allowed(&self, value: &str, whole: &str) -> bool {
        self.allow
            .as_ref()
            .is_some_and(|a| a.is_match(value) || a.is_match(whole))
    }

    pub(crate) fn markers(&self, text: &str) -> Vec<Range<usize>> {
        if !text.contains('…') {
            return Vec::new();
        }
        self.marker.find_iter(text).map(|m| m.range()).collect()
    }

    #[cfg(test)]
    pub(crate) fn detectors(&self) -> &[Detector] {
        &self.detectors
    }
}

#[cfg(test)]
mod tests;
