//! The built-in detectors, in priority order: when two candidates overlap, the one
//! listed first wins (a GitHub token after `Bearer ` is a `github-token`, not a
//! `bearer-token`).
//!
//! Each has literal triggers (searched case-insensitively in one pass over the text;
//! a detector whose triggers are absent costs nothing), a regex whose named group `s`
//! (or `s2`, `s3` for alternatives) is the secret, a check on the candidate, and how
//! much of the secret may stay visible (`keep`: a vendor prefix, an email's domain, a
//! card's last four digits; never enough to be useful).
mod candidates;
mod shapes;

use std::ops::Range;

use crate::{
    Scan,
    groups::{Groups, Shape},
};

use candidates::*;
pub(crate) use candidates::{password_name, public_name};
use shapes::shape;

pub(crate) type Check = fn(&Groups, &str) -> Option<Range<usize>>;

pub(crate) struct Builtin {
    pub kind: &'static str,
    pub pattern: String,
    /// Case-insensitive literals, one of which must occur; empty: always a candidate.
    pub triggers: &'static [&'static str],
    /// Digits the longest run of digits in the text must hold (single separators
    /// ` -.()` may interrupt a run), or 0.
    pub min_run: usize,
    /// A cheap test the text must pass before the regex runs.
    pub gate: fn(&str, &Scan) -> bool,
    pub check: Check,
    /// Bytes of the secret kept visible at its start and its end.
    pub keep: fn(&str) -> (usize, usize),
    /// Where the secret is in a match (`Captures` unless set below).
    pub shape: Shape,
}

// Triggers are the name followed by what separates it from its value, so that the
// words alone (`grep password`, `kubectl get secret`) cost nothing.
const PASS_FLAG_TRIGGERS: &[&str] = &[
    "password=",
    "password ",
    "passwd=",
    "passwd ",
    "passphrase=",
    "passphrase ",
    "pass=",
    "pass ",
    "passin=",
    "passin ",
    "passout=",
    "passout ",
    "pwd=",
    "pwd ",
];
const SECRET_FLAG_TRIGGERS: &[&str] = &["token=", "token ", "secret=", "secret ", "key=", "key "];
const PASS_ASSIGN_TRIGGERS: &[&str] = &[
    "password=",
    "password:",
    "password\"",
    "password'",
    "password ",
    "passwd=",
    "passwd:",
    "passwd\"",
    "passwd ",
    "passphrase=",
    "passphrase:",
    "passphrase\"",
    "pass=",
    "pass:",
    "pass\"",
    "pwd=",
    "pwd:",
    "pwd\"",
    "pwd ",
    "pass ",
    "pass'",
    "passwd'",
    "passphrase ",
    "passphrase'",
    "pwd'",
    "password?",
    "password+",
];
const SECRET_ASSIGN_TRIGGERS: &[&str] = &[
    "secret=",
    "secret:",
    "secret\"",
    "secret'",
    "secret ",
    "token=",
    "token:",
    "token\"",
    "token'",
    "token ",
    "key=",
    "key:",
    "key\"",
    "key'",
    "key ",
    "credentials=",
    "credentials:",
    "credentials\"",
    "credential=",
    "credential:",
    "auth=",
    "auth:",
    "auth\"",
    "auth'",
    "auth ",
    "credentials'",
    "credentials ",
    "credential'",
    "credential ",
    "token?",
    "token+",
    "key?",
    "key+",
    "secret?",
    "secret+",
    "access_id",
    "accessid",
];

/// Suffixes of names whose values are passwords (masked whatever they look like).
const PASS_NAMES: &str = r"[A-Za-z0-9_.-]*(?i:password|passwd|passphrase|pass|pwd)";
/// Suffixes of names whose values are masked when they look generated.
const SECRET_NAMES: &str =
    r"[A-Za-z0-9_.-]*(?i:secret|token|key|apikey|credentials?|auth|access_id|accessid)";
/// What may stand between a name and its value: `=` and `:`, Go's and Make's `:=`,
/// `::=`, `:::=`, `?=`, `+=`, Ruby's and PHP's `=>`, PHP's ` .=`, and a typed
/// declaration (`var token string =`, `val token: String =`). `assign` parses the
/// same, in the same order.
pub(crate) const ASSIGN_OPS: &str = r"(?:\s*:\s*(?:string|String|str|&str)\s*=|\s+(?:string|String|str|&str)\s*=|\s*(?::{1,3}=|[?+]=|=>|[=:])|\s+\.=)";
/// After a name: a call's next argument (`setProperty("X_TOKEN", "value")`, both
/// quoted), or an optional closing quote, an operator and a value.
fn assign_rest() -> String {
    format!(r#"(?:["']\s*,\s*(?:"(?P<s4>[^"]*)"|'(?P<s5>[^']*)')|["']?{ASSIGN_OPS}\s*{VALUE})"#)
}
/// A value: double-quoted, single-quoted or bare.
pub(crate) const VALUE: &str = r#"(?:"(?P<s>[^"]*)"|'(?P<s2>[^']*)'|(?P<s3>[^\s"',;&]+))"#;

/// The tool table's triggers: its options after a space, as they stand in a line. The
/// tool names would do too, but ninety of them would double the trigger table, and
/// the options share a few prefixes (` -`, ` --`). Arguments of a command line the
/// agent owns are masked one by one and never hold an option after a space: there
/// `argv` reads the table itself.
static TOOL_TRIGGERS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut triggers: Vec<&'static str> = Vec::new();
    for option in crate::tools::options() {
        let t = format!(" {}", option.to_ascii_lowercase());
        if !triggers.contains(&t.as_str()) {
            triggers.push(Box::leak(t.into_boxed_str()));
        }
    }
    triggers
});

/// The start of the tool table's pattern, which only names the tools (`tools`).
pub(crate) const TOOLS_HEAD: &str = r"\b(?:redis\-cli|";

fn tool_names() -> String {
    let names: Vec<String> = crate::tools::names()
        .into_iter()
        .map(regex::escape)
        .collect();
    format!(r"\b(?:{})\s", names.join("|"))
}

static VENDOR_TRIGGERS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(crate::vendors::Vendors::triggers);

fn vendor_prefixes() -> String {
    let alternatives: Vec<String> = crate::vendors::VENDORS
        .iter()
        .map(|v| regex::escape(v.prefix))
        .collect();
    format!("(?:{})", alternatives.join("|"))
}

pub(crate) fn builtins() -> Vec<Builtin> {
    let b = |kind, pattern: &str, triggers, check, keep| Builtin {
        kind,
        pattern: pattern.to_owned(),
        triggers,
        min_run: 0,
        gate: |_, _| true,
        check,
        keep,
        shape: Shape::Captures,
    };
    let pii = |kind, pattern: &str, triggers, min_run, check, keep| Builtin {
        kind,
        pattern: pattern.to_owned(),
        triggers,
        min_run,
        gate: |_, _| true,
        check,
        keep,
        shape: Shape::Captures,
    };
    let mut all = vec![
        b(
            "private-key",
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            &["-----BEGIN"],
            pem_body,
            none,
        ),
        b(
            "gcp-key-id",
            r#""private_key_id"\s*:\s*"(?P<s>[0-9a-f]{40})""#,
            &["private_key_id"],
            plain,
            none,
        ),
        b(
            "aws-access-key",
            r"\b(?P<s>(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z2-7]{16})\b",
            &[
                "AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "AGPA",
            ],
            plain,
            keep4,
        ),
        b(
            "aws-secret-key",
            r#"(?i:aws[a-z0-9_.-]{0,24}(?:secret|key)[a-z0-9_.-]{0,24})["']?\s*[:=]?\s*["']?(?P<s>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
            &["aws"],
            plain,
            none,
        ),
        b(
            "github-token",
            r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,251})\b",
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
            github,
            keep_to_underscore_or_dash,
        ),
        b(
            "github-token",
            r"\b(?P<s>github_pat_[A-Za-z0-9_]{22,247})\b",
            &["github_pat_"],
            github,
            keep_to_underscore_or_dash,
        ),
        b(
            "gitlab-token",
            r"\b(?P<s>gl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]{20,})",
            &["glpat-", "gldt-", "glrt-", "glptt-", "glcbt-"],
            vendor,
            keep_to_underscore_or_dash,
        ),
        b(
            "slack-token",
            r"\b(?P<s>xox[abposre]-[A-Za-z0-9-]{10,})",
            &["xox"],
            slack,
            keep_to_underscore_or_dash,
        ),
        b(
            "slack-token",
            r"\b(?P<s>xapp-\d-[A-Za-z0-9-]{10,})",
            &["xapp-"],
            slack,
            |_| (5, 0),
        ),
        b(
            "slack-webhook",
            r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_-]{10,})",
            &["hooks.slack.com"],
            plain,
            none,
        ),
        b(
            "anthropic-key",
            r"\b(?P<s>sk-ant-[a-z0-9]{2,10}-[A-Za-z0-9_-]{20,})",
            &["sk-ant-"],
            anthropic,
            |_| (7, 0),
        ),
        b(
            "openai-key",
            r"\b(?P<s>sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,})",
            &["sk-"],
            openai,
            keep_to_underscore_or_dash,
        ),
        b(
            "google-api-key",
            r"\b(?P<s>AIza[0-9A-Za-z_-]{35})",
            &["AIza"],
            google,
            keep4,
        ),
        b(
            "huggingface-token",
            r"\b(?P<s>hf_[A-Za-z0-9]{30,40})\b",
            &["hf_"],
            vendor,
            keep3,
        ),
        b(
            "stripe-key",
            r"\b(?P<s>[sr]k_(?:live|test|prod)_[A-Za-z0-9]{16,})",
            &["k_live_", "k_test_", "k_prod_"],
            vendor,
            |_| (8, 0),
        ),
        b(
            "npm-token",
            r"\b(?P<s>npm_[A-Za-z0-9]{36})\b",
            &["npm_"],
            vendor,
            keep4,
        ),
        b(
            "groq-key",
            r"\b(?P<s>gsk_[A-Za-z0-9]{40,})",
            &["gsk_"],
            vendor,
            keep4,
        ),
        b(
            "xai-key",
            r"\b(?P<s>xai-[A-Za-z0-9]{40,})",
            &["xai-"],
            vendor,
            keep4,
        ),
        b(
            "replicate-token",
            r"\b(?P<s>r8_[A-Za-z0-9]{37})\b",
            &["r8_"],
            vendor,
            keep3,
        ),
        // Vendor tokens with published prefixes, one table (`vendors`); the pattern only
        // lists the prefixes.
        b(
            "vendor-token",
            &vendor_prefixes(),
            &VENDOR_TRIGGERS,
            plain,
            none,
        ),
        b(
            "jwt",
            r"\b(?P<s>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,})",
            &["eyJ"],
            jwt,
            keep3,
        ),
        b(
            "azure-account-key",
            r"(?i:AccountKey|SharedAccessKey)=(?P<s>[A-Za-z0-9+/=]{20,})",
            &["AccountKey", "SharedAccessKey"],
            plain,
            none,
        ),
        b(
            "azure-sas",
            r"(?i:SharedAccessSignature)=(?P<s>[^\s;]+)",
            &["SharedAccessSignature"],
            plain,
            none,
        ),
        b(
            "azure-sas",
            r"[?&]sig=(?P<s>[A-Za-z0-9%+/=]{16,})",
            &["sig="],
            plain,
            none,
        ),
        b(
            "bearer-token",
            r"(?i:\bbearer\s+)(?P<s>[A-Za-z0-9._~+/=-]{8,})",
            &["bearer"],
            token_value,
            none,
        ),
        b(
            "authorization",
            r#"(?i:\b(?:proxy-)?authorization\s*:\s*(?:[a-z][a-z0-9_-]*\s+)?)(?P<s>[^\s"',]{4,})"#,
            &["authorization"],
            header_value,
            none,
        ),
        b(
            "api-key-header",
            r#"(?i:\b(?:x-api-key|api-key|x-auth-token|private-token|x-vault-token|x-goog-api-key|x-api-token|job-token|api-token|auth-token)\s*:\s*)(?P<s>[^\s"',]{4,})"#,
            &[
                "api-key",
                "auth-token",
                "private-token",
                "vault-token",
                "api-token",
                "job-token",
            ],
            header_value,
            none,
        ),
        b(
            "password",
            r"(?i:\b[a-z][a-z0-9+.-]{1,15}://[^\s:/@?#]*:)(?P<s>[^\s/@?#]+)@",
            &["://"],
            password_value,
            none,
        ),
        b(
            "password",
            &format!(
                r#"(?:^|[\s"'])--?(?i:(?:[a-z0-9]+[-_])*(?:password|passwd|passphrase|pass(?:in|out)?|pwd))(?:=|\s+){VALUE}"#
            ),
            PASS_FLAG_TRIGGERS,
            password_value,
            none,
        ),
        b(
            "secret",
            &format!(
                r#"(?:^|[\s"'])--?(?i:(?:[a-z0-9]+[-_])*(?:token|secret|api[-_]?key|apikey|access[-_]?key|secret[-_]?key|client[-_]?secret|auth[-_]?token))(?:=|\s+){VALUE}"#
            ),
            SECRET_FLAG_TRIGGERS,
            secret_flag_value,
            none,
        ),
        b(
            "password",
            r#"(?:^|\s|/)(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mariadb|mariadb-dump)\s(?:[^\n]*?\s)?-p(?P<s>[^\s"']+)"#,
            &["mysql", "mariadb"],
            password_value,
            none,
        ),
        b(
            "password",
            r#"\bsshpass\s(?:[^\n]*?\s)?-p\s*(?P<s>[^\s"']+)"#,
            &["sshpass"],
            password_value,
            none,
        ),
        b(
            "password",
            r#"\bcurl\s(?:[^\n]*?\s)?(?:-u|--user)\s+["']?[^\s:'"]*:["']?(?P<s>[^\s'"]+)"#,
            &["curl"],
            not_numeric,
            none,
        ),
        // .NET and NuGet configuration: `<add key="…Password" value="…" />`.
        b(
            "password",
            r#"(?i:\bkey\s*=\s*"[^"]*(?:password|passwd|pwd)"\s+value\s*=\s*)"(?P<s>[^"]*)""#,
            &["value=\"", "value =", "value= "],
            password_value,
            none,
        ),
        // Bundler's credentials for a gem server, `BUNDLE_<HOST>` with `__` for the
        // host's dots: `user:password` (or a license key) for that server.
        b(
            "password",
            &format!(r#"\bBUNDLE_[A-Z0-9_]*[A-Z0-9]__[A-Z0-9_]+["']?\s*[=:]\s*(?:{VALUE})"#),
            &["BUNDLE_"],
            password_value,
            none,
        ),
        // Options of well-known tools that take a credential (`tools`).
        b(
            "password",
            &tool_names(),
            &TOOL_TRIGGERS,
            password_value,
            none,
        ),
        b(
            "password",
            &format!(r#"\b(?P<n>{PASS_NAMES}){}"#, assign_rest()),
            PASS_ASSIGN_TRIGGERS,
            password_assign,
            none,
        ),
        b(
            "secret",
            &format!(r#"\b(?P<n>{SECRET_NAMES}){}"#, assign_rest()),
            SECRET_ASSIGN_TRIGGERS,
            secret_assign,
            none,
        ),
        pii(
            "email",
            r"\b(?P<s>[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24})\b",
            &["@"],
            0,
            email,
            keep_domain,
        ),
        pii(
            "iban",
            r"\b(?P<s>[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})\b",
            &[],
            0,
            iban,
            keep2,
        ),
        pii("ssn", r"\b(?P<s>\d{3}-\d{2}-\d{4})\b", &[], 9, ssn, none),
        pii(
            "card",
            r"\b(?P<s>[2-6]\d{3}(?:[ -]?\d){9,15})\b",
            &[],
            13,
            card,
            keep_last4,
        ),
        pii(
            "phone",
            r"(?:^|[\s:=,;\x22'(])(?P<s>\+[1-9](?:[ .-]?\(?\d\)?){7,14})\b",
            &["+"],
            8,
            e164,
            none,
        ),
        pii(
            "phone",
            r"(?:^|[\s:=,;\x22'])(?P<s>(?:\+?1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4})\b",
            &[],
            10,
            nanp,
            none,
        ),
    ];
    for d in &mut all {
        d.shape = shape(d.kind, &d.pattern);
        // Unicode `\s` splits "anything but space" classes into many ranges, and the
        // automata with them; ASCII whitespace is what separates arguments anyway.
        // Inside a class `\s` must come first (`[^\s;]`, not `[^;\s]`): the last
        // rewrite would put `(?-u:\s)` in the class, a range from `?` to `u`
        // (`builtin_patterns_rewrite_whitespace_whole` checks).
        d.pattern = d
            .pattern
            .replace(r"[^\s", r"[^\t\n\x0B\x0C\r ")
            .replace(r"[\s", r"[\t\n\x0B\x0C\r ")
            .replace(r"\s", r"(?-u:\s)");
        d.gate = match d.kind {
            "password" | "secret" if d.pattern.contains("(?P<n>") => has_assign,
            "authorization" | "api-key-header" => has_colon,
            "iban" => iban_gate,
            "password" if d.pattern.contains("://") => |h: &str, _: &Scan| h.contains('@'),
            "password" if d.pattern.contains("-p") || d.pattern.contains("-u|") => {
                |h: &str, _: &Scan| h.contains(" -")
            }
            "aws-secret-key" => |h: &str, _: &Scan| h.len() >= 43,
            _ => d.gate,
        };
        if d.pattern.starts_with(TOOLS_HEAD) {
            // The table finds the secrets themselves.
            d.shape = Shape::Whole;
            d.gate = |_, _| true;
        }
    }
    all
}
