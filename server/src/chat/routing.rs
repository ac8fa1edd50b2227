//! Which channel (Slack) or conversation (Teams) a request goes to: the first
//! `[[route]]` whose matchers all match; a route without matchers takes everything.
//! Requests no route takes are not posted (they stay decidable on every other surface).

use belay_proto::domain::Request;

use super::surface::Platform;

/// A glob: `*` any run of characters, `?` one character, everything else literal;
/// compared case-insensitively (host names, emails and agent names are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<char>);

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("an empty pattern matches nothing; use \"*\" or leave it out".into());
        }
        Ok(Self(pattern.to_lowercase().chars().collect()))
    }

    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.to_lowercase().chars().collect();
        // Iterative wildcard matching with one backtrack point: linear in practice,
        // never exponential on hostile input.
        let (pattern, mut p, mut t) = (&self.0, 0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == '?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// On the context's subject, else the agent's name.
    pub subject: Option<Glob>,
    pub owner: Option<Glob>,
    pub host: Option<Glob>,
    pub slack_channel: Option<String>,
    pub teams_conversation: Option<String>,
}

impl Route {
    pub fn matches(&self, request: &Request) -> bool {
        let subject = request
            .context
            .subject()
            .unwrap_or(request.agent_name.as_str());
        self.subject.as_ref().is_none_or(|g| g.matches(subject))
            && self
                .owner
                .as_ref()
                .is_none_or(|g| g.matches(request.owner.as_str()))
            && self
                .host
                .as_ref()
                .is_none_or(|g| g.matches(request.host.as_str()))
    }

    fn target(&self, platform: Platform) -> Option<&str> {
        match platform {
            Platform::Slack => self.slack_channel.as_deref(),
            Platform::Teams => self.teams_conversation.as_deref(),
        }
    }
}

/// Where `request` goes on `platform`: the first matching route decides, also when it
/// names no target on that platform (a route can keep requests off one platform).
pub fn target<'r>(routes: &'r [Route], request: &Request, platform: Platform) -> Option<&'r str> {
    routes
        .iter()
        .find(|route| route.matches(request))
        .and_then(|route| route.target(platform))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell_without_classes() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("web-*").matches("web-1"));
        assert!(g("web-*").matches("WEB-"));
        assert!(!g("web-*").matches("db-1"));
        assert!(g("*@example.com").matches("alice@example.com"));
        assert!(!g("*@example.com").matches("alice@example.com.evil"));
        assert!(g("a?c").matches("abc"));
        assert!(!g("a?c").matches("ac"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(!g("a*b*c").matches("axxbyy"));
        assert!(g("exact").matches("exact"));
        assert!(!g("exact").matches("exactly"));
        assert!(Glob::new("").is_err());
        // Many stars against a long non-matching text end quickly.
        let text = "a".repeat(5000);
        assert!(!g("*a*a*a*a*a*a*a*b").matches(&text));
    }
}
