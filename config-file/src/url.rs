//! URLs that configuration names and that belay fetches secrets or keys from.

/// Whether `url` is one an OIDC issuer's documents and keys may be fetched from:
/// https, or plain http to a loopback host only (a local test issuer).
pub fn check_url(url: &str) -> Result<(), String> {
    {
        let rest = if let Some(rest) = url.strip_prefix("https://") {
            rest
        } else if let Some(rest) = url.strip_prefix("http://") {
            let host = authority_host(rest);
            let loopback_ip = host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
            if !matches!(host, "localhost" | "[::1]") && !loopback_ip {
                return Err(format!(
                    "{url:?}: plain http is only accepted on a loopback host; use https"
                ));
            }
            rest
        } else {
            return Err(format!("{url:?} is not an https:// URL"));
        };
        if authority_host(rest).is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(())
    }
}

/// The host of `host[:port]/path...`, brackets kept for IPv6.
fn authority_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn keys_come_only_from_https_or_loopback() {
        assert!(check_url("https://login.example.com").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://[::1]:8080/realms/x").is_ok());
        assert!(check_url("http://localhost").is_ok());
        assert!(check_url("http://login.example.com").is_err());
        assert!(check_url("http://127.0.0.1.evil.example").is_err());
        assert!(check_url("ftp://login.example.com").is_err());
        assert!(check_url("https://").is_err());
    }
}
