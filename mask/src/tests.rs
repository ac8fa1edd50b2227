//! One positive and near-miss negatives per detector, plus config validation.
use super::*;

const KEY: [u8; 32] = [7; 32];

/// Built once: regex compilation dominates a debug test run.
fn masker() -> &'static Masker {
    static M: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
    M.get_or_init(|| Masker::new(&MaskConfig::default(), KEY).unwrap())
}

#[track_caller]
fn found(text: &str, kind: &str, secret: &str) {
    let (out, f) = masker().mask_report(text);
    assert!(
        f.iter().any(|f| f.kind == kind),
        "{kind} not found in {text:?}: {f:?} -> {out}"
    );
    assert!(!out.contains(secret), "{secret:?} survived in {out:?}");
    assert_eq!(masker().mask(&out), out, "masking again changes nothing");
}

#[track_caller]
fn clean(text: &str) {
    let (out, f) = masker().mask_report(text);
    assert!(f.is_empty(), "false positive in {text:?}: {f:?} -> {out}");
}

#[test]
fn markers_keep_kind_prefix_and_keyed_hash() {
    let m = masker();
    let tok = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let out = m.mask(tok);
    assert_eq!(out, format!("ghp_…[github-token:{}]", m.hash(tok)));
    let other = Masker::new(&MaskConfig::default(), [8; 32]).unwrap();
    assert_ne!(other.mask(tok), out, "another key, another hash");
    assert_eq!(
        m.mask("https://bob:hunter2x@db.example.com/x"),
        format!(
            "https://bob:…[password:{}]@db.example.com/x",
            m.hash("hunter2x")
        )
    );
    assert_eq!(
        m.mask("mail jane.roe@example.com"),
        format!(
            "mail …[email:{}]@example.com",
            m.hash("jane.roe@example.com")
        )
    );
    assert_eq!(
        m.mask("card 4111 1111 1111 1111"),
        format!("card …[card:{}]1111", m.hash("4111 1111 1111 1111"))
    );
}

#[test]
fn unmasked_text_is_borrowed() {
    assert!(matches!(masker().mask("ls -la /tmp"), Cow::Borrowed(_)));
}

#[test]
fn aws() {
    found(
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "aws-access-key",
        "IOSFODNN7EXAMPLE",
    );
    found(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws-secret-key",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    clean("AKIAIOSFODNN7EXAMPL"); // 15 characters after the prefix
    clean("XAKIAIOSFODNN7EXAMPLE1"); // inside a longer word
    clean("sha 0123456789abcdef0123456789abcdef01234567"); // 40 chars without aws name
}

#[test]
fn gcp_and_pem() {
    found(
        r#"{"private_key_id": "0123456789abcdef0123456789abcdef01234567", "x": 1}"#,
        "gcp-key-id",
        "0123456789abcdef0123456789abcdef01234567",
    );
    let pem = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n";
    found(
        &format!(r#"{{"private_key": "{pem}"}}"#),
        "private-key",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    );
    found(
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIr2truncated",
        "private-key",
        "MHcCAQEEIIr2",
    );
    clean("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----");
    clean(
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    );
}

#[test]
fn azure() {
    found(
        "AccountName=a;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;",
        "azure-account-key",
        "Eby8vdM02xNOcqFlqUwJPLlm",
    );
    found(
        "https://a.blob.core.windows.net/c?sv=2022-11-02&sig=abcDEF123ghiJKL456mno%2B",
        "azure-sas",
        "abcDEF123ghiJKL456mno",
    );
    clean("https://a.blob.core.windows.net/c?sv=2022-11-02&sig=short");
    // A SAS in a connection string: the whole token, up to the next `;`.
    let conn = "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2021-06-08&ss=b&srt=sco&sp=rl&se=2026-01-01T00:00:00Z&spr=https&sig=abcDEF123ghiJKL456mno%2B;QueueEndpoint=x";
    found(conn, "azure-sas", "sv=2021-06-08&ss=b");
    let out = masker().mask(conn);
    assert!(out.ends_with(";QueueEndpoint=x"), "{out}");
}

/// The rewrite of `\s` in `detectors::builtins` leaves no `(?-u:\s)` inside a class,
/// where it would be a character range.
#[test]
fn builtin_patterns_rewrite_whitespace_whole() {
    for b in detectors::builtins() {
        let mut class = false;
        let mut escaped = false;
        for (i, c) in b.pattern.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '[' => class = true,
                ']' => class = false,
                '(' if class && b.pattern[i..].starts_with("(?-u:") => {
                    panic!("{}: a group inside a class at {i}: {}", b.kind, b.pattern)
                }
                _ => {}
            }
        }
    }
}

#[test]
fn code_hosts_and_chat() {
    found(
        "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "github-token",
        "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    );
    found(
        "github_pat_11ABCDEFG0123456789abc_defghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
        "github-token",
        "11ABCDEFG0123456789abc",
    );
    clean("ghp_tooShort123");
    found(
        "glpat-xY9_zAbCdEfGhIjKlMnOp",
        "gitlab-token",
        "xY9_zAbCdEfGhIjKlMnOp",
    );
    clean("glpat-short");
    found(
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "slack-token",
        "AbCdEfGhIjKlMnOpQrStUvWx",
    );
    found(
        "https://hooks.slack.com/services/T0ABCDEFG/B0ABCDEFGH/abcdefghijklmnopqrstuvwx",
        "slack-webhook",
        "abcdefghijklmnopqrstuvwx",
    );
    clean("https://hooks.slack.com/services/");
}

#[test]
fn llm_keys() {
    found(
        "sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
        "openai-key",
        "AbCdEfGhIjKlMnOpQrStUvWx",
    );
    found(
        "sk-proj-Ab_Cd-EfGhIjKlMnOpQrStUvWxYz0123456789",
        "openai-key",
        "EfGhIjKlMnOpQrStUvWxYz",
    );
    // Anthropic's published shape: `sk-ant-api03-`, 93 base64url characters, `AA`.
    let key = format!(
        "sk-ant-api03-{}AA",
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-".repeat(3)[..93].to_owned()
    );
    found(&key, "anthropic-key", "AbCdEfGhIjKlMnOpQrStUvWx");
    // Too short, or not ending in `AA`: an example, not a key.
    clean("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789");
    clean(&key.replace("AA", "BB"));
    clean("pip install sk-learn-extra-extensions-toolkit"); // no digits, no capitals
    found(
        "key=AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "google-api-key",
        "SyA1234567890abcdefghijklmnopqrstu",
    );
    clean("AIzaShort");
    found(
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
        "huggingface-token",
        "AbCdEfGhIjKlMnOpQrStUvWxYz",
    );
    clean("hf_hub_download");
}

#[test]
fn jwts() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    found(jwt, "jwt", "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U");
    // base64url JSON without "alg": not a JWT.
    clean("eyJmb28iOiJiYXIiLCJuIjoxfQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N");
}

#[test]
fn headers() {
    found(
        "curl -H 'Authorization: Bearer abc123DEF456ghi789'",
        "bearer-token",
        "abc123DEF456ghi789",
    );
    found(
        "--oauth2-bearer abc123DEF456ghi789",
        "bearer-token",
        "abc123DEF456ghi789",
    );
    found(
        "token_type=bearer Bearer abc123DEF456ghi789",
        "bearer-token",
        "abc123DEF456ghi789",
    );
    found(
        "Authorization: Basic YWRtaW46c2VjcmV0cGFzcw==",
        "authorization",
        "YWRtaW46c2VjcmV0cGFzcw==",
    );
    found(
        "x-api-key: 8f2b1c9d7e6a5f4b3c2d",
        "api-key-header",
        "8f2b1c9d7e6a5f4b3c2d",
    );
    clean("Accept: application/json");
    clean("the bearer authentication scheme");
}

#[test]
fn passwords() {
    found("postgres://app:s3cr3t!@db:5432/app", "password", "s3cr3t!");
    clean("https://example.com:8443/path"); // a port, no userinfo
    clean("ssh://git@github.com/org/repo");
    found(
        "./tool --password=hunter22 --verbose",
        "password",
        "hunter22",
    );
    found(
        "./tool --db-password \"two words\"",
        "password",
        "two words",
    );
    found("mysql -u root -pS3cret db", "password", "S3cret");
    clean("psql -h db -p 5432 -U app");
    clean("./tool --password-file /run/secrets/db");
    clean("./tool --password=$DB_PASSWORD");
    found("PGPASSWORD=hunter22 psql", "password", "hunter22");
    clean("PWD=/home/alice");
    clean("bypass=1");
    found("curl -u admin:Sw0rdfish https://x", "password", "Sw0rdfish");
    clean("docker run -u 1000:1000 img");
    found(
        "./deploy --token Zx9Qw2Lm8Rt5Yp3K",
        "secret",
        "Zx9Qw2Lm8Rt5Yp3K",
    );
    clean("./deploy --token-file /etc/token");
    found(
        "export SERVICE_TOKEN=Zx9Qw2Lm8Rt5Yp3Kq7",
        "secret",
        "Zx9Qw2Lm8Rt5Yp3Kq7",
    );
    clean("CACHE_KEY=linux-cargo-abc123def456");
    clean("SORT_KEY=name");
}

#[test]
fn personal_data() {
    found("contact jane.roe@example.com now", "email", "jane.roe@");
    clean("git clone git@github.com:org/repo.git");
    clean("npm i typescript@5.4.2");
    found("pay 4111-1111-1111-1111", "card", "4111-1111-1111");
    clean("id 4111111111111112"); // Luhn fails
    clean("ts 1714550400000"); // a timestamp
    found("ssn 123-45-6789", "ssn", "123-45-6789");
    clean("ssn 666-45-6789");
    clean("date 2024-05-01");
    found("iban GB82 WEST 1234 5698 7654 32", "iban", "WEST 1234 5698");
    found(
        "iban DE89370400440532013000",
        "iban",
        "89370400440532013000",
    );
    clean("iban DE89370400440532013001"); // mod-97 fails
    found("call +14155552671", "phone", "+14155552671");
    found("call (415) 555-2671", "phone", "(415) 555-2671");
    found("call 415-555-2671", "phone", "415-555-2671");
    clean("-p 8080:80 --since 2024-05-01 v1.2.3 pid 48213 10.0.3.17:5432");
    clean("tail -n +200 app.log");
    clean("call 115-555-2671");
}

#[test]
fn argv_context_crosses_elements() {
    let m = masker();
    let argv: Vec<String> = [
        "tool",
        "--password",
        "hunter22",
        "--token",
        "Zx9Qw2Lm8Rt5Yp3K",
        "--token",
        "/etc/tok",
    ]
    .map(String::from)
    .to_vec();
    let (out, f) = m.mask_argv_report(&argv);
    assert!(
        !out.join(" ").contains("hunter22") && !out.join(" ").contains("Zx9Qw2Lm8Rt5Yp3K"),
        "{out:?}"
    );
    assert_eq!(out[6], "/etc/tok", "a path given for a token is kept");
    assert_eq!(
        f.iter().map(|f| f.field).collect::<Vec<_>>(),
        [Some(2), Some(4)]
    );
    let ssh: Vec<String> = ["ssh", "deploy@web1.example.com"]
        .map(String::from)
        .to_vec();
    assert_eq!(m.mask_argv(&ssh), ssh, "a login is not an email");
    let mail: Vec<String> = ["mail", "deploy@web1.example.com"]
        .map(String::from)
        .to_vec();
    assert_ne!(m.mask_argv(&mail), mail);
    assert_eq!(
        m.mask_argv(&m.mask_argv(&argv)),
        m.mask_argv(&argv),
        "idempotent"
    );
}

#[test]
fn env_masks_whole_values_of_secret_names() {
    let m = masker();
    let env: Vec<String> = [
        "DB_PASSWORD=two words",
        "HOME=/root",
        "API_TOKEN=Zx9Qw2Lm8Rt5Yp3Kq7",
        "GPG_KEY=A035C8C19219BA821ECEA86B64E628F8D684696D",
    ]
    .map(String::from)
    .to_vec();
    let (out, f) = m.mask_env_report(&env);
    assert!(out[0].starts_with("DB_PASSWORD=…[password:"), "{out:?}");
    assert_eq!(out[1], "HOME=/root");
    assert!(out[2].starts_with("API_TOKEN=…[secret:"), "{out:?}");
    assert_eq!(out[3], env[3], "a fingerprint is no secret");
    assert_eq!(f.len(), 2);
    assert_eq!(m.mask_env(&out), out, "idempotent");
}

#[test]
fn custom_patterns_and_allow_list() {
    let config = MaskConfig {
        patterns: vec![PatternConfig {
            name: "employee-id".into(),
            regex: r"\bEMP-(?P<s>\d{6})\b".into(),
        }],
        allow: vec![r"^ci@example\.com$".into(), "^AKIAIOSFODNN7EXAMPLE$".into()],
    };
    let m = Masker::new(&config, KEY).unwrap();
    let out = m.mask("user EMP-123456 ci@example.com bob@example.com AKIAIOSFODNN7EXAMPLE");
    assert!(out.contains("EMP-…[employee-id:"), "{out}");
    assert!(!out.contains("123456"));
    assert!(out.contains("ci@example.com"), "allow-listed: {out}");
    assert!(!out.contains("bob@"), "{out}");
    assert!(out.contains("AKIAIOSFODNN7EXAMPLE"), "allow-listed: {out}");
}

#[test]
fn config_errors_are_precise() {
    let pat = |name: &str, regex: &str| MaskConfig {
        patterns: vec![PatternConfig {
            name: name.into(),
            regex: regex.into(),
        }],
        allow: vec![],
    };
    let err = |c: &MaskConfig| Masker::new(c, KEY).expect_err("refused");
    assert_eq!(
        err(&pat("Bad Name", "x")),
        MaskError::BadName {
            name: "Bad Name".into()
        }
    );
    assert!(matches!(err(&pat("a", "(")), MaskError::BadPattern { name, .. } if name == "a"));
    assert_eq!(
        err(&pat("a", "x*")),
        MaskError::MatchesEmpty { name: "a".into() }
    );
    let mut two = pat("a", "x");
    two.patterns.push(two.patterns[0].clone());
    assert_eq!(err(&two), MaskError::DuplicateName { name: "a".into() });
    let allow = MaskConfig {
        patterns: vec![],
        allow: vec!["ok".into(), "[".into()],
    };
    assert!(matches!(err(&allow), MaskError::BadAllow { index: 1, .. }));
    let many = MaskConfig {
        patterns: (0..65)
            .map(|i| PatternConfig {
                name: format!("p{i}"),
                regex: "x".into(),
            })
            .collect(),
        allow: vec![],
    };
    assert!(matches!(
        err(&many),
        MaskError::TooMany {
            max: 64,
            got: 65,
            ..
        }
    ));
    assert!(
        err(&pat("a", "("))
            .to_string()
            .contains("mask pattern \"a\": invalid regex")
    );
}

#[test]
fn non_ascii_text_is_handled() {
    let out = masker().mask("pässwörd=ü PGPASSWORD=grüße… token");
    assert!(!out.contains("grüße"), "{out}");
}

/// The reference for `scan_digits` and `digit_summary`: the rules written out plainly.
fn scan_reference(text: &[u8]) -> (usize, usize, bool, bool) {
    let (mut best, mut cur, mut sep) = (0, 0, false);
    for &b in text {
        if b.is_ascii_digit() {
            cur += 1;
            sep = false;
            best = best.max(cur);
        } else if !sep && matches!(b, b' ' | b'-' | b'.' | b'(' | b')') {
            sep = true;
        } else if matches!(b, b'(' | b')' | b' ') && sep {
        } else {
            cur = 0;
            sep = false;
        }
    }
    let row = text
        .windows(8)
        .any(|w| w.iter().all(|b| b.is_ascii_digit() || b" -.()".contains(b)));
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let iban = (0..text.len().saturating_sub(3)).any(|i| {
        (i == 0 || !word(text[i - 1]))
            && text[i].is_ascii_uppercase()
            && text[i + 1].is_ascii_uppercase()
            && text[i + 2].is_ascii_digit()
            && text[i + 3].is_ascii_digit()
    });
    let digits = text.iter().filter(|b| b.is_ascii_digit()).count();
    (digits, best, row, iban)
}

#[test]
fn digit_scan_matches_its_reference() {
    let mut texts: Vec<String> = [
        "(415) 555-2671",
        "4111 1111 1111 1111",
        "1-.2",
        "12..34",
        "12 ( 34",
        "DE89 3704 0044 0532 0130 00",
        "ab12CD34",
        "_AB12 AB12",
        "x9Y8z7W6v5U4t3S2",
        "abcdefghijklmno12345678",
        "abcdefghijklmn12345678",
        "abcdefghijklmnop12345678",
        "abcdefghijklmnAB12",
        "abcdefghijklmn_AB12",
        "abcdefghijklmno-AB12",
        "abcdefghijklmnop+AB12",
        "abcdefghijklmnopAB12",
        "abcdefghijklmno+AB1",
        "",
    ]
    .map(String::from)
    .to_vec();
    for s in crate::corpus::secret_samples(crate::corpus::SEED, 5) {
        texts.extend(s.argv);
        texts.extend(s.env);
    }
    let mut rng = crate::corpus::Rng::new(9);
    for _ in 0..4000 {
        let n = rng.range(0, 40);
        texts.push(rng.chars("0123456789 -.()AZaz_+", n));
    }
    let m = masker();
    let iban = m
        .detectors()
        .iter()
        .find(|d| d.kind == "iban")
        .expect("iban detector");
    for t in &texts {
        let (digits, best, row, head) = scan_reference(t.as_bytes());
        let s = crate::prefilter::scan_digits(t.as_bytes(), digits);
        assert_eq!((s.digits, s.digit_run), (digits, best), "{t:?}");
        let want = crate::prefilter::Summary {
            digits,
            row,
            iban_head: head,
        };
        assert_eq!(crate::prefilter::summary(t.as_bytes()), want, "{t:?}");
        assert_eq!(
            crate::prefilter::summary_scalar(t.as_bytes()),
            want,
            "{t:?}"
        );
        assert!(row || best < 8, "a run of 8 needs a row of 8: {t:?}");
        assert!(
            head || !iban.regex.is_match(t),
            "every IBAN candidate starts with a head: {t:?}"
        );
    }
}

#[test]
fn triggered_detectors_are_those_whose_literals_occur() {
    let m = masker();
    let builtins = detectors::builtins();
    let mut texts: Vec<String> = vec![
        "PASSWORD= x".into(),
        "sk-ant-api03-x".into(),
        "ghp_GHO_gho_".into(),
        "xapp-1-hooks.slack.com".into(),
        String::new(),
    ];
    for s in crate::corpus::secret_samples(crate::corpus::SEED, 5) {
        texts.push(s.argv.join(" "));
        texts.extend(s.env);
    }
    for l in crate::corpus::ordinary_argv(crate::corpus::SEED, 300) {
        texts.push(l.join(" "));
    }
    // Long texts are walked in parts (`prefilter::LANES`): a trigger at every offset
    // around where the parts meet, in texts of lengths around the smallest split one.
    for len in [63, 64, 65, 66, 67, 100, 131] {
        for lit in ["ghp_", "aws", "@", "-----BEGIN", "xox", "sig="] {
            for at in 0..=len - lit.len() {
                let mut t = "z".repeat(len);
                t.replace_range(at..at + lit.len(), lit);
                texts.push(t);
            }
        }
    }
    for t in &texts {
        let lower = t.to_ascii_lowercase();
        let mut want = 0u128;
        for (i, b) in builtins.iter().enumerate() {
            if b.triggers
                .iter()
                .any(|l| lower.contains(&l.to_ascii_lowercase()))
            {
                want |= 1 << i;
            }
        }
        assert_eq!(m.triggers.triggered(t.as_bytes()), want, "{t:?}");
    }
}

#[test]
fn trigger_table_stays_small() {
    // See `prefilter::PREFIX`: the walk is a dependent load per byte.
    // About 64 KB for the name and header triggers, as much again for the vendor
    // prefixes (`vendors`); the whole table stays well inside L2.
    let bytes = masker().triggers.table_bytes();
    assert!(bytes <= 192 * 1024, "trigger table {bytes} bytes");
}

/// The name checks compare in place; they decide as lowercasing a copy did.
#[test]
fn name_checks_match_their_lowercasing_definitions() {
    fn password_ref(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        if n == "pwd" || n == "oldpwd" {
            return false;
        }
        n.contains("password")
            || n.contains("passwd")
            || n.contains("passphrase")
            || ["pass", "pwd"].iter().any(|w| {
                n == *w
                    || n.strip_suffix(w)
                        .is_some_and(|h| h.ends_with(['_', '-', '.']))
            })
    }
    fn public_ref(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        n.contains("gpg") || n.contains("public") || n.contains("pub_key") || n.contains("pubkey")
    }
    const PARTS: &[&str] = &[
        "PASS", "pass", "Pwd", "old", "OLDPWD", "word", "wd", "_", "-", ".", "PassWord", "passwd",
        "PHRASE", "pass", "gpg", "GPG", "Public", "pub", "_key", "KEY", "é", "x",
    ];
    let mut rng = crate::corpus::Rng::new(crate::corpus::SEED);
    let (mut yes_pw, mut yes_pub) = (0, 0);
    for _ in 0..20_000 {
        let n = rng.range(1, 4);
        let name: String = (0..n).map(|_| rng.pick(PARTS)).collect();
        let pw = detectors::password_name(&name);
        let public = detectors::public_name(&name);
        assert_eq!(pw, password_ref(&name), "password_name({name:?})");
        assert_eq!(public, public_ref(&name), "public_name({name:?})");
        yes_pw += usize::from(pw);
        yes_pub += usize::from(public);
    }
    assert!(yes_pw > 1000 && yes_pub > 1000, "{yes_pw} {yes_pub}");
}

/// A PEM block in an environment variable spans lines: all of its body is masked, with
/// Unix or Windows line ends, and whatever the key's label.
#[test]
fn multi_line_pem_values_are_masked_whole() {
    let m = masker();
    let body: Vec<String> = (0..6)
        .map(|i| format!("MIIEv{i}QIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7{i}x9Z"))
        .collect();
    for label in [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK",
    ] {
        for nl in ["\n", "\r\n"] {
            let pem = format!(
                "-----BEGIN {label}-----{nl}{}{nl}-----END {label}-----{nl}",
                body.join(nl)
            );
            let env = m.mask_env(&[format!("DEPLOY_KEY={pem}")]);
            for line in &body {
                assert!(!env[0].contains(line.as_str()), "{label}: {}", env[0]);
            }
            let line = format!("printf '%s' '{pem}' | ssh-add -");
            let text = m.mask(&line);
            assert!(!text.contains(&body[3]), "{label}: {text}");
        }
    }
}
