//! Slack's request signing, checked before anything in a request is parsed:
//! `X-Slack-Signature: v0=hex(HMAC-SHA256(signing secret, "v0:" + timestamp + ":" + body))`
//! with `X-Slack-Request-Timestamp` within five minutes of our clock, and each signed
//! request accepted once (a captured request cannot be replayed inside the window).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How far a request's timestamp may be from our clock (Slack's recommendation).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// Signatures remembered; beyond it new requests are refused rather than forgetting one
/// still inside the window (which would let it be replayed).
pub const REPLAY_CAPACITY: usize = 100_000;

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
    #[error("this request was already accepted once")]
    Replayed,
    #[error("too many requests in the replay window")]
    Overloaded,
}

/// The signing secret and the signatures already accepted.
pub struct Verifier {
    key: ring::hmac::Key,
    seen: Mutex<HashMap<Vec<u8>, SystemTime>>,
    capacity: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(signing_secret: &str) -> Self {
        Self::with_capacity(signing_secret, REPLAY_CAPACITY)
    }

    pub fn with_capacity(signing_secret: &str, capacity: usize) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_secret.as_bytes()),
            seen: Mutex::default(),
            capacity,
        }
    }

    /// Accepts `body` (the raw bytes as received) once, if signed by our secret at a time
    /// close to `now`.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let timestamp = timestamp.ok_or(VerifyError::NoTimestamp)?;
        let secs: u64 = timestamp.parse().map_err(|_| VerifyError::NoTimestamp)?;
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let skew = now
            .duration_since(sent)
            .unwrap_or_else(|err| err.duration());
        if skew > MAX_SKEW {
            return Err(VerifyError::Stale);
        }
        let signature = signature
            .and_then(|s| s.strip_prefix("v0="))
            .and_then(decode_hex)
            .ok_or(VerifyError::NoSignature)?;
        let mut base = Vec::with_capacity(body.len() + timestamp.len() + 4);
        base.extend_from_slice(b"v0:");
        base.extend_from_slice(timestamp.as_bytes());
        base.push(b':');
        base.extend_from_slice(body);
        // Constant time: ring compares the tags without an early exit.
        ring::hmac::verify(&self.key, &base, &signature).map_err(|_| VerifyError::BadSignature)?;
        self.accept_once(signature, now)
    }

    fn accept_once(&self, signature: Vec<u8>, now: SystemTime) -> Result<(), VerifyError> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains_key(&signature) {
            return Err(VerifyError::Replayed);
        }
        if seen.len() >= self.capacity {
            // Anything accepted more than twice the skew ago can no longer pass the
            // timestamp check, so forgetting it cannot let it back in.
            seen.retain(|_, at| now.duration_since(*at).unwrap_or_default() <= 2 * MAX_SKEW);
            if seen.len() >= self.capacity {
                return Err(VerifyError::Overloaded);
            }
        }
        seen.insert(signature, now);
        Ok(())
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
    fn slacks_documented_example_verifies_once() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIGNATURE);
        let v = Verifier::new(SECRET);
        assert_eq!(
            v.verify(Some(TS), Some(SIGNATURE), BODY.as_bytes(), now()),
            Ok(())
        );
        assert_eq!(
            v.verify(Some(TS), Some(SIGNATURE), BODY.as_bytes(), now()),
            Err(VerifyError::Replayed)
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
        // None of the refusals used up the genuine request.
        assert_eq!(check(Some(TS), Some(SIGNATURE), body, now()), Ok(()));
    }

    #[test]
    fn a_full_replay_cache_refuses_rather_than_forgets() {
        let v = Verifier::with_capacity(SECRET, 2);
        let t0 = 1_800_000_000u64;
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let req = |n: u64, now: u64| {
            let ts = now.to_string();
            let body = format!("payload={n}");
            v.verify(
                Some(&ts),
                Some(&sign(SECRET, &ts, body.as_bytes())),
                body.as_bytes(),
                at(now),
            )
        };
        assert_eq!(req(1, t0), Ok(()));
        assert_eq!(req(2, t0), Ok(()));
        assert_eq!(req(3, t0 + 1), Err(VerifyError::Overloaded));
        // Once the first two are past any window they are forgotten.
        assert_eq!(req(4, t0 + 601), Ok(()));
    }
}
