//! One-time enrollment tokens: random secrets of which the database keeps only the hash.

use std::time::{Duration, SystemTime};

use belay_proto::domain::{EnrollSecret, HostName};
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};

use crate::approvals::EnrollToken;

/// Longest a token may stay usable: a forgotten token is a standing invitation.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the system random generator failed")]
    Random,
    #[error(
        "{0:?} is not a duration: a number with a unit, s, m, h or d (e.g. 30m, 1h, 7d), at \
         most 30d"
    )]
    BadTtl(String),
}

/// What the store keeps of a token: the hash of its secret.
pub fn hash(secret: &EnrollSecret) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new token: the secret to hand out once, and the record to store.
pub fn generate(
    host: Option<HostName>,
    ttl: Duration,
    now: SystemTime,
) -> Result<(EnrollSecret, EnrollToken), TokenError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let secret = EnrollSecret::from_bytes(bytes);
    let token = EnrollToken {
        hash: hash(&secret),
        host,
        created_at: now,
        expires_at: now + ttl,
    };
    Ok((secret, token))
}

/// `30s`, `15m`, `1h`, `7d`: 1 s to [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, TokenError> {
    let bad = || TokenError::BadTtl(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let ttl = Duration::from_secs(number.checked_mul(unit).ok_or_else(bad)?);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(bad());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("30d").unwrap(), MAX_TTL);
        for bad in [
            "",
            "h",
            "1",
            "0h",
            "31d",
            "1 h",
            "-1h",
            "1w",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let host = HostName::new("web-1").unwrap();
        let (a, stored) = generate(Some(host.clone()), Duration::from_secs(60), now).unwrap();
        let (b, _) = generate(None, Duration::from_secs(60), now).unwrap();
        assert_ne!(a, b);
        assert_eq!(stored.hash, hash(&a));
        assert_ne!(
            &stored.hash,
            a.as_bytes(),
            "the secret itself is not stored"
        );
        assert_eq!(stored.host, Some(host));
        assert_eq!(stored.expires_at, now + Duration::from_secs(60));
    }
}
