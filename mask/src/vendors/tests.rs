//! Per entry of the vendor table: a valid token masked with its kind, near misses
//! (one character short or long, a bad checksum, a placeholder) left alone. The valid
//! tokens are built here from each vendor's published shape.
use base64::Engine as _;

use crate::{MaskConfig, Masker, checks, corpus::Rng};

use super::{Body, VENDORS};

fn masker() -> Masker {
    Masker::new(&MaskConfig::default(), [3; 32]).unwrap()
}

/// Whether `token`, alone and after `X=`, is masked as `kind` and gone.
#[track_caller]
fn masked(m: &Masker, token: &str, kind: &str) {
    for text in [token.to_owned(), format!("deploy --with {token} now")] {
        let (out, f) = m.mask_report(&text);
        assert!(
            f.iter().any(|f| f.kind == kind),
            "{kind} not found in {text:?}: {f:?} -> {out}"
        );
        assert!(!out.contains(token), "{token} survived: {out}");
    }
}

#[track_caller]
fn left(m: &Masker, text: &str, kind: &str) {
    let (out, f) = m.mask_report(text);
    assert!(
        !f.iter().any(|f| f.kind == kind),
        "{kind} found in {text:?}: {out}"
    );
}

fn alphabet(class: fn(u8) -> bool) -> String {
    (b' '..=b'~')
        .filter(|&b| class(b) && b != b'=')
        .map(char::from)
        .collect()
}

/// Entries whose check wants more than the run of their class (tested below).
const CHECKED: &[&str] = &[
    "AGE-SECRET-KEY-1",
    "ABSK",
    "bedrock-api-key-",
    "ico-",
    "LTAI",
    "EAA",
    "ZXlK",
];

#[test]
fn every_run_entry_masks_its_shape_and_not_one_off() {
    let m = masker();
    let mut rng = Rng::new(7);
    let mut tested = 0;
    for v in VENDORS {
        let Body::Run {
            class, min, max, ..
        } = v.body
        else {
            continue;
        };
        if CHECKED.contains(&v.prefix) {
            continue;
        }
        let abc = alphabet(class);
        let token = format!("{}{}", v.prefix, rng.chars(&abc, min));
        masked(&m, &token, v.kind);
        if min > 1 {
            left(
                &m,
                &format!("{}{}", v.prefix, rng.chars(&abc, min - 1)),
                v.kind,
            );
        }
        if max < 100 && abc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            left(
                &m,
                &format!("{}{}", v.prefix, rng.chars(&abc, max + 1)),
                v.kind,
            );
        }
        // A placeholder of the right length.
        left(&m, &format!("{}{}", v.prefix, "x".repeat(min)), v.kind);
        tested += 1;
    }
    assert!(tested > 50, "only {tested} entries");
}

fn hex(rng: &mut Rng, n: usize) -> String {
    rng.chars("0123456789abcdef", n)
}

#[test]
fn structured_tokens() {
    let m = masker();
    let r = &mut Rng::new(11);
    let b62 = crate::corpus::BASE62;
    // Sourcegraph: with an instance id, `local`, or neither.
    for t in [
        format!("sgp_{}_{}", hex(r, 16), hex(r, 40)),
        format!("sgp_local_{}", hex(r, 40)),
        format!("sgp_{}", hex(r, 40)),
    ] {
        masked(&m, &t, "sourcegraph-token");
    }
    left(&m, &format!("sgp_{}", hex(r, 39)), "sourcegraph-token");
    left(
        &m,
        &format!("sgp_{}!{}", hex(r, 10), hex(r, 29)),
        "sourcegraph-token",
    );
    // Cloudflare Origin CA.
    masked(
        &m,
        &format!("v1.0-{}-{}", hex(r, 24), hex(r, 146)),
        "cloudflare-origin-ca-key",
    );
    left(
        &m,
        &format!("v1.0-{}-{}", hex(r, 24), hex(r, 145)),
        "cloudflare-origin-ca-key",
    );
    // Atlassian: base64url body, `=`, 8 hex digits.
    let body = r.chars(crate::corpus::BASE64URL, 180);
    masked(&m, &format!("ATATT{body}=0A1B2C3D"), "atlassian-token");
    left(&m, &format!("ATATT{body}=0A1B2C3"), "atlassian-token");
    // Notion: 11 digits, 35 alphanumerics.
    let digits = r.chars("0123456789", 11);
    masked(
        &m,
        &format!("ntn_{digits}{}", r.chars(b62, 35)),
        "notion-token",
    );
    left(
        &m,
        &format!("ntn_{digits}{}", r.chars(b62, 34)),
        "notion-token",
    );
    left(
        &m,
        &format!("ntn_{}", "1234567890".repeat(6)),
        "notion-token",
    );
    // Entra client secrets: three characters, a digit, `Q~`, 31-34 more.
    let tail = format!(
        "{}_{}.{}",
        r.chars(b62, 12),
        r.chars(b62, 12),
        r.chars(b62, 6)
    );
    masked(&m, &format!("aB3{}Q~{tail}", 7), "azure-client-secret");
    left(&m, &format!("aB3xQ~{tail}"), "azure-client-secret");
    left(&m, &"~".repeat(40), "azure-client-secret");
    // 1Password secret keys, both groupings.
    let up = "ABCDEFGHJKLMNPQRSTVWXYZ23456789";
    let g = |r: &mut Rng, n| r.chars(up, n);
    let a = format!(
        "A3-{}-{}-{}-{}-{}",
        g(r, 6),
        g(r, 11),
        g(r, 5),
        g(r, 5),
        g(r, 5)
    );
    masked(&m, &a, "1password-secret-key");
    let b = format!(
        "A3-{}-{}-{}-{}-{}-{}",
        g(r, 6),
        g(r, 6),
        g(r, 5),
        g(r, 5),
        g(r, 5),
        g(r, 5)
    );
    masked(&m, &b, "1password-secret-key");
    left(
        &m,
        "A3-XXXXXX-XXXXXXXXXXX-XXXXX-XXXXX-XXXXX",
        "1password-secret-key",
    );
    // Sentry org tokens: base64 JSON with `iat`, `_`, 43 base64 characters.
    let json = base64::engine::general_purpose::STANDARD
        .encode(r#"{"iat":1700000000.1,"url":"https://sentry.example.com","org":"acme"}"#);
    let secret = r.chars(crate::corpus::BASE64, 43);
    masked(&m, &format!("sntrys_{json}_{secret}"), "sentry-token");
    left(
        &m,
        &format!("sntrys_{json}_{}", &secret[..42]),
        "sentry-token",
    );
    let nojson = base64::engine::general_purpose::STANDARD.encode(r#"{"url":"x","org":"acme"}"#);
    left(&m, &format!("sntrys_{nojson}_{secret}"), "sentry-token");
    // Flutterwave: secret keys end `-X`; encryption keys are 12 hex digits.
    masked(
        &m,
        &format!("FLWSECK_TEST-{}-X", hex(r, 32)),
        "flutterwave-key",
    );
    masked(
        &m,
        &format!("FLWSECK_TEST-{}", hex(r, 12)),
        "flutterwave-key",
    );
    left(
        &m,
        &format!("FLWSECK_TEST-{}", hex(r, 11)),
        "flutterwave-key",
    );
    left(
        &m,
        &format!("FLWPUBK_TEST-{}", hex(r, 12)),
        "flutterwave-key",
    );
    // Telegram bot tokens.
    let bot = format!(
        "{}:AA{}",
        r.chars("0123456789", 10),
        r.chars(crate::corpus::BASE64URL, 33)
    );
    masked(&m, &bot, "telegram-token");
    left(
        &m,
        &format!("{}:AA{}", "1234567", r.chars(b62, 33)),
        "telegram-token",
    );
    // Terraform Cloud: 14 alphanumerics, `.atlasv1.`, 60-70 more.
    masked(
        &m,
        &format!("{}.atlasv1.{}", r.chars(b62, 14), r.chars(b62, 67)),
        "terraform-token",
    );
    left(
        &m,
        &format!("{}.atlasv1.{}", r.chars(b62, 13), r.chars(b62, 67)),
        "terraform-token",
    );
}

/// BIP 173 checksum over `hrp` and 5-bit `data`, as an encoder makes it.
fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let polymod = |values: &[u8]| {
        let mut chk = 1u32;
        for &v in values {
            let top = chk >> 25;
            chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
            for (i, g) in GEN.iter().enumerate() {
                if (top >> i) & 1 != 0 {
                    chk ^= g;
                }
            }
        }
        chk
    };
    let mut values: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|c| c & 31));
    values.extend(data);
    values.extend([0; 6]);
    let pm = polymod(&values) ^ 1;
    let mut out = format!("{hrp}1");
    for &d in data {
        out.push(CHARSET[usize::from(d)] as char);
    }
    for i in 0..6 {
        out.push(CHARSET[((pm >> (5 * (5 - i))) & 31) as usize] as char);
    }
    out
}

#[test]
fn age_keys_need_their_bech32_checksum() {
    let m = masker();
    let mut r = Rng::new(5);
    // 32 bytes are 52 five-bit groups; with the checksum, 58 characters.
    let data: Vec<u8> = (0..52).map(|_| r.below(32) as u8).collect();
    let key = bech32_encode("age-secret-key-", &data).to_ascii_uppercase();
    assert!(checks::bech32_valid(&key.to_ascii_lowercase()));
    masked(&m, &key, "age-secret-key");
    // One character changed: the checksum no longer holds.
    let mut bad = key.clone().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'Q' { b'P' } else { b'Q' };
    left(&m, &String::from_utf8(bad).unwrap(), "age-secret-key");
    left(
        &m,
        &format!("AGE-SECRET-KEY-1{}", "Q".repeat(58)),
        "age-secret-key",
    );
}

#[test]
fn bedrock_keys_carry_their_service_in_base64() {
    let m = masker();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let long = format!(
        "ABSK{}",
        b64("BedrockAPIKey-ab12-at-123456789012:Zk3mQ9xR2vT7wL5pN8sJ4hF6gD1cB0aE")
    );
    masked(&m, &long, "bedrock-api-key");
    left(
        &m,
        &format!(
            "ABSK{}",
            b64("SomethingElse-ab12-at-123456789012:Zk3mQ9xR2vT7wL5pN8s")
        ),
        "bedrock-api-key",
    );
    let short = format!(
        "bedrock-api-key-{}",
        b64("bedrock.amazonaws.com/?Action=CallWithBearerToken&X-Amz-Credential=AKIA")
    );
    masked(&m, &short, "bedrock-api-key");
    left(
        &m,
        &format!(
            "bedrock-api-key-{}",
            b64("example.amazonaws.com/?Action=Call")
        ),
        "bedrock-api-key",
    );
}

#[test]
fn unsigned_jwts_and_jwts_in_base64() {
    let m = masker();
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc(r#"{"sub":"u-42"}"#));
    masked(&m, &none, "jwt");
    // An unsigned token whose header names a real algorithm is malformed, not `none`.
    let hs = format!(
        "{}.{}.",
        enc(r#"{"alg":"HS256"}"#),
        enc(r#"{"sub":"u-42"}"#)
    );
    left(&m, &hs, "jwt");
    let signed = format!(
        "{}.{}.{}",
        enc(r#"{"alg":"HS256","typ":"JWT"}"#),
        enc(r#"{"sub":"u-42","iat":1700000000}"#),
        "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"
    );
    let wrapped = base64::engine::general_purpose::STANDARD.encode(&signed);
    masked(&m, &wrapped, "jwt");
    let not_jwt = base64::engine::general_purpose::STANDARD
        .encode("eyJ is how JSON starts in base64url, and this is prose about it");
    left(&m, &not_jwt, "jwt");
}

#[test]
fn mixed_case_entries() {
    let m = masker();
    let mut r = Rng::new(9);
    let b62 = crate::corpus::BASE62;
    let mut mixed = |n| loop {
        let s = r.chars(b62, n);
        let b = s.as_bytes();
        if b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_lowercase)
            && b.iter().any(u8::is_ascii_digit)
        {
            return s;
        }
    };
    masked(&m, &format!("ico-{}", mixed(32)), "infracost-token");
    // A file name with a hash in it: lower-case hex.
    left(
        &m,
        "video_box.ico-7a388b69018576d24b59331fd60aab0c.png",
        "infracost-token",
    );
    masked(&m, &format!("LTAI{}", mixed(20)), "alibaba-key");
    left(&m, "LTAIABCDEFGHIJKLMNOPQRST", "alibaba-key");
    masked(&m, &format!("EAA{}", mixed(120)), "facebook-token");
}
