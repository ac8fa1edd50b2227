//! Slack's request signing, checked before anything in a request is parsed:
//! `X-Slack-Signature: v0=hex(HMAC-SHA256(signing secret, "v0:" + timestamp + ":" + body))`
//! with `X-Slack-Request-Timestamp` within five minutes of our clock. That each signed
//! request is accepted once is the store's part (`ChatOutboxStore::accept_inbound_once`,
//! shared by replicas): a verified request's signature is its key, remembered for
//! [`REMEMBER`].

use std::time::{Duration, SystemTime};

/// How far a request's timestamp may be from our clock (Slack's recommendation).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// How long an accepted signature is remembered: a signature accepted at `t` carries a
/// timestamp no later than `t + MAX_SKEW`, which passes our check until `t + 2 MAX_SKEW`;
/// the extra minute covers replicas whose clocks differ a little.
pub const REMEMBER: Duration = Duration::from_secs(2 * 5 * 60 + 60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing or malformed X-Slack-Request-Timestamp")]
    NoTimestamp,
    #[error("X-Slack-Request-Timestamp is more than 5 minutes from this server's clock")]
    Stale,
    #[error("missing or malformed X-Slack-Signature")]
    NoSignature,
    #[error("the signature does not match the signing secret")]
    BadSignature,
}

/// The key of a verified request, by which a replay of it is recognised: its
/// signature, in lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed(pub String);

/// The signing secret.
pub struct Verifier {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(signing_secret: &str) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_secret.as_bytes()),
        }
    }

    /// Whether `body` (the raw bytes as received) was signed by our secret at a time
    /// close to `now`; its replay key if so.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Signed, VerifyError> {
        let timestamp = timestamp.ok_or(VerifyError::NoTimestamp)?;
        let secs: u64 = timestamp.parse().map_err(|_| VerifyError::NoTimestamp)?;
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let skew = now
            .duration_since(sent)
            .unwrap_or_else(|err| err.duration());
        if skew > MAX_SKEW {
            return Err(VerifyError::Stale);
        }
        let hex = signature
            .and_then(|s| s.strip_prefix("v0="))
            .ok_or(VerifyError::NoSignature)?;
        let signature = decode_hex(hex).ok_or(VerifyError::NoSignature)?;
        let mut base = Vec::with_capacity(body.len() + timestamp.len() + 4);
        base.extend_from_slice(b"v0:");
        base.extend_from_slice(timestamp.as_bytes());
        base.push(b':');
        base.extend_from_slice(body);
        // Constant time: ring compares the tags without an early exit.
        ring::hmac::verify(&self.key, &base, &signature).map_err(|_| VerifyError::BadSignature)?;
        Ok(Signed(hex.to_ascii_lowercase()))
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature Slack puts on `body` at `timestamp` (tests, and the fake Slack).
pub fn sign(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_secret.as_bytes());
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &base);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_531_420_618 + 10)
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIGNATURE);
        let v = Verifier::new(SECRET);
        assert_eq!(
            v.verify(Some(TS), Some(SIGNATURE), BODY.as_bytes(), now()),
            Ok(Signed(SIGNATURE[3..].to_owned()))
        );
        // The key is the same however the hex was written: a replay in capitals is
        // still a replay.
        assert_eq!(
            v.verify(
                Some(TS),
                Some(&format!("v0={}", SIGNATURE[3..].to_ascii_uppercase())),
                BODY.as_bytes(),
                now()
            ),
            Ok(Signed(SIGNATURE[3..].to_owned()))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let v = Verifier::new(SECRET);
        let body = BODY.as_bytes();
        let check =
            |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| v.verify(ts, sig, body, now);
        let mut tampered = body.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            check(Some(TS), Some(SIGNATURE), &tampered, now()),
            Err(VerifyError::BadSignature)
        );
        // The timestamp is signed too.
        assert_eq!(
            check(Some("1531420619"), Some(SIGNATURE), body, now()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v.verify(
                Some(TS),
                Some(&sign("another secret", TS, body)),
                body,
                now()
            ),
            Err(VerifyError::BadSignature)
        );
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(1_531_420_618 + 301);
        assert_eq!(
            check(Some(TS), Some(SIGNATURE), body, late),
            Err(VerifyError::Stale)
        );
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(1_531_420_618 - 301);
        assert_eq!(
            check(Some(TS), Some(SIGNATURE), body, early),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            check(None, Some(SIGNATURE), body, now()),
            Err(VerifyError::NoTimestamp)
        );
        assert_eq!(
            check(Some("soon"), Some(SIGNATURE), body, now()),
            Err(VerifyError::NoTimestamp)
        );
        assert_eq!(
            check(Some(TS), None, body, now()),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            check(Some(TS), Some(&SIGNATURE[3..]), body, now()),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            check(Some(TS), Some("v0=zz"), body, now()),
            Err(VerifyError::NoSignature)
        );
        assert!(check(Some(TS), Some(SIGNATURE), body, now()).is_ok());
    }
}
