//! The marker that replaces a masked value: `PREFIX…[KIND:HASH]SUFFIX`.
use std::borrow::Cow;

use hmac::Mac as _;

use crate::{HEX, Hit, Masker};

impl Masker {
    /// Appends the marker for `secret` (of detector `kind`) to `out`, without the formatting machinery: a
    /// masked argument costs a hash and one copy.
    fn push_marker(&self, out: &mut String, secret: &str, hit: &Hit) {
        let d = &self.detectors[hit.kind];
        let (kind, (mut pre, mut suf)) = match hit.sub {
            Some(i) => {
                let v = &crate::vendors::VENDORS[usize::from(i)];
                (v.kind, crate::vendors::keep(v, secret))
            }
            None => (d.kind.as_str(), (d.keep)(secret)),
        };
        if pre + suf >= secret.len()
            || !secret.is_char_boundary(pre)
            || !secret.is_char_boundary(secret.len() - suf)
        {
            (pre, suf) = (0, 0);
        }
        out.push_str(&secret[..pre]);
        out.push_str("…[");
        out.push_str(kind);
        out.push(':');
        out.push_str(std::str::from_utf8(&self.hash_hex(secret)).expect("hex digits"));
        out.push(']');
        out.push_str(&secret[secret.len() - suf..]);
    }

    /// The keyed hash shown in markers: 8 hex digits of HMAC-SHA256(key, value).
    pub fn hash(&self, value: &str) -> String {
        String::from_utf8(self.hash_hex(value).to_vec()).expect("hex digits")
    }

    fn hash_hex(&self, value: &str) -> [u8; 8] {
        // The keyed state is set up once in `new`: two of HMAC's four compressions.
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut hex = [0u8; 8];
        for (i, b) in out[..4].iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        hex
    }

    pub(crate) fn render<'t>(&self, text: &'t str, hits: &[Hit]) -> Cow<'t, str> {
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 32 * hits.len());
        let mut at = 0;
        for h in hits {
            out.push_str(&text[at..h.range.start]);
            self.push_marker(&mut out, &text[h.range.clone()], h);
            at = h.range.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}
