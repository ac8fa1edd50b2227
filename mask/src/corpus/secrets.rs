//! Secrets in their published shapes, in the places they turn up.
use base64::Engine as _;

use super::{BASE32, BASE62, BASE64, BASE64URL, DIGITS, HEX, LOWER, Rng, Sample};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn b64url(data: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn luhn_complete(rng: &mut Rng, prefix: &str, len: usize) -> String {
    let mut n = prefix.to_owned();
    n.push_str(&rng.chars(DIGITS, len - prefix.len() - 1));
    for d in 0..10 {
        let cand = format!("{n}{d}");
        if crate::checks::luhn(&cand) {
            return cand;
        }
    }
    unreachable!("one check digit always fits")
}

fn iban(rng: &mut Rng) -> String {
    let (cc, bban) = match rng.below(4) {
        0 => ("DE", rng.chars(DIGITS, 18)),
        1 => (
            "GB",
            format!(
                "{}{}",
                rng.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                rng.chars(DIGITS, 14)
            ),
        ),
        2 => (
            "FR",
            format!("{}{}", rng.chars(DIGITS, 20), rng.chars(DIGITS, 3)),
        ),
        _ => (
            "NL",
            format!(
                "{}{}",
                rng.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                rng.chars(DIGITS, 10)
            ),
        ),
    };
    let mut rem: u64 = 0;
    for c in format!("{bban}{cc}00").chars() {
        let v = c.to_digit(36).expect("alphanumeric") as u64;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    format!("{cc}{:02}{bban}", 98 - rem)
}

fn spaced(v: &str, group: usize, sep: &str) -> String {
    v.as_bytes()
        .chunks(group)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn password(rng: &mut Rng) -> String {
    let n = rng.range(8, 20);
    // At least one letter and one digit, and characters URLs and shells allow bare.
    format!(
        "{}{}{}",
        rng.chars(LOWER, 1),
        rng.chars(DIGITS, 1),
        rng.chars(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789!*_~",
            n
        )
    )
}

fn pem(rng: &mut Rng, label: &str, newline: &str) -> (String, String) {
    let lines: Vec<String> = (0..rng.range(3, 8))
        .map(|_| rng.chars(BASE64, 64))
        .collect();
    let body = lines.join(newline);
    (
        format!("-----BEGIN {label}-----{newline}{body}{newline}-----END {label}-----{newline}"),
        lines[0].clone(),
    )
}

/// `per_kind` samples of each kind (about 40 kinds).
pub fn secret_samples(seed: u64, per_kind: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for _ in 0..per_kind {
        let r = &mut rng;
        let mut add = |kind, argv: Vec<String>, env: Vec<String>, secrets: Vec<String>| {
            out.push(Sample {
                kind,
                argv,
                env,
                secrets,
            });
        };
        // Cloud keys.
        let akid = format!("{}{}", r.pick(&["AKIA", "ASIA"]), r.chars(BASE32, 16));
        add(
            "aws-access-key",
            s(&["aws", "configure", "set", "aws_access_key_id", &akid]),
            vec![],
            vec![akid[4..].to_owned()],
        );
        let akid = format!("AKIA{}", r.chars(BASE32, 16));
        add(
            "aws-access-key",
            s(&["env"]),
            vec![format!("AWS_ACCESS_KEY_ID={akid}")],
            vec![akid[4..].to_owned()],
        );
        let secret = r.chars(BASE64, 40);
        add(
            "aws-secret-key",
            s(&["aws", "configure", "set", "aws_secret_access_key", &secret]),
            vec![],
            vec![secret.clone()],
        );
        let secret = r.chars(BASE64, 40);
        add(
            "aws-secret-key",
            s(&["terraform", "apply"]),
            vec![format!("AWS_SECRET_ACCESS_KEY={secret}")],
            vec![secret.clone()],
        );
        let (key, first) = pem(r, "PRIVATE KEY", "\\n");
        let kid = r.chars(HEX, 40);
        let json = format!(
            r#"{{"type": "service_account", "project_id": "proj-{}", "private_key_id": "{kid}", "private_key": "{key}", "client_email": "sa@proj.iam.gserviceaccount.com"}}"#,
            r.chars(DIGITS, 6)
        );
        add(
            "gcp-key",
            s(&["sh", "-c", &format!("echo '{json}' > /tmp/sa.json")]),
            vec![],
            vec![kid.clone(), first],
        );
        let acct = r.chars(BASE64, 86) + "==";
        let conn = format!(
            "DefaultEndpointsProtocol=https;AccountName=acct{};AccountKey={acct};EndpointSuffix=core.windows.net",
            r.chars(DIGITS, 3)
        );
        add(
            "azure-account-key",
            s(&[
                "az",
                "storage",
                "blob",
                "list",
                "--connection-string",
                &conn,
            ]),
            vec![],
            vec![acct],
        );
        let sig = format!("{}%2B{}%3D", r.chars(BASE62, 20), r.chars(BASE62, 20));
        let url = format!(
            "https://acct.blob.core.windows.net/backups/db.tar?sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2026-01-01T00:00:00Z&sig={sig}"
        );
        add(
            "azure-sas",
            s(&["curl", "-fsSL", "-o", "db.tar", &url]),
            vec![],
            vec![sig],
        );
        // Code hosts and chat.
        let tok = format!(
            "{}{}",
            r.pick(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
            r.chars(BASE62, 36)
        );
        add(
            "github-token",
            s(&[
                "git",
                "clone",
                &format!("https://x-access-token:{tok}@github.com/org/repo.git"),
            ]),
            vec![],
            vec![tok[4..].to_owned()],
        );
        let tok = format!("ghp_{}", r.chars(BASE62, 36));
        add(
            "github-token",
            s(&["gh", "auth", "login"]),
            vec![format!("GITHUB_TOKEN={tok}")],
            vec![tok[4..].to_owned()],
        );
        let tok = format!("github_pat_{}_{}", r.chars(BASE62, 22), r.chars(BASE62, 59));
        add(
            "github-token",
            s(&[
                "curl",
                "-H",
                &format!("Authorization: token {tok}"),
                "https://api.github.com/user",
            ]),
            vec![],
            vec![tok[11..].to_owned()],
        );
        let tok = format!("glpat-{}", r.chars(BASE64URL, 20));
        add(
            "gitlab-token",
            s(&[
                "curl",
                "--header",
                &format!("PRIVATE-TOKEN: {tok}"),
                "https://gitlab.example.com/api/v4/projects",
            ]),
            vec![],
            vec![tok[6..].to_owned()],
        );
        let tok = format!(
            "xoxb-{}-{}-{}",
            r.chars(DIGITS, 12),
            r.chars(DIGITS, 13),
            r.chars(BASE62, 24)
        );
        add(
            "slack-token",
            s(&["python3", "notify.py"]),
            vec![format!("SLACK_BOT_TOKEN={tok}")],
            vec![tok[5..].to_owned()],
        );
        let hook = format!(
            "T{}/B{}/{}",
            r.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8),
            r.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10),
            r.chars(BASE62, 24)
        );
        add(
            "slack-webhook",
            s(&[
                "curl",
                "-X",
                "POST",
                "-d",
                "{\"text\":\"deployed\"}",
                &format!("https://hooks.slack.com/services/{hook}"),
            ]),
            vec![],
            vec![hook],
        );
        // LLM providers.
        let key = format!("sk-{}", r.chars(BASE62, 48));
        add(
            "openai-key",
            s(&["llm", "keys", "set", "openai", "--value", &key]),
            vec![],
            vec![key[3..].to_owned()],
        );
        let key = format!("sk-proj-{}", r.chars(BASE64URL, 156));
        add(
            "openai-key",
            s(&["python", "agent.py"]),
            vec![format!("OPENAI_API_KEY={key}")],
            vec![key[8..].to_owned()],
        );
        let key = format!("sk-ant-api03-{}AA", r.chars(BASE64URL, 93));
        add(
            "anthropic-key",
            s(&[
                "curl",
                "https://api.anthropic.com/v1/messages",
                "-H",
                &format!("x-api-key: {key}"),
            ]),
            vec![],
            vec![key[7..].to_owned()],
        );
        let key = format!("AIza{}", r.chars(BASE64URL, 35));
        add(
            "google-api-key",
            s(&[
                "curl",
                &format!("https://generativelanguage.googleapis.com/v1beta/models?key={key}"),
            ]),
            vec![],
            vec![key[4..].to_owned()],
        );
        let key = format!("hf_{}", r.chars(BASE62, 34));
        add(
            "huggingface-token",
            s(&["huggingface-cli", "login", "--token", &key]),
            vec![],
            vec![key[3..].to_owned()],
        );
        let key = format!("sk_live_{}", r.chars(BASE62, 24));
        add(
            "stripe-key",
            s(&["stripe", "--api-key", &key, "charges", "list"]),
            vec![],
            vec![key[8..].to_owned()],
        );
        let key = format!("npm_{}", r.chars(BASE62, 36));
        add(
            "npm-token",
            s(&["npm", "publish"]),
            vec![format!("NPM_TOKEN={key}")],
            vec![key[4..].to_owned()],
        );
        // JWTs and headers.
        let header = b64url(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let payload = b64url(&format!(
            r#"{{"sub":"user-{}","iat":{},"scope":"read write"}}"#,
            r.chars(DIGITS, 6),
            r.range(1_600_000_000, 1_800_000_000)
        ));
        let jwt = format!("{header}.{payload}.{}", r.chars(BASE64URL, 43));
        add(
            "jwt",
            s(&[
                "curl",
                "-H",
                &format!("Authorization: Bearer {jwt}"),
                "https://api.example.com/v1/me",
            ]),
            vec![],
            vec![jwt[3..].to_owned()],
        );
        let payload = b64url(&format!(
            r#"{{"sub":"{}","exp":{}}}"#,
            r.chars(LOWER, 8),
            r.range(1_600_000_000, 1_800_000_000)
        ));
        let jwt = format!(
            "{}.{payload}.{}",
            b64url(r#"{"typ":"JWT","alg":"HS256"}"#),
            r.chars(BASE64URL, 43)
        );
        add(
            "jwt",
            s(&["./client", &format!("--session={jwt}")]),
            vec![],
            vec![jwt[3..].to_owned()],
        );
        let opaque = r.chars_n(BASE62, 24, 40);
        add(
            "bearer-token",
            s(&[
                "curl",
                "-sS",
                "-H",
                &format!("Authorization: Bearer {opaque}"),
                "https://internal.example.com/api",
            ]),
            vec![],
            vec![opaque],
        );
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", password(r)));
        add(
            "authorization",
            s(&[
                "wget",
                &format!("--header=Authorization: Basic {basic}"),
                "https://repo.example.com/file",
            ]),
            vec![],
            vec![basic],
        );
        // Passwords.
        let pw = password(r);
        add(
            "password",
            s(&["psql", &format!("postgres://app:{pw}@db.internal:5432/app")]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&[
                "git",
                "clone",
                &format!("https://deploy:{pw}@git.example.com/team/repo.git"),
            ]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&[
                "./manage.py",
                "createsuperuser",
                &format!("--password={pw}"),
            ]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&[
                "vault",
                "login",
                "-method=userpass",
                "username=ops",
                "--password",
                &pw,
            ]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&[
                "mysql",
                "-h",
                "db",
                "-u",
                "root",
                &format!("-p{pw}"),
                "shop",
            ]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&["pg_dump", "-h", "db", "-U", "app", "app"]),
            vec![format!("PGPASSWORD={pw}")],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&["sshpass", "-p", &pw, "ssh", "root@10.0.0.7"]),
            vec![],
            vec![pw],
        );
        let pw = password(r);
        add(
            "password",
            s(&[
                "curl",
                "-u",
                &format!("admin:{pw}"),
                "https://jenkins.example.com/api/json",
            ]),
            vec![],
            vec![pw],
        );
        let pw = format!("{} {}", password(r), password(r));
        add(
            "password",
            s(&["make", "deploy"]),
            vec![format!("DB_PASSWORD={pw}")],
            vec![pw],
        );
        let tok = r.chars(BASE62, 32);
        add(
            "secret",
            s(&["deployctl", "--token", &tok, "push"]),
            vec![],
            vec![tok],
        );
        let tok = r.chars_n(BASE62, 24, 48);
        add(
            "secret",
            s(&["node", "server.js"]),
            vec![format!("SESSION_SECRET={tok}")],
            vec![tok],
        );
        let tok = format!("{}-{}", r.chars(HEX, 16), r.chars(BASE62, 16));
        add(
            "secret",
            s(&["sh", "-c", &format!("API_KEY={tok} ./run.sh")]),
            vec![],
            vec![tok],
        );
        let (key, first) = pem(r, "RSA PRIVATE KEY", "\n");
        add(
            "private-key",
            s(&["ssh-add", "-"]),
            vec![format!("SSH_PRIVATE_KEY={key}")],
            vec![first],
        );
        let (key, first) = pem(r, "OPENSSH PRIVATE KEY", "\n");
        add(
            "private-key",
            s(&["printf", "%s", &key]),
            vec![],
            vec![first],
        );
        // Personal data.
        let local = format!("{}.{}", r.chars_n(LOWER, 3, 8), r.chars_n(LOWER, 4, 9));
        let domain = r.pick(&["example.com", "mail.example.org", "corp.example.net"]);
        add(
            "email",
            s(&[
                "git",
                "config",
                "--global",
                "user.email",
                &format!("{local}@{domain}"),
            ]),
            vec![],
            vec![format!("{local}@")],
        );
        let local = r.chars_n(LOWER, 5, 10);
        add(
            "email",
            s(&[
                "git",
                "commit",
                "--author",
                &format!("Jane Roe <{local}@example.com>"),
                "-m",
                "fix",
            ]),
            vec![],
            vec![format!("{local}@")],
        );
        let card = match r.below(3) {
            0 => luhn_complete(r, "4", 16),
            1 => {
                let p = format!("5{}", r.range(1, 5));
                luhn_complete(r, &p, 16)
            }
            _ => {
                let p = r.pick(&["34", "37"]);
                luhn_complete(r, p, 15)
            }
        };
        let shown = match (card.len(), r.below(3)) {
            (16, 0) => spaced(&card, 4, " "),
            (16, 1) => spaced(&card, 4, "-"),
            (15, 0) => format!("{} {} {}", &card[..4], &card[4..10], &card[10..]),
            _ => card.clone(),
        };
        let head = shown[..shown.len() - 4].to_owned();
        add(
            "card",
            s(&[
                "python3",
                "charge.py",
                "--amount",
                "12.50",
                "--card",
                &shown,
            ]),
            vec![],
            vec![head],
        );
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            r.range(1, 665),
            r.range(1, 99),
            r.range(1, 9999)
        );
        add("ssn", s(&["./lookup", "--ssn", &ssn]), vec![], vec![ssn]);
        let iban = iban(r);
        let shown = if r.chance(50) {
            spaced(&iban, 4, " ")
        } else {
            iban.clone()
        };
        add(
            "iban",
            s(&["echo", &format!("refund to {shown} today")]),
            vec![],
            vec![shown[2..].to_owned()],
        );
        let phone = match r.below(4) {
            0 => format!(
                "+1{}{}{}",
                r.range(2, 9),
                r.chars(DIGITS, 2),
                format_args!("{}{}", r.range(2, 9), r.chars(DIGITS, 6))
            ),
            1 => format!("+44 20 {} {}", r.chars(DIGITS, 4), r.chars(DIGITS, 4)),
            2 => format!(
                "({}{}) {}{}-{}",
                r.range(2, 9),
                r.chars(DIGITS, 2),
                r.range(2, 9),
                r.chars(DIGITS, 2),
                r.chars(DIGITS, 4)
            ),
            _ => format!(
                "{}{}-{}{}-{}",
                r.range(2, 9),
                r.chars(DIGITS, 2),
                r.range(2, 9),
                r.chars(DIGITS, 2),
                r.chars(DIGITS, 4)
            ),
        };
        add(
            "phone",
            s(&[
                "twilio",
                "api:core:messages:create",
                "--to",
                &phone,
                "--body",
                "hello",
            ]),
            vec![],
            vec![phone],
        );
        super::formats::samples(r, &mut out);
    }
    // N11 areas (411-555-...) are no phone numbers; regenerate the few that hit one.
    out.retain(|s| {
        s.kind != "phone" || crate::checks::nanp(&s.argv[3]) || s.argv[3].starts_with('+')
    });
    out
}
