//! The one event shape every producer hands in and every format reads.

use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};

/// One exported event. `id` is stable: re-deliveries after a crash or a sink outage carry
/// the same id, so the receiving SIEM can drop duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// A UUID (v4 random, or v8 derived from the content, see [`content_id`]).
    pub id: String,
    /// Nanoseconds since the epoch of what happened.
    pub time_ns: i64,
    /// `belay-server` or `belay-agent`: syslog APP-NAME, HEC `source`.
    pub app: String,
    /// The host the producing process runs on.
    pub host: String,
    /// `submitted`, `decided`, `expired`, `cancelled`, `voted`, `granted` (server audit);
    /// `opened`, `ended` (agent).
    pub kind: String,
    /// The producer's own record: the audit body, or the agent's (masked) request view.
    pub body: serde_json::Value,
}

/// A UUID (version 8, RFC 9562) derived from SHA-256 of `parts`: the same record always
/// gets the same id, on every replica and after every restart.
pub fn content_id(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid_text(bytes, 0x80)
}

/// A random UUID (version 4).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    uuid_text(bytes, 0x40)
}

fn uuid_text(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | version;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2026-01-02T03:04:05.123456Z` (RFC 3339, microseconds: the most RFC 5424 allows).
pub fn rfc3339(time_ns: i64) -> String {
    let secs = time_ns.div_euclid(1_000_000_000);
    let micros = time_ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days -> (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// This machine's host name, for HOSTNAME / `host` fields.
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_780_000_000_123_456_789),
            "2026-05-28T20:26:40.123456Z"
        );
    }

    #[test]
    fn content_ids_are_stable_uuids() {
        let a = content_id(&[b"12", b"abc"]);
        assert_eq!(a, content_id(&[b"12", b"abc"]));
        assert_ne!(a, content_id(&[b"1", b"2abc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert_eq!(&random_id()[14..15], "4");
    }
}
