use super::Kind;
use crate::{MaskConfig, Masker, corpus, groups::Groups, tokens::Hand};

/// Pieces near-misses are made of: each matcher's anchors, its classes' edges, counts
/// one short, exact and one over, neighbours that are and are not word bytes.
fn pieces(l: Kind, rng: &mut corpus::Rng) -> Vec<String> {
    let fixed: &[&str] = match l {
        Kind::Email => &[
            "@",
            "@@",
            ".",
            "..",
            "-",
            "_",
            "%",
            "+",
            "a",
            "Z9",
            "john.doe",
            "x_y",
            "a-b",
            "example",
            "com",
            "c",
            "co",
            "com-x",
            "c0m",
            "x1",
            ".org",
            ".io",
            "git@github.com:",
            "//",
            ":",
            "a@b",
            "-.",
        ],
        Kind::PrivateKey => &[
            "-----BEGIN ",
            "-----BEGIN",
            "RSA ",
            "EC ",
            "A1 ",
            "rsa ",
            "PRIVATE ",
            "KEY",
            "PRIVATE KEY",
            " BLOCK",
            "BLOCK",
            "-----",
            "----",
            "-",
            "ENCRYPTED ",
            "\n",
        ],
        Kind::GcpKeyId => &[
            "\"private_key_id\"",
            "\"private_key_id",
            "private_key_id\"",
            ":",
            "\"",
            " ",
            "\t",
            "\n",
            "A",
            "g",
            "0",
        ],
        Kind::SlackWebhook => &[
            "hooks.slack.com/",
            "hooks.slack.com",
            "hooks.slack.com/services",
            "services",
            "workflows",
            "triggers",
            "service",
            "/",
            "_",
            "-",
            "T0/B1/",
            ".",
            "?",
        ],
        Kind::AzureAccountKey => &[
            "AccountKey",
            "accountkey",
            "ACCOUNTKEY",
            "SharedAccessKey",
            "sharedaccesskey",
            "ſharedAcceſſKey",
            "Account\u{212a}ey",
            "SharedAcceſs\u{212a}ey",
            "Account",
            "ccountKey",
            "=",
            "==",
            "+",
            "/",
            ";",
            "x",
            "Key",
        ],
        Kind::AzureSig => &[
            "?", "&", "sig=", "?sig=", "&sig=", "sig", "=", "%2B", "%3D", "/", "+", ";", "#", "x",
            "?&",
        ],
        Kind::UrlPassword => &[
            "://", ":", "@", "https", "HTTPS", "h", "x", "a1", "1a", "git+ssh", "s3.x-y", "user",
            "pass", "p:w", "/", "?", "#", "+", ".", "-", "_", "ſ", "\u{212a}",
        ],
    };
    let mut out: Vec<String> = fixed.iter().map(|s| (*s).to_owned()).collect();
    out.extend(
        [" ", "é", "…", "\t", ";", ",", "'", "\""]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    // Class runs around each count that matters.
    let (alphabet, counts): (&str, &[usize]) = match l {
        Kind::Email => (corpus::LOWER, &[1, 2, 3, 23, 24, 25]),
        Kind::PrivateKey => ("ABCXYZ019", &[1, 3]),
        Kind::GcpKeyId => (corpus::HEX, &[39, 40, 41]),
        Kind::SlackWebhook => ("Ab9/_-", &[9, 10, 11, 30]),
        Kind::AzureAccountKey => (corpus::BASE64, &[19, 20, 21, 88]),
        Kind::AzureSig => ("Ab9%+/=", &[15, 16, 17, 40]),
        Kind::UrlPassword => ("abz09+.-", &[1, 2, 14, 15, 16, 17]),
    };
    for &n in counts {
        for _ in 0..3 {
            out.push(rng.chars(alphabet, n));
        }
    }
    out
}

/// A text the pattern matches, built at random.
fn example(l: Kind, rng: &mut corpus::Rng) -> String {
    let sp = |rng: &mut corpus::Rng| {
        let n = rng.below(3);
        rng.chars(" \t", n)
    };
    match l {
        Kind::Email => {
            let mut t = rng.chars_n("abcXYZ019._%+-", 1, 12) + "@" + &rng.chars_n("ab9-", 1, 8);
            for _ in 0..rng.below(4) {
                t.push('.');
                t.push_str(&rng.chars_n("abcz09-", 1, 6));
            }
            t + "." + &rng.chars_n("comCOMx", 1, 26)
        }
        Kind::PrivateKey => {
            let mut t = "-----BEGIN ".to_owned();
            for _ in 0..rng.below(4) {
                t.push_str(rng.pick(&["RSA ", "EC ", "OPENSSH ", "PRIVATE ", "KEY "]));
            }
            t.push_str(rng.pick(&["PRIVATE KEY", "PRIVATE KEY BLOCK", "PRIVATE KEY BLOCK "]));
            t + "-----" + &rng.chars_n(corpus::BASE64, 0, 12)
        }
        Kind::GcpKeyId => {
            let (a, b) = (sp(rng), sp(rng));
            format!(
                "\"private_key_id\"{a}:{b}\"{}\"",
                rng.chars(corpus::HEX, 40)
            )
        }
        Kind::SlackWebhook => format!(
            "https://hooks.slack.com/{}/{}",
            rng.pick(&["services", "workflows", "triggers"]),
            rng.chars_n("Ab9/_-", 8, 40)
        ),
        Kind::AzureAccountKey => format!(
            "{}={}",
            rng.pick(&[
                "AccountKey",
                "accountKEY",
                "SharedAccessKey",
                "ſharedAcceſs\u{212a}ey"
            ]),
            rng.chars_n(corpus::BASE64, 18, 90)
        ),
        Kind::AzureSig => format!(
            "{}sig={}",
            rng.pick(&["?", "&", "x"]),
            rng.chars_n("Ab9%+/=", 14, 40)
        ),
        Kind::UrlPassword => format!(
            "{}://{}:{}@{}",
            rng.chars_n("abHTz09+.-", 1, 18),
            rng.chars_n("ab0.-%", 0, 6),
            rng.chars_n("ab0:!%$", 0, 8),
            rng.chars_n("ab0./:", 0, 8)
        ),
    }
}

fn near_misses(l: Kind, rng: &mut corpus::Rng) -> Vec<String> {
    let pieces = pieces(l, rng);
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for _ in 0..8000 {
        let mut t = String::new();
        for _ in 0..rng.range(1, 6) {
            if rng.chance(40) {
                t.push_str(&example(l, rng));
            } else {
                t.push_str(rng.pick(&pieces));
            }
        }
        // A piece put in, or a stretch taken out, at character boundaries.
        for _ in 0..rng.below(3) {
            let mut at = rng.below(t.len() + 1);
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            if rng.chance(50) {
                t.insert_str(at, rng.pick(&pieces));
            } else {
                let mut end = (at + rng.range(1, 4)).min(t.len());
                while !t.is_char_boundary(end) {
                    end += 1;
                }
                t.replace_range(at..end, "");
            }
        }
        if rng.chance(20) {
            // Cut short.
            let mut cut = rng.below(t.len() + 1);
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
        }
        out.push(t);
    }
    out
}

/// Every literal matcher against its regex: the same matches, and for patterns with
/// groups the shape's groups are the captures'.
#[test]
fn literal_matchers_agree_with_regexes() {
    let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
    let texts = corpus::texts();
    let mut rng = corpus::Rng::new(corpus::SEED);
    let mut seen = Vec::new();
    for d in m.detectors() {
        let Some(Hand::Literal(hand)) = &d.hand else {
            continue;
        };
        let l = hand.kind;
        seen.push(l);
        let (mut matched, mut skipped, mut compared) = (0, 0, 0);
        for t in texts.iter().chain(&near_misses(l, &mut rng)) {
            if !hand.handles(t) {
                skipped += 1;
                continue;
            }
            compared += 1;
            let want: Vec<_> = d.regex.find_iter(t).map(|m| m.range()).collect();
            let mut got = Vec::new();
            hand.find_iter(t, |r| got.push(r));
            assert_eq!(got, want, "{} on {t:?}", d.kind);
            matched += want.len();
            if d.regex.captures_len() > 1 {
                for c in d.regex.captures_iter(t) {
                    let want = Groups::builtin(&c);
                    let got = d.shape.groups(t, want.whole.clone());
                    assert_eq!(got, Some(want), "{} groups on {t:?}", d.kind);
                }
            }
        }
        eprintln!("{l:?}: {compared} texts, {matched} matches, {skipped} left to the regex");
        assert!(matched > 300, "{l:?}: only {matched} matches compared");
        assert!(
            skipped < compared / 10,
            "{l:?}: {skipped} texts left to the regex"
        );
    }
    assert_eq!(
        seen,
        [
            Kind::PrivateKey,
            Kind::GcpKeyId,
            Kind::SlackWebhook,
            Kind::AzureAccountKey,
            Kind::AzureSig,
            Kind::UrlPassword,
            Kind::Email,
        ],
        "every literal matcher is in use"
    );
}
