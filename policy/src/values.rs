//! The values inside a policy: durations, ports, destinations, names, cgroup paths
//! and uids. Each check returns the problem as text; the reader adds where it is.
use std::{ops::RangeInclusive, time::Duration};

use super::{Cidr, Destination, Glob, GlobMode, HostPattern};

const MAX_NAME: usize = 64;

/// "a, b or c"
pub(crate) fn one_of(items: &[&str], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

/// `90s`, `5m`, `1h`, `1h30m`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?} (expected e.g. 90s, 5m, 1h, 1h30m or a number of seconds)"
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match rest.as_bytes().get(digits) {
            Some(b'h') => 3600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => return Err(bad()),
        };
        // Units go from large to small, each at most once.
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("{name:?} is longer than {MAX_NAME} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {bad:?} (letters, digits, '.', '_' and '-' only)"
        ));
    }
    Ok(())
}

/// A cgroup v2 path relative to the cgroup2 root: `/` then components, no `.` or `..`;
/// a trailing `/` is dropped.
pub(crate) fn normalize_cgroup(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "cgroup path {text:?} must start with '/' (it is relative to the cgroup2 root)"
        ));
    }
    if text.contains('\0') {
        return Err("path contains a NUL character".into());
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    for comp in trimmed[1..].split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(format!(
                "cgroup path {text:?} has an empty, '.' or '..' component"
            ));
        }
    }
    Ok(trimmed.to_owned())
}

pub(crate) fn resolve_uid(text: &str) -> Result<u32, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(u32::MAX) | Err(_) => Err(format!("{text:?} is not a valid uid")),
            Ok(uid) => Ok(uid),
        };
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {text:?}")),
        Err(e) => Err(format!("looking up user {text:?}: {e}")),
    }
}

/// A `to` entry: an address block, a bare address, a hostname pattern, or
/// `unix:GLOB`.
pub(crate) fn destination(text: &str) -> Result<Destination, String> {
    if let Some(pattern) = text.strip_prefix("unix:") {
        if !pattern.starts_with(['/', '@']) {
            return Err(format!(
                "{text:?}: a unix: destination is a path glob starting with '/' (a socket in the filesystem) or '@' (an abstract socket), e.g. unix:/var/run/docker.sock"
            ));
        }
        return Glob::new(pattern, GlobMode::Path)
            .map(Destination::Unix)
            .map_err(|m| format!("{text:?}: {m}"));
    }
    let looks_numeric =
        text.contains(['/', ':']) || text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_numeric {
        return Cidr::parse(text).map(Destination::Net);
    }
    HostPattern::new(text).map(Destination::Host)
}

/// `443` or `8000-8100`.
pub(crate) fn port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid port {text:?} (expected a port 1-65535 or a range like \"8000-8100\")"
            ));
        }
        match s.parse::<u32>() {
            Ok(0) => Err(format!("port 0 in {text:?} is not a port (1 to 65535)")),
            Ok(p) if p <= 65535 => Ok(p as u16),
            _ => Err(format!("port {s} in {text:?} is out of range (1 to 65535)")),
        }
    };
    match text.split_once('-') {
        None => {
            let p = port(text)?;
            Ok(p..=p)
        }
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return Err(format!(
                    "port range {text:?} is reversed ({lo} is above {hi})"
                ));
            }
            Ok(lo..=hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "m",
            "5x",
            "5m5m",
            "5s1m",
            "1.5h",
            "-5s",
            "5 m",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(port_range("443"), Ok(443..=443));
        assert_eq!(port_range("8000-8100"), Ok(8000..=8100));
        assert_eq!(port_range("1-65535"), Ok(1..=65535));
        assert!(port_range("0").unwrap_err().contains("port 0"));
        assert!(port_range("0-10").unwrap_err().contains("port 0"));
        assert!(port_range("8100-8000").unwrap_err().contains("reversed"));
        assert!(port_range("65536").unwrap_err().contains("out of range"));
        assert!(port_range("http").unwrap_err().contains("invalid port"));
        assert!(port_range("-5").unwrap_err().contains("invalid port"));
    }

    #[test]
    fn destinations() {
        assert!(matches!(destination("10.0.0.0/8"), Ok(Destination::Net(_))));
        assert!(matches!(destination("127.0.0.1"), Ok(Destination::Net(c)) if c.prefix == 32));
        assert!(matches!(destination("::1"), Ok(Destination::Net(c)) if c.prefix == 128));
        assert!(matches!(destination("*.x.com"), Ok(Destination::Host(_))));
        assert!(
            matches!(destination("unix:/run/user/*/bus"), Ok(Destination::Unix(g)) if g.as_str() == "/run/user/*/bus" && g.mode() == GlobMode::Path)
        );
        assert!(
            matches!(destination("unix:@/tmp/.X11-unix/*"), Ok(Destination::Unix(g)) if g.matches("@/tmp/.X11-unix/X0"))
        );
        for bad in ["unix:", "unix:run/x.sock", "unix:*.sock", "unix: /x"] {
            assert!(
                destination(bad).unwrap_err().contains("starting with '/'"),
                "{bad}"
            );
        }
        assert!(
            destination("unix:/x/[a")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            destination("10.0.0.300")
                .unwrap_err()
                .contains("not a valid IP")
        );
        assert!(
            destination("10.0.0.1/8")
                .unwrap_err()
                .contains("outside the /8")
        );
    }

    #[test]
    fn cgroups() {
        assert_eq!(normalize_cgroup("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_cgroup("/").unwrap(), "/");
        assert!(
            normalize_cgroup("a/b")
                .unwrap_err()
                .contains("must start with '/'")
        );
        assert!(normalize_cgroup("/a/../b").unwrap_err().contains("'..'"));
        assert!(normalize_cgroup("/a//b").unwrap_err().contains("empty"));
    }

    #[test]
    fn one_of_lists() {
        assert_eq!(one_of(&["a"], "or"), "a");
        assert_eq!(one_of(&["a", "b", "c"], "or"), "a, b or c");
    }
}
