//! Enrollment: an agent trades a one-time token and a CSR for its client certificate.

use std::fmt;

use super::error::{Problem, ValidationError};
use super::text::HostName;
use crate::v1;

/// A CSR is a few hundred bytes; anything near this is not one.
pub const MAX_CSR_LEN: usize = 16 * 1024;

const TOKEN_PREFIX: &str = "belay-enroll-";
const TOKEN_BYTES: usize = 32;

/// The secret of a one-time enrollment token. Printed as `belay-enroll-` and 64 hex
/// digits; the server keeps only a hash of the bytes. `Debug` hides the value, so the
/// token does not end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollSecret([u8; TOKEN_BYTES]);

impl EnrollSecret {
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "token",
                Problem::Inconsistent(
                    "is not a belay enrollment token (belay-enroll- and 64 hex digits)",
                ),
            )
        };
        let hex = text.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        if hex.len() != TOKEN_BYTES * 2 {
            return Err(bad());
        }
        let mut bytes = [0; TOKEN_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for EnrollSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TOKEN_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for EnrollSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrollSecret(..)")
    }
}

/// A validated [`v1::EnrollRequest`]. The CSR is only checked for size here; parsing and
/// its signature are the server's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollRequest {
    pub token: EnrollSecret,
    pub host: HostName,
    pub csr: Vec<u8>,
}

impl TryFrom<v1::EnrollRequest> for EnrollRequest {
    type Error = ValidationError;

    fn try_from(request: v1::EnrollRequest) -> Result<Self, Self::Error> {
        let host = HostName::parse("host", request.host)?;
        // Certificates carry the host in an IA5String (ASCII) name.
        if let Some(c) = host.as_str().chars().find(|c| !c.is_ascii()) {
            return Err(ValidationError::new("host", Problem::ForbiddenChar(c)));
        }
        if request.csr.is_empty() {
            return Err(ValidationError::new("csr", Problem::Empty));
        }
        if request.csr.len() > MAX_CSR_LEN {
            return Err(ValidationError::new(
                "csr",
                Problem::TooLong {
                    len: request.csr.len(),
                    max: MAX_CSR_LEN,
                },
            ));
        }
        Ok(Self {
            token: EnrollSecret::parse(&request.token)?,
            host,
            csr: request.csr,
        })
    }
}

impl From<EnrollRequest> for v1::EnrollRequest {
    fn from(request: EnrollRequest) -> Self {
        Self {
            token: request.token.to_string(),
            host: request.host.into(),
            csr: request.csr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(token: &str, host: &str, csr: &[u8]) -> v1::EnrollRequest {
        v1::EnrollRequest {
            token: token.into(),
            host: host.into(),
            csr: csr.to_vec(),
        }
    }

    #[test]
    fn token_round_trips_through_its_text() {
        let secret = EnrollSecret::from_bytes([0xab; 32]);
        let text = secret.to_string();
        assert_eq!(text, format!("belay-enroll-{}", "ab".repeat(32)));
        assert_eq!(EnrollSecret::parse(&text).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "EnrollSecret(..)");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = "ab".repeat(32);
        for bad in [
            String::new(),
            good.clone(),
            format!("belay-enroll-{}", &good[..62]),
            format!("belay-enroll-{good}00"),
            format!("belay-enroll-{}zz", &good[..62]),
            format!("belay-enroll-{}é", &good[..62]),
        ] {
            let err = EnrollSecret::parse(&bad).unwrap_err();
            assert_eq!(err.field(), "token", "{bad:?}");
        }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let token = EnrollSecret::from_bytes([1; 32]).to_string();
        let ok = EnrollRequest::try_from(wire(&token, "web-1", b"csr")).unwrap();
        assert_eq!(ok.host.as_str(), "web-1");

        let err = EnrollRequest::try_from(wire(&token, "", b"csr")).unwrap_err();
        assert_eq!(err.to_string(), "invalid host: must not be empty");
        let err = EnrollRequest::try_from(wire(&token, "hôte", b"csr")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid host: contains the forbidden character 'ô'"
        );
        let err = EnrollRequest::try_from(wire(&token, "web-1", b"")).unwrap_err();
        assert_eq!(err.to_string(), "invalid csr: must not be empty");
        let big = vec![0; MAX_CSR_LEN + 1];
        let err = EnrollRequest::try_from(wire(&token, "web-1", &big)).unwrap_err();
        assert_eq!(err.field(), "csr");
        let err = EnrollRequest::try_from(wire("secret", "web-1", b"csr")).unwrap_err();
        assert_eq!(err.field(), "token");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
