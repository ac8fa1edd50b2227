//! Validators that turn a regex candidate into a finding: checksums (Luhn, mod-97),
//! number plans (SSN areas, NANP), JWT headers and the entropy of values next to
//! secret-ish names. They are what keeps ordinary command lines unmasked.
use base64::Engine as _;

/// Luhn checksum over the digits of `s` (separators ignored).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.is_empty() {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number: 13-19 digits of a known issuer range, Luhn-valid, and separators (if
/// any) that are all the same and split the number into the usual groups.
pub fn card(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !(13..=19).contains(&digits.len()) || !luhn(&digits) {
        return false;
    }
    let p2: u32 = digits[..2].parse().unwrap_or(0);
    let p4: u32 = digits[..4].parse().unwrap_or(0);
    let issuer = digits.starts_with('4')
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || p2 == 65
        || p2 == 35
        || p2 == 36
        || p2 == 38
        || (300..=305).contains(&(p4 / 10));
    if !issuer {
        return false;
    }
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    if seps.is_empty() {
        return true;
    }
    if seps.iter().any(|&c| c != seps[0]) {
        return false;
    }
    let groups: Vec<usize> = s.split(seps[0]).map(str::len).collect();
    let (last, head) = groups.split_last().expect("split yields one part");
    head.iter().all(|&g| g == 4) && *last <= 4 || groups == [4, 6, 5] || groups == [4, 6, 4]
}

/// `AAA-GG-SSSS` with the SSA's never-issued values excluded.
pub fn ssn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    area != 0
        && area != 666
        && area < 900
        && group != "00"
        && serial != "0000"
        && s != "078-05-1120"
        && s != "219-09-9999"
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

pub fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, n)| *n)
}

/// The ISO 7064 mod-97 check of a compact IBAN.
pub fn iban_mod97(compact: &str) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The length in bytes of the IBAN at the start of `s` (spaces every four characters
/// allowed), when one is there: the regex may run on into following words.
pub fn iban_prefix(s: &str) -> Option<usize> {
    let want = iban_length(s.get(..2)?)?;
    let mut compact = String::new();
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if c == ' ' {
            // Spaces only between groups of four.
            if !compact.len().is_multiple_of(4) {
                return None;
            }
            continue;
        }
        compact.push(c);
        end = i + 1;
        if compact.len() == want {
            break;
        }
    }
    (compact.len() == want && iban_mod97(&compact)).then_some(end)
}

/// A North American number: area and exchange not starting with 0/1, no N11 area, one
/// separator style.
pub fn nanp(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.len() {
        10 => digits.as_str(),
        11 if digits.starts_with('1') => &digits[1..],
        _ => return false,
    };
    let b = digits.as_bytes();
    if b[0] < b'2' || b[3] < b'2' || (b[1] == b'1' && b[2] == b'1') {
        return false;
    }
    let seps: Vec<char> = s
        .chars()
        .filter(|c| !c.is_ascii_digit() && !matches!(c, '(' | ')'))
        .collect();
    let parens = s.contains('(');
    if parens {
        return s.matches('(').count() == 1 && s.matches(')').count() == 1;
    }
    seps.windows(2).all(|w| w[0] == w[1])
}

/// An international number written with `+`: 8-15 digits, separators never doubled.
pub fn e164(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !(8..=15).contains(&digits) {
        return false;
    }
    let b = s.as_bytes();
    !b.windows(2)
        .any(|w| !w[0].is_ascii_digit() && !w[1].is_ascii_digit())
}

/// A JWT's header is base64url JSON naming its algorithm.
pub fn jwt(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_start();
    text.starts_with('{') && text.contains("\"alg\"")
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    // Which bytes occur, so the sum visits only those (in ascending order, as a walk
    // over all 256 counts would, so the result is the same to the last bit).
    let mut seen = [0u64; 4];
    for b in s.bytes() {
        counts[b as usize] += 1;
        seen[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    let n = s.len() as f64;
    let mut sum = 0.0;
    for (word, mut bits) in seen.into_iter().enumerate() {
        while bits != 0 {
            let c = counts[word * 64 + bits.trailing_zeros() as usize];
            bits &= bits - 1;
            let p = f64::from(c) / n;
            sum += -p * p.log2();
        }
    }
    sum
}

/// Whether a value next to a secret-ish name (`*_TOKEN=`, `--api-key`) looks generated
/// rather than chosen: long enough, mixed character classes, high entropy, and not a
/// path, a variable reference or a few words joined by dashes.
pub fn looks_random(v: &str) -> bool {
    if v.len() < 12 || v.starts_with(['/', '~', '.', '$', '%', '-', '<', '{']) {
        return false;
    }
    if v.contains("://") {
        return false;
    }
    let lower = v.bytes().any(|b| b.is_ascii_lowercase());
    let upper = v.bytes().any(|b| b.is_ascii_uppercase());
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    let letters = v.bytes().filter(u8::is_ascii_alphabetic).count();
    let classes = usize::from(lower) + usize::from(upper) + usize::from(digits > 0);
    // The cheap test first: most values that fail, fail it. Generated values mix
    // letters and digits (lower-case hex and base36 keys too); long runs of digits
    // alone are ids and keys as well, shorter ones counts, ports and dates.
    // Two classes must be mixed through the value, not a word and a number
    // (`release-2024`).
    let switches = v
        .as_bytes()
        .windows(2)
        .filter(|w| {
            w[0].is_ascii_alphanumeric()
                && w[1].is_ascii_alphanumeric()
                && w[0].is_ascii_digit() != w[1].is_ascii_digit()
        })
        .count();
    // Letters alone: random ones switch case often, camelCase words rarely.
    let case_switches = v
        .as_bytes()
        .windows(2)
        .filter(|w| {
            w[0].is_ascii_alphabetic()
                && w[1].is_ascii_alphabetic()
                && w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase()
        })
        .count();
    let strong = classes == 3
        || (classes == 2 && digits >= 2 && letters >= 2 && switches >= 3)
        || (digits == 0 && lower && upper && v.len() >= 16 && 3 * case_switches >= v.len())
        || (digits == v.len() && v.len() >= 16)
        // Some vendors' keys are UUIDs (Snyk, Heroku); next to an id's name they are
        // references, which `secret_assign` leaves.
        || uuid_like(v);
    if !strong || placeholder(v) || version_like(v) {
        return false;
    }
    // Two or more plain lowercase words and no long random part: a name like
    // `linux-cargo-build` or `release-2024-04-01`, not a key (`lin_api_<40 random>`
    // has words and a key).
    let parts = || v.split(['-', '_', '.', ':']);
    let words = parts()
        .filter(|w| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_lowercase()))
        .count();
    let longest = parts().map(str::len).max().unwrap_or(0);
    (words < 2 || longest >= 16) && entropy(v) >= if digits == v.len() { 2.5 } else { 3.0 }
}

/// `1.2.3`, `v2.0.1-rc1`, `2024.04.01`: dotted numbers, maybe a `v` and a suffix.
pub fn version_like(v: &str) -> bool {
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let head = v.split(['-', '+', '_']).next().unwrap_or("");
    head.contains('.')
        && head
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `8-4-4-4-12` hex digits.
pub fn uuid_like(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a value given for a password-ish name is a real value rather than a
/// reference (`$PGPASS`, `env:VAR`, `file:path`) or a missing one.
pub fn is_literal_password(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(['$', '-', '<', '{', '%'])
        && !v.starts_with("env:")
        && !v.starts_with("file:")
        && !v.starts_with("fd:")
}

/// Values that stand for no password: a switch (`PuttyPassword=0`, `=false`), a name
/// put where the value goes (`user:password`), or a template slot (`<password>`,
/// `[PASSWORD]`, `${pass}`, `{{ .Values.password }}`).
pub fn not_a_password(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "nil",
        "none",
        "empty",
        "undefined",
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "changeme",
        "xxx",
        "yyy",
        "***",
    ];
    v.len() < 3
        || v.starts_with(['$', '<', '{', '[', '%', '('])
        || v.ends_with(['>', ']', '}', ')'])
        || WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

/// Whether a value is a stand-in rather than a credential: a run of one character
/// (`xxxx`, `000000`), very few distinct characters for its length, or the words
/// documentation and templates use (`your_token_here`, `example`, `changeme`).
pub fn placeholder(v: &str) -> bool {
    let b = v.as_bytes();
    let mut run = 1;
    for w in b.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        // A third of the value one byte (some formats pad with `AAAA…`, but never
        // most of the token), or the fillers people type.
        if (run >= 6 && 3 * run >= b.len())
            || (run >= 4 && matches!(w[0], b'x' | b'X' | b'*' | b'#' | b'.'))
        {
            return true;
        }
    }
    let mut seen = [false; 256];
    let distinct = b
        .iter()
        .filter(|&&c| !std::mem::replace(&mut seen[usize::from(c)], true))
        .count();
    if b.len() >= 16 && distinct < 6 {
        return true;
    }
    // A word as people write it (`here`, `HERE`, `Here`), not letters that happen to
    // spell one in a random token (`heRE`).
    PLACEHOLDER_WORDS.find_overlapping_iter(v).any(|m| {
        let s = &b[m.range()];
        s[1..].iter().all(|c| !c.is_ascii_uppercase()) || s.iter().all(|c| !c.is_ascii_lowercase())
    })
}

/// The words of [`placeholder`], searched in one pass, in any case.
static PLACEHOLDER_WORDS: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build([
                "your_",
                "your-",
                "yourtoken",
                "yourkey",
                "yourpass",
                "here",
                "example",
                "placeholder",
                "dummy",
                "changeme",
                "change_me",
                "redacted",
                "replace",
                "insert",
                "secret_key_",
                "password",
                "passw0rd",
                "qwerty",
            ])
            .expect("placeholder words build")
    });

/// CRC-32 (IEEE 802.3, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// GitHub's token checksum: the last 6 characters are the CRC-32 of the 30 random
/// ones before them, in base62 (`0-9A-Za-z`), padded with leading zeros
/// (`ghp_` + 30 + 6).
pub fn github_checksum(token: &str) -> bool {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let b = token.as_bytes();
    if b.len() != 40 || b[3] != b'_' {
        return false;
    }
    let mut want = u64::from(crc32(&b[4..34]));
    for &c in b[34..].iter().rev() {
        if DIGITS[(want % 62) as usize] != c {
            return false;
        }
        want /= 62;
    }
    want == 0
}

/// A Bech32 string (BIP 173) with a valid checksum: `hrp` `1` data, lower case.
pub fn bech32_valid(s: &str) -> bool {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let Some(sep) = s.rfind('1') else {
        return false;
    };
    let (hrp, data) = (&s.as_bytes()[..sep], &s.as_bytes()[sep + 1..]);
    if hrp.is_empty() || data.len() < 6 {
        return false;
    }
    let mut values: Vec<u8> = hrp.iter().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.iter().map(|c| c & 31));
    for c in data {
        match CHARSET.iter().position(|x| x == c) {
            Some(v) => values.push(v as u8),
            None => return false,
        }
    }
    let mut chk = 1u32;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 != 0 {
                chk ^= g;
            }
        }
    }
    chk == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_card_shapes() {
        assert!(card("4111111111111111"));
        assert!(card("4111 1111 1111 1111"));
        assert!(card("3782-822463-10005"), "amex grouping");
        assert!(!card("4111111111111112"), "bad check digit");
        assert!(!card("1234567812345670"), "no issuer starts with 1");
        assert!(!card("4111-1111 1111-1111"), "mixed separators");
        assert!(!card("41111 11111 11111 1"), "odd grouping");
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn("123-45-6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!ssn(bad), "{bad}");
        }
    }

    #[test]
    fn iban_checks() {
        assert!(iban_mod97("GB82WEST12345698765432"));
        assert!(!iban_mod97("GB82WEST12345698765433"));
        assert_eq!(iban_prefix("DE89 3704 0044 0532 0130 00"), Some(27));
        assert_eq!(iban_prefix("DE89370400440532013000 AND"), Some(22));
        assert_eq!(iban_prefix("DE8937040044053201300"), None, "too short");
        assert_eq!(
            iban_prefix("ZZ89370400440532013000"),
            None,
            "no such country"
        );
    }

    #[test]
    fn phone_plans() {
        assert!(nanp("(415) 555-2671"));
        assert!(nanp("415-555-2671"));
        assert!(!nanp("415-555.2671"), "mixed separators");
        assert!(!nanp("115-555-2671"), "area starts with 1");
        assert!(!nanp("411-555-2671"), "N11 area");
        assert!(e164("+14155552671"));
        assert!(e164("+44 20 7946 0958"));
        assert!(!e164("+1234567"), "too few digits");
        assert!(!e164("+44  20 7946 0958"), "doubled separator");
    }

    #[test]
    fn jwt_header_must_be_json_with_alg() {
        assert!(jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt("eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.sig"), "no alg");
        assert!(!jwt("eyJ!!!.x.y"));
    }

    #[test]
    fn randomness_of_values() {
        assert!(looks_random("Zx9Qw2Lm8Rt5Yp3K"));
        assert!(looks_random("a1b2c3d4e5f6a7b8c9d0e1f2"));
        assert!(!looks_random("release-2024"));
        assert!(!looks_random("linux-cargo-abc123def456"));
        assert!(!looks_random("/etc/ssl/private/key.pem"));
        assert!(!looks_random("${API_TOKEN}"));
        assert!(!looks_random("short1A"));
        assert!(!looks_random("aaaaaaaaaaaaaaaaaaaaaaaa1"), "low entropy");
    }

    #[test]
    fn github_checksums() {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let random = "zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ";
        let mut crc = u64::from(crc32(random.as_bytes()));
        let mut sum = [b'0'; 6];
        for d in sum.iter_mut().rev() {
            *d = DIGITS[(crc % 62) as usize];
            crc /= 62;
        }
        let token = format!("ghp_{random}{}", std::str::from_utf8(&sum).unwrap());
        assert!(github_checksum(&token));
        let mut bad = token.clone().into_bytes();
        bad[39] = if bad[39] == b'a' { b'b' } else { b'a' };
        assert!(
            !github_checksum(std::str::from_utf8(&bad).unwrap()),
            "bad checksum"
        );
        assert!(!github_checksum(&token[..39]), "too short");
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
    }

    #[test]
    fn placeholders_and_non_passwords() {
        for p in [
            "xxxxxxxxxxxxxxxxxxxx",
            "XXXX_PUT_YOUR_TOKEN_HERE_XXXX",
            "your_api_key",
            "AAAAAAAAAAAAAAAAAAAA1",
            "abababababababababab",
            "changeme",
        ] {
            assert!(placeholder(p), "{p}");
        }
        for t in [
            "PoLKtz8JSheREdqB2Kff2lzk",
            "Zx9Qw2Lm8Rt5Yp3K",
            "hvb.AAAAAQJgxDgqsGNorpoOR7h",
        ] {
            assert!(!placeholder(t), "{t}");
        }
        for v in [
            "0",
            "no",
            "false",
            "$2",
            "${pass}",
            "<password>",
            "[PASSWORD]",
            "password",
        ] {
            assert!(not_a_password(v), "{v}");
        }
        for v in ["hunter2!", "CleartextPassword1", "Sw0rdfish"] {
            assert!(!not_a_password(v), "{v}");
        }
        assert!(version_like("1.2.3") && version_like("v2.0.1-rc1") && !version_like("a1.b2"));
        assert!(uuid_like("3f2b8c1e-7d4a-4e2b-9c1d-5a6b7c8d9e0f"));
        assert!(!uuid_like("3f2b8c1e-7d4a-4e2b-9c1d"));
    }

    #[test]
    fn randomness_of_lower_case_and_numeric_keys() {
        assert!(looks_random("9joqhbu0csiiwqoq"), "base36");
        assert!(looks_random("4b33ab16140ce9b94efc3b2b3cd54ee8"), "hex");
        assert!(looks_random("55429238428480917454743080151464"), "digits");
        assert!(
            looks_random("KtxrVQcaToXkLsxNBoGyjsEfsIxO"),
            "letters, random case"
        );
        assert!(
            looks_random("lin_api_7wx8cc5lq8pofg3asaoc5kr7x59vhv3p3x"),
            "words and a key"
        );
        assert!(
            !looks_random("SalesResultsQuarterlyReport"),
            "camelCase words"
        );
        assert!(!looks_random("1234567890"), "short number");
        assert!(!looks_random("v1.22.3-alpha"), "version");
        assert!(!looks_random("build-2024-04-01"), "words and a date");
    }

    #[test]
    fn entropy_in_bits_per_character() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert_eq!(entropy("abab"), 1.0);
        assert_eq!(entropy("abcd"), 2.0);
        assert_eq!(entropy("\u{ff}\u{fe}"), 1.5, "per byte: c3 bf c3 be");
        // The same sum in the same order as over all 256 counts.
        let s = "Zx9Qw2Lm8Rt5Yp3K~é";
        let mut counts = [0u32; 256];
        for b in s.bytes() {
            counts[b as usize] += 1;
        }
        let n = s.len() as f64;
        let want: f64 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(f64::from(c) / n) * (f64::from(c) / n).log2())
            .sum();
        assert_eq!(entropy(s).to_bits(), want.to_bits());
    }
}
