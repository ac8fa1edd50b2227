//! Where the secret lies in a match of each built-in pattern (`groups::Shape`).
use crate::{
    groups::{Shape, is_space},
    pii::{e164_sep, nanp_sep},
};

use super::VALUE;

/// Where the secret is in a match of a built-in pattern, so that most run `find`
/// rather than `captures` (see `groups`).
pub(super) fn shape(kind: &str, pattern: &str) -> Shape {
    // A private key's check looks at the end of the whole match only.
    if whole_group(pattern) || kind == "private-key" {
        return Shape::Whole;
    }
    if pattern.contains("(?P<n>") {
        return Shape::Value { named: true };
    }
    if pattern.ends_with(VALUE) {
        return Shape::Value {
            named: pattern.contains("(?P<n>"),
        };
    }
    match kind {
        "bearer-token" => Shape::Tail {
            sep: None,
            class: |b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b),
        },
        "authorization" | "api-key-header" => Shape::Tail {
            sep: Some(b':'),
            class: |b| !is_space(b) && !b"\"',".contains(&b),
        },
        "azure-account-key" => Shape::Tail {
            sep: Some(b'='),
            class: |b| b.is_ascii_alphanumeric() || b"+/=".contains(&b),
        },
        "azure-sas" if pattern.contains("sig=") => Shape::Tail {
            sep: Some(b'='),
            class: |b| b.is_ascii_alphanumeric() || b"%+/=".contains(&b),
        },
        "azure-sas" => Shape::Tail {
            sep: Some(b'='),
            class: |b| !is_space(b) && b != b';',
        },
        "gcp-key-id" => Shape::Nth {
            sep: b'"',
            nth: 3,
            trim: 1,
        },
        "slack-webhook" => Shape::Nth {
            sep: b'/',
            nth: 2,
            trim: 0,
        },
        "password" if pattern.contains("://") => Shape::Nth {
            sep: b':',
            nth: 2,
            trim: 1,
        },
        "phone" if pattern.starts_with(r"(?:^|[\s:=,;\x22'(])") => Shape::Lead { sep: e164_sep },
        "phone" if pattern.starts_with(r"(?:^|[\s:=,;\x22'])") => Shape::Lead { sep: nanp_sep },
        _ => Shape::Captures,
    }
}

/// `\b(?P<s>...)` or `\b(?P<s>...)\b`: group `s` is the whole match.
pub(super) fn whole_group(pattern: &str) -> bool {
    let Some(inner) = pattern.strip_prefix(r"\b(?P<s>") else {
        return false;
    };
    let inner = inner.strip_suffix(r"\b").unwrap_or(inner);
    let Some(inner) = inner.strip_suffix(')') else {
        return false;
    };
    // The group closes at the end only if the parentheses inside it balance.
    let (mut depth, mut class, mut escaped) = (0i32, false, false);
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => class = true,
            ']' => class = false,
            '(' if !class => depth += 1,
            ')' if !class => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}
