//! Secrets of the vendor table, tool options and assignment styles (`vendors`,
//! `tools`, `assign`), each in its published shape and in a command line it turns up
//! in; and ordinary lines near them that must stay as they are.
use base64::Engine as _;

use super::{BASE62, BASE64, BASE64URL, HEX, Rng, Sample};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// A value that looks generated: mixed case and digits.
fn random(r: &mut Rng, n: usize) -> String {
    loop {
        let v = r.chars(BASE62, n);
        let b = v.as_bytes();
        if b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_lowercase)
            && b.iter().filter(|c| c.is_ascii_digit()).count() >= 2
        {
            return v;
        }
    }
}

/// Bech32 (BIP 173) of 5-bit `data` under `hrp`, lower case.
fn bech32(hrp: &str, data: &[u8]) -> String {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut values: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|c| c & 31));
    values.extend(data);
    values.extend([0; 6]);
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
    chk ^= 1;
    let mut out = format!("{hrp}1");
    out.extend(data.iter().map(|&d| CHARSET[usize::from(d)] as char));
    out.extend((0..6).map(|i| CHARSET[((chk >> (5 * (5 - i))) & 31) as usize] as char));
    out
}

/// A GitHub token with its CRC-32 checksum: 30 random base62 characters, then the
/// checksum in 6 base62 digits.
fn github_token(r: &mut Rng) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random = r.chars(BASE62, 30);
    let mut crc = u64::from(crate::checks::crc32(random.as_bytes()));
    let mut sum = [b'0'; 6];
    for d in sum.iter_mut().rev() {
        *d = DIGITS[(crc % 62) as usize];
        crc /= 62;
    }
    format!("ghp_{random}{}", String::from_utf8_lossy(&sum))
}

/// One round of samples: the kind the masker should report, argv, env, and the parts
/// that must not survive.
pub(super) fn samples(r: &mut Rng, out: &mut Vec<Sample>) {
    let mut add = |kind, argv: Vec<String>, env: Vec<String>, secrets: Vec<String>| {
        out.push(Sample {
            kind,
            argv,
            env,
            secrets,
        });
    };
    // Vendor tokens.
    let tok = format!("sgp_{}_{}", r.chars(HEX, 16), r.chars(HEX, 40));
    add(
        "sourcegraph-token",
        s(&["src", "search", "repo:acme"]),
        vec![format!("SRC_ACCESS_TOKEN={tok}")],
        vec![tok[4..].to_owned()],
    );
    let json = base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"iat":{}.5,"url":"https://sentry.io","region_url":"https://us.sentry.io","org":"acme"}}"#,
        r.range(1_600_000_000, 1_800_000_000)
    ));
    let tok = format!("sntrys_{json}_{}", r.chars(BASE64, 43));
    add(
        "sentry-token",
        s(&["sentry-cli", "--auth-token", &tok, "releases", "list"]),
        vec![],
        vec![tok[7..].to_owned()],
    );
    let tok = format!(
        "ATATT3x{}={:08X}",
        r.chars(BASE64URL, 178),
        r.next_u64() as u32
    );
    add(
        "atlassian-token",
        s(&[
            "curl",
            "-u",
            &format!("ops@example.com:{tok}"),
            "https://acme.atlassian.net/rest/api/3/myself",
        ]),
        vec![],
        vec![tok[5..].to_owned()],
    );
    let tok = format!("v1.0-{}-{}", r.chars(HEX, 24), r.chars(HEX, 146));
    add(
        "cloudflare-origin-ca-key",
        s(&["terraform", "apply"]),
        vec![format!("CLOUDFLARE_API_USER_SERVICE_KEY={tok}")],
        vec![tok[5..].to_owned()],
    );
    let data: Vec<u8> = (0..52).map(|_| r.below(32) as u8).collect();
    let key = bech32("age-secret-key-", &data).to_ascii_uppercase();
    add(
        "age-secret-key",
        s(&[
            "sh",
            "-c",
            &format!("echo {key} > ~/.config/sops/age/keys.txt"),
        ]),
        vec![],
        vec![key[16..].to_owned()],
    );
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"user-{}","admin":true}}"#,
            r.range(1, 99999)
        ))
    );
    add(
        "jwt",
        s(&[
            "curl",
            "-H",
            &format!("Authorization: Bearer {none}"),
            "https://api.example.com/admin",
        ]),
        vec![],
        vec![none[3..].to_owned()],
    );
    let tok = format!("hvs.{}", r.chars(BASE64URL, 91));
    add(
        "vault-token",
        s(&["vault", "kv", "get", "secret/app"]),
        vec![format!("VAULT_TOKEN={tok}")],
        vec![tok[4..].to_owned()],
    );
    let secret = format!("{}{}Q~{}", r.chars(BASE62, 3), r.range(0, 9), random(r, 34));
    add(
        "azure-client-secret",
        s(&[
            "az",
            "login",
            "--service-principal",
            "-u",
            "3f2b8c1e-7d4a-4e2b-9c1d-5a6b7c8d9e0f",
            "-p",
            &secret,
            "--tenant",
            "contoso.onmicrosoft.com",
        ]),
        vec![],
        vec![secret.clone()],
    );
    let key = format!(
        "ABSK{}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "BedrockAPIKey-{}-at-{}:{}",
            r.chars(HEX, 4),
            r.chars("0123456789", 12),
            random(r, 40)
        ))
    );
    add(
        "bedrock-api-key",
        s(&["python3", "invoke.py"]),
        vec![format!("AWS_BEARER_TOKEN_BEDROCK={key}")],
        vec![key[4..].to_owned()],
    );
    let tok = format!("ntn_{}{}", r.chars("0123456789", 11), r.chars(BASE62, 35));
    add(
        "notion-token",
        s(&[
            "curl",
            "-H",
            &format!("Authorization: Bearer {tok}"),
            "https://api.notion.com/v1/users",
        ]),
        vec![],
        vec![tok[4..].to_owned()],
    );
    let key = format!("rk_prod_{}", random(r, 99));
    add(
        "stripe-key",
        s(&["stripe", "--api-key", &key, "customers", "list"]),
        vec![],
        vec![key[8..].to_owned()],
    );
    let tok = format!(
        "api_org_{}",
        r.chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 34)
    );
    add(
        "huggingface-token",
        s(&["huggingface-cli", "login", "--token", &tok]),
        vec![],
        vec![tok[8..].to_owned()],
    );
    let tok = github_token(r);
    add(
        "github-token",
        s(&["gh", "repo", "list"]),
        vec![format!("GH_TOKEN={tok}")],
        vec![tok[4..].to_owned()],
    );
    // Options of well-known tools.
    let pw = random(r, 16);
    add(
        "password",
        s(&["redis-cli", "-h", "cache.internal", "-a", &pw, "info"]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 16);
    add(
        "password",
        s(&[
            "docker",
            "login",
            "-u",
            "ci",
            "-p",
            &pw,
            "registry.example.com",
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&["zip", "-P", &pw, "-r", "backup.zip", "reports/"]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "7z",
            "a",
            &format!("-p{pw}"),
            "-mhe=on",
            "backup.7z",
            "reports/",
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "smbclient",
            "//files/share",
            "-U",
            &format!("alice%{pw}"),
            "-c",
            "ls",
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "sudo",
            "ldapsearch",
            "-x",
            "-D",
            "cn=admin,dc=example,dc=com",
            "-w",
            &pw,
            "-b",
            "dc=example,dc=com",
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "keytool",
            "-importcert",
            "-keystore",
            "app.jks",
            "-storepass",
            &pw,
            "-file",
            "ca.pem",
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "sh",
            "-c",
            &format!("xfreerdp /v:win01 /u:admin /p:{pw} /cert:ignore"),
        ]),
        vec![],
        vec![pw.clone()],
    );
    let pw = random(r, 14);
    add(
        "password",
        s(&[
            "sh",
            "-c",
            &format!("redis-cli -a '{pw}' --no-auth-warning ping"),
        ]),
        vec![],
        vec![pw.clone()],
    );
    // Assignment styles of other languages, in one-liners.
    let tok = random(r, 32);
    add(
        "secret",
        s(&[
            "php",
            "-r",
            &format!("$apiToken .= \"{tok}\"; echo strlen($apiToken);"),
        ]),
        vec![],
        vec![tok.clone()],
    );
    let tok = random(r, 32);
    add(
        "secret",
        s(&[
            "ruby",
            "-e",
            &format!("conf = {{ \"auth_token\" => \"{tok}\" }}; p conf"),
        ]),
        vec![],
        vec![tok.clone()],
    );
    let tok = random(r, 32);
    add(
        "secret",
        s(&[
            "sh",
            "-c",
            &format!("echo 'DEPLOY_TOKEN ?= {tok}' >> Makefile"),
        ]),
        vec![],
        vec![tok.clone()],
    );
    let tok = random(r, 32);
    add(
        "secret",
        s(&[
            "sh",
            "-c",
            &format!("echo 'apiKey := \"{tok}\"' >> main.go"),
        ]),
        vec![],
        vec![tok.clone()],
    );
    // Base36, as some vendors issue keys: digits all through.
    let tok = loop {
        let t = r.chars("abcdefghijklmnopqrstuvwxyz0123456789", 20);
        if t.bytes().filter(u8::is_ascii_digit).count() >= 4 {
            break t;
        }
    };
    add(
        "secret",
        s(&[
            "java",
            "-cp",
            "app.jar",
            "Main",
            &format!("System.setProperty(\"SERVICE_TOKEN\", \"{tok}\")"),
        ]),
        vec![],
        vec![tok.clone()],
    );
    let tok = random(r, 40);
    add(
        "authorization",
        s(&[
            "curl",
            "-H",
            &format!("Authorization: SSWS {tok}"),
            "https://acme.okta.com/api/v1/users",
        ]),
        vec![],
        vec![tok.clone()],
    );
    let pw = random(r, 12);
    add(
        "password",
        s(&["bundle", "install"]),
        vec![format!("BUNDLE_GEMS__EXAMPLE__COM=deploy:{pw}")],
        vec![pw.clone()],
    );
}

/// Ordinary lines next to the new detectors: placeholders, variable references,
/// hashes beside key names, tools' non-credential options, look-alike file names.
pub(super) fn ordinary(r: &mut Rng) -> Vec<String> {
    let hex = |r: &mut Rng, n| r.chars(HEX, n);
    match r.below(14) {
        0 => s(&[
            "redis-cli",
            "-h",
            "cache.internal",
            "-a",
            "$REDIS_PASSWORD",
            "ping",
        ]),
        1 => s(&["docker", "run", "-p", "8080:80", "-d", "nginx:1.27"]),
        2 => s(&["zip", "-r", "-q", "reports.zip", "reports/"]),
        3 => s(&["7z", "x", "-o/tmp/out", "archive.7z"]),
        4 => s(&[
            "curl",
            "-u",
            "${USER}:${PASS}",
            "https://ci.example.com/api/json",
        ]),
        5 => s(&["sh", "-c", &format!("export CACHE_KEY={}", hex(r, 64))]),
        6 => vec![
            "cp".into(),
            format!("static/app.ico-{}.png", hex(r, 32)),
            "dist/".into(),
        ],
        7 => s(&["sh", "-c", "ldapsearch -x -W -b dc=example,dc=com"]),
        8 => s(&["docker", "login", "-u", "ci", "--password-stdin", "ghcr.io"]),
        9 => vec![
            "make".into(),
            format!(
                "VERSION={}.{}.{}",
                r.range(0, 9),
                r.range(0, 30),
                r.range(0, 20)
            ),
            "TOKEN_TTL=3600".into(),
        ],
        10 => s(&[
            "curl",
            "-H",
            "Authorization: Bearer $API_TOKEN",
            "https://api.example.com",
        ]),
        11 => vec![
            "git".into(),
            "config".into(),
            "user.signingkey".into(),
            hex(r, 16).to_uppercase(),
        ],
        12 => s(&[
            "sh",
            "-c",
            "echo 'apiKey := os.Getenv(\"API_KEY\")' >> main.go",
        ]),
        _ => s(&[
            "keytool",
            "-list",
            "-keystore",
            "app.jks",
            "-storepass:env",
            "STOREPASS",
        ]),
    }
}
