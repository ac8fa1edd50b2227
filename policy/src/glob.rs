//! Globs on executable paths and command lines, and patterns on hostnames.
use std::fmt;

/// What `*` may cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobMode {
    /// Executable paths: `*`, `?` and classes never match `/`; `**` matches anything.
    Path,
    /// Command lines: `*`, `**`, `?` and classes match any character, `/` included.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`: any run of characters, not crossing `/` in [`GlobMode::Path`].
    Star,
    /// `**`: any run of characters.
    StarStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A glob: `*` (any run of characters; in paths, not crossing `/`), `**` (any run,
/// `/` included), `?` (one character), `[abc]`, `[a-z]`, `[!a]` (one character of / not
/// of a set), and `\` to take the next character literally.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    mode: GlobMode,
    toks: Vec<Tok>,
    /// The text it matches, when it has no wildcard.
    literal: Option<String>,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.mode == other.mode
    }
}
impl Eq for Glob {}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Glob {
    /// Compiles `text`; the error says what is wrong with it.
    pub fn new(text: &str, mode: GlobMode) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        if text.contains('\0') {
            return Err("pattern contains a NUL character".into());
        }
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '\\' => {
                    let Some(&next) = chars.get(i) else {
                        return Err(format!("pattern {text:?} ends with an unescaped '\\'"));
                    };
                    i += 1;
                    toks.push(Tok::Lit(next));
                }
                '?' => toks.push(Tok::One),
                '*' => {
                    if chars.get(i) == Some(&'*') {
                        while chars.get(i) == Some(&'*') {
                            i += 1;
                        }
                        toks.push(if mode == GlobMode::Path {
                            Tok::StarStar
                        } else {
                            Tok::Star
                        });
                    } else {
                        toks.push(Tok::Star);
                    }
                }
                '[' => {
                    let start = i - 1;
                    let mut negated = false;
                    if chars.get(i) == Some(&'!') {
                        negated = true;
                        i += 1;
                    }
                    let mut members: Vec<char> = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&m) = chars.get(i) else {
                            return Err(format!(
                                "pattern {text:?}: '[' at character {} is never closed by ']'",
                                start + 1
                            ));
                        };
                        i += 1;
                        if m == ']' && !first {
                            break;
                        }
                        first = false;
                        if m == '\\' {
                            let Some(&e) = chars.get(i) else {
                                return Err(format!(
                                    "pattern {text:?} ends with an unescaped '\\'"
                                ));
                            };
                            i += 1;
                            members.push(e);
                        } else {
                            members.push(m);
                        }
                    }
                    let mut ranges = Vec::new();
                    let mut k = 0;
                    while k < members.len() {
                        if k + 2 < members.len() && members[k + 1] == '-' {
                            let (lo, hi) = (members[k], members[k + 2]);
                            if lo > hi {
                                return Err(format!(
                                    "pattern {text:?}: range {lo}-{hi} is reversed"
                                ));
                            }
                            ranges.push((lo, hi));
                            k += 3;
                        } else {
                            ranges.push((members[k], members[k]));
                            k += 1;
                        }
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let literal = toks
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect::<Option<String>>();
        Ok(Glob {
            text: text.to_owned(),
            mode,
            toks,
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn mode(&self) -> GlobMode {
        self.mode
    }

    /// True when the pattern has no wildcard: it matches exactly one string,
    /// [`Glob::literal`].
    pub fn is_literal(&self) -> bool {
        self.literal.is_some()
    }

    /// The one string a wildcard-free pattern matches (escapes removed).
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// Whether the whole of `s` matches. Linear in `s` times the pattern's length.
    pub fn matches(&self, s: &str) -> bool {
        if let Some(lit) = &self.literal {
            return lit == s;
        }
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let path = self.mode == GlobMode::Path;
        // cur[j]: the tokens so far match chars[..j].
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        let mut next = vec![false; n + 1];
        for tok in &self.toks {
            match tok {
                Tok::Star | Tok::StarStar => {
                    let cross = !path || matches!(tok, Tok::StarStar);
                    next[0] = cur[0];
                    for j in 1..=n {
                        next[j] = cur[j] || (next[j - 1] && (cross || chars[j - 1] != '/'));
                    }
                }
                _ => {
                    next[0] = false;
                    for j in 1..=n {
                        next[j] = cur[j - 1] && one(tok, chars[j - 1], path);
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
            if !cur.iter().any(|&b| b) {
                return false;
            }
        }
        cur[n]
    }
}

fn one(tok: &Tok, c: char, path: bool) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::One => !(path && c == '/'),
        Tok::Class { negated, ranges } => {
            if path && c == '/' {
                return false;
            }
            let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            inside != *negated
        }
        Tok::Star | Tok::StarStar => unreachable!("handled by the caller"),
    }
}

/// A hostname pattern, matched case-insensitively with any trailing dot ignored.
/// A leading `*.` matches one or more whole labels (`*.example.com` matches
/// `api.example.com` and `a.b.example.com`, not `example.com`); any other `*` matches a
/// run of characters within one label (`api-*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    /// A leading `*.` was given.
    any_labels: bool,
    /// The remaining labels, lowercase.
    labels: Vec<String>,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HostPattern {
    pub fn new(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.is_empty() {
            return Err("empty hostname".into());
        }
        if trimmed.len() > 253 {
            return Err(format!("hostname {text:?} is longer than 253 characters"));
        }
        let (any_labels, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut labels = Vec::new();
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(format!("hostname {text:?} has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!(
                    "hostname {text:?} has a label longer than 63 characters"
                ));
            }
            if label.contains("**") {
                return Err(format!(
                    "hostname {text:?}: '**' is not supported (a leading \"*.\" already matches any number of labels)"
                ));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
            {
                return Err(format!(
                    "hostname {text:?} contains {bad:?} (letters, digits, '-', '_', '.' and '*' only)"
                ));
            }
            labels.push(label.to_owned());
        }
        Ok(HostPattern {
            text: text.to_owned(),
            any_labels,
            labels,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `hostname` matches (case-insensitive; a trailing dot is ignored).
    pub fn matches(&self, hostname: &str) -> bool {
        let lower = hostname.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if name.is_empty() {
            return false;
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.iter().any(|l| l.is_empty()) {
            return false;
        }
        let skip = if self.any_labels {
            if labels.len() <= self.labels.len() {
                return false;
            }
            labels.len() - self.labels.len()
        } else {
            if labels.len() != self.labels.len() {
                return false;
            }
            0
        };
        labels[skip..]
            .iter()
            .zip(&self.labels)
            .all(|(l, p)| label_matches(p, l))
    }
}

/// `*` in a label pattern matches any run of characters (never a '.').
fn label_matches(pattern: &str, label: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == label;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let first = parts[0];
    let last = parts[parts.len() - 1];
    if label.len() < first.len() + last.len() || !label.starts_with(first) || !label.ends_with(last)
    {
        return false;
    }
    let mut rest = &label[first.len()..label.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Glob {
        Glob::new(p, GlobMode::Path).unwrap()
    }
    fn text(p: &str) -> Glob {
        Glob::new(p, GlobMode::Text).unwrap()
    }

    #[test]
    fn literal() {
        let g = path("/usr/bin/git");
        assert!(g.is_literal());
        assert_eq!(g.literal(), Some("/usr/bin/git"));
        assert!(g.matches("/usr/bin/git"));
        assert!(!g.matches("/usr/bin/gitk"));
        let g = path(r"/opt/a\*b");
        assert!(g.is_literal());
        assert_eq!(g.literal(), Some("/opt/a*b"));
        assert_eq!(g.as_str(), r"/opt/a\*b");
        assert!(g.matches("/opt/a*b"));
        assert!(!g.matches("/opt/axb"));
    }

    #[test]
    fn star_in_paths() {
        let g = path("/usr/bin/*");
        assert!(!g.is_literal());
        assert!(g.matches("/usr/bin/git"));
        assert!(g.matches("/usr/bin/"));
        assert!(!g.matches("/usr/bin/x/y"));
        assert!(!g.matches("/usr/sbin/x"));
        let g = path("/opt/**");
        assert!(g.matches("/opt/a/b/c"));
        assert!(g.matches("/opt/"));
        assert!(!g.matches("/opt"));
        let g = path("/home/*/bin/*.sh");
        assert!(g.matches("/home/alice/bin/run.sh"));
        assert!(!g.matches("/home/alice/x/bin/run.sh"));
        assert!(!g.matches("/home/alice/bin/run.py"));
        let g = path("**/python3*");
        assert!(g.matches("/usr/bin/python3.11"));
        assert!(!g.matches("/usr/bin/python3.11/x"));
    }

    #[test]
    fn question_and_classes() {
        let g = path("/bin/?s");
        assert!(g.matches("/bin/ls"));
        assert!(!g.matches("/bin//s"));
        assert!(!g.matches("/bin/lss"));
        let g = path("/bin/[a-c]at");
        assert!(g.matches("/bin/cat"));
        assert!(g.matches("/bin/bat"));
        assert!(!g.matches("/bin/rat"));
        let g = path("/bin/[!a-c]at");
        assert!(g.matches("/bin/rat"));
        assert!(!g.matches("/bin/cat"));
        assert!(!g.matches("/bin//at"));
        let g = path("/x/[]a]");
        assert!(g.matches("/x/]"));
        assert!(g.matches("/x/a"));
        let g = path("/x/[a-]");
        assert!(g.matches("/x/-"));
        let g = text("[/]");
        assert!(g.matches("/"));
    }

    #[test]
    fn text_mode_star_crosses_slash() {
        let g = text("rm -rf *");
        assert!(g.matches("rm -rf /"));
        assert!(g.matches("rm -rf /home/alice"));
        assert!(!g.matches("rm -r /"));
        let g = text("*--force*");
        assert!(g.matches("git push --force origin main"));
        assert!(!g.matches("git push origin main"));
        let g = text("curl ?*");
        assert!(g.matches("curl /x"));
    }

    #[test]
    fn long_inputs_are_fast() {
        let g = text("*a*a*a*a*a*a*a*a*b");
        let s = "a".repeat(100_000);
        assert!(!g.matches(&s));
    }

    #[test]
    fn bad_globs() {
        assert!(Glob::new("", GlobMode::Path).unwrap_err().contains("empty"));
        assert!(
            Glob::new("/bin/[ab", GlobMode::Path)
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            Glob::new("/bin/[z-a]", GlobMode::Path)
                .unwrap_err()
                .contains("reversed")
        );
        assert!(
            Glob::new("/bin/x\\", GlobMode::Path)
                .unwrap_err()
                .contains("unescaped")
        );
    }

    #[test]
    fn hostnames() {
        let h = HostPattern::new("api.openai.com").unwrap();
        assert!(h.matches("api.openai.com"));
        assert!(h.matches("API.OpenAI.com."));
        assert!(!h.matches("x.api.openai.com"));
        assert!(!h.matches("openai.com"));

        let h = HostPattern::new("*.anthropic.com").unwrap();
        assert!(h.matches("api.anthropic.com"));
        assert!(h.matches("a.b.anthropic.com"));
        assert!(h.matches("API.Anthropic.COM."));
        assert!(!h.matches("anthropic.com"));
        assert!(!h.matches("evilanthropic.com"));
        assert!(!h.matches("anthropic.com.evil.net"));

        let h = HostPattern::new("api-*.example.com").unwrap();
        assert!(h.matches("api-eu.example.com"));
        assert!(h.matches("api-.example.com"));
        assert!(!h.matches("api.example.com"));
        assert!(!h.matches("api-eu.x.example.com"));

        let h = HostPattern::new("s3.*.amazonaws.com").unwrap();
        assert!(h.matches("s3.eu-west-1.amazonaws.com"));
        assert!(!h.matches("s3.a.b.amazonaws.com"));

        let h = HostPattern::new("Example.COM.").unwrap();
        assert!(h.matches("example.com"));
        assert!(!h.matches(""));
        assert!(!h.matches("example..com"));

        assert!(label_matches("a*b*c", "aXbYc"));
        assert!(label_matches("a*b*c", "abc"));
        assert!(!label_matches("a*b*c", "ac"));
        assert!(!label_matches("ab*ba", "aba"));
    }

    #[test]
    fn bad_hostnames() {
        assert!(
            HostPattern::new("a..b")
                .unwrap_err()
                .contains("empty label")
        );
        assert!(HostPattern::new("**.x.com").unwrap_err().contains("'**'"));
        assert!(HostPattern::new("a b.com").unwrap_err().contains("' '"));
        assert!(HostPattern::new(".").unwrap_err().contains("empty"));
        assert!(
            HostPattern::new(&"a".repeat(64))
                .unwrap_err()
                .contains("63")
        );
    }
}
