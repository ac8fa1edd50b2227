use crate::{MaskConfig, Masker, corpus, corpus::Rng, groups::Groups, tokens::Hand};

/// Cases the backtracking decides: too many digits for a card, a card that ends early
/// at a separator, `)` given back for the `\b`, Unicode digits.
const FIXED: &[&str] = &[
    "41111111111111111111",
    "4111111111111111111",
    "4111 1111 1111 1111 1111",
    "4111-1111-1111-1111-1",
    "4111 1111 1111 1111 111",
    "4111 1111 1111 1111_",
    "4111111111111111é",
    "4111111111111111٣",
    "x4111111111111111 4111111111111111",
    "123-45-6789-0",
    "123-45-67890 123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000 DE89 3704 0044 0532 0130 00X",
    "GB82 WEST 1234 5698 7654 32 ab",
    "+1 (555) 123-4567",
    "+44 20 7946 0958)",
    "+4420794609(58)",
    "+4420794609(58)x",
    "+4420794609(5)8",
    "(+4420794609",
    "x+442079460958",
    "+442079460958+442079460958 +442079460958",
    "+1(2)(3)(4)(5)(6)(7)(8)(9)",
    "+1(2)(3)(4)(5)(6)(7)(8)(9)a",
    "+123456789012345678",
    "(212) 555-1234",
    "1-212-555-1234",
    "+1 212.555.1234 x",
    "tel:+1 (212)555-1234",
    "a212-555-1234 ,212 555 1234_",
    "212-555-1234-5",
    "４111111111111111 4111111111111111",
];

const CONTEXT: &[&str] = &[
    "", "", "", " ", " ", "a", "Z", "_", "7", "-", ".", "=", ":", ",", ";", "\"", "'", "(", ")",
    "+", "\t", "\n", "\r", "\x0B", "\x0C", "é", "٣", "x=", "tel:", "/",
];

/// Between digits: mostly nothing, else the separators the patterns allow and some
/// they do not.
const SEPS: &[&str] = &[
    "", "", "", "", "", " ", " ", "-", "-", ".", "  ", "--", " -", "(", ")", "_", "a",
];

fn digits(rng: &mut Rng, n: usize) -> String {
    rng.chars(corpus::DIGITS, n)
}

fn card(rng: &mut Rng) -> String {
    let mut t = rng.pick(&["1", "2", "3", "4", "5", "6", "7"]).to_string();
    let grouped = rng.chance(50);
    for i in 1..rng.range(10, 22) {
        if (grouped && i % 4 == 0) || (!grouped && rng.chance(10)) {
            t.push_str(rng.pick(SEPS));
        }
        t.push_str(&digits(rng, 1));
    }
    t
}

fn ssn(rng: &mut Rng) -> String {
    let mut t = String::new();
    for (i, n) in [3, 2, 4].into_iter().enumerate() {
        if i > 0 {
            t.push_str(rng.pick(&["-", "-", "-", " ", "--", ""]));
        }
        let n = if rng.chance(20) {
            rng.range(n - 1, n + 1)
        } else {
            n
        };
        t.push_str(&digits(rng, n));
    }
    t
}

fn iban(rng: &mut Rng) -> String {
    let country = if rng.chance(90) { "DEGBFR" } else { "Dd1_" };
    let mut t = rng.chars(country, 2);
    let check = if rng.chance(90) { 2 } else { 1 };
    t.push_str(&digits(rng, check));
    let grouped = rng.chance(60);
    for i in 0..rng.range(8, 36) {
        if (grouped && i % 4 == 0) || (!grouped && rng.chance(5)) {
            t.push_str(rng.pick(&[" ", " ", "  ", "-"]));
        }
        let alphabet = if rng.chance(3) {
            "ab_"
        } else {
            "ABWX0123456789"
        };
        t.push_str(&rng.chars(alphabet, 1));
    }
    t
}

fn e164(rng: &mut Rng) -> String {
    let mut t = format!("+{}", digits(rng, 1));
    for _ in 0..rng.range(5, 17) {
        if rng.chance(25) {
            t.push_str(rng.pick(&[" ", ".", "-", "  ", "_"]));
        }
        if rng.chance(15) {
            t.push('(');
        }
        t.push_str(&digits(rng, 1));
        if rng.chance(15) {
            t.push(')');
        }
    }
    t
}

fn nanp(rng: &mut Rng) -> String {
    let pick = |rng: &mut Rng, items: &[&str]| rng.pick(items).to_string();
    let mut t = pick(
        rng,
        &[
            "", "", "", "1 ", "+1 ", "1-", "+1.", "+1", "1", "+2 ", "11 ", "+",
        ],
    );
    t += &pick(
        rng,
        &[
            "(212) ", "(212) ", "(212)", "(212)", "212-", "212-", "212.", "212 ", "(112) ",
            "(212)  ", "212", "(21) ", "2123", "(212-",
        ],
    );
    t += &pick(
        rng,
        &[
            "555-", "555-", "555.", "555 ", "155-", "55-", "555", "555--",
        ],
    );
    let line = rng.range(3, 5);
    t += &digits(rng, line);
    t
}

/// Pieces of every pattern in random order.
fn pieces(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "0", "1", "2", "5", "9", "4111", "555", "212", "1234", "DE", "GB", "AB", "+", "+1", "+44",
        "(", ")", " ", " ", "-", "-", ".", "  ", "a", "Z", "_", "é", "٣", "\t", ":", "=", ",", ";",
        "\"", "'",
    ];
    (0..rng.range(1, 30)).map(|_| rng.pick(PIECES)).collect()
}

/// `t` with a character inserted, removed or replaced, or cut short.
fn mutate(rng: &mut Rng, t: String) -> String {
    let mut chars: Vec<char> = t.chars().collect();
    if chars.is_empty() {
        return t;
    }
    let at = rng.below(chars.len());
    let c = rng.pick(&["0", "7", " ", "-", ".", "(", ")", "a", "_", "é", "٣"]);
    let c = c.chars().next().expect("one character");
    match rng.below(4) {
        0 => chars.insert(at, c),
        1 => {
            chars.remove(at);
        }
        2 => chars[at] = c,
        _ => chars.truncate(at),
    }
    chars.into_iter().collect()
}

fn near_misses() -> Vec<String> {
    let mut rng = Rng::new(corpus::SEED);
    let makers: &[fn(&mut Rng) -> String] = &[card, ssn, iban, e164, nanp, pieces];
    let mut out: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    for _ in 0..10_000 {
        for make in makers {
            let mut t = String::new();
            for i in 0..rng.range(1, 3) {
                if i > 0 {
                    t.push_str(rng.pick(&[" ", "", ",", "x"]));
                }
                t.push_str(rng.pick(CONTEXT));
                t.push_str(&make(&mut rng));
                t.push_str(rng.pick(CONTEXT));
            }
            if rng.chance(30) {
                t = mutate(&mut rng, t);
            }
            out.push(t);
        }
    }
    out
}

/// Every matcher against its regex as the masker compiled it: the same matches, and
/// for the phone patterns the same secret as the regex's group `s` (`Shape::Lead`).
#[test]
fn pii_matchers_agree_with_regexes() {
    let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
    let texts: Vec<String> = corpus::texts().into_iter().chain(near_misses()).collect();
    let mut hands = Vec::new();
    for d in m.detectors() {
        let Some(Hand::Pii(pii)) = &d.hand else {
            continue;
        };
        hands.push(*pii);
        let (mut matched, mut handled, mut groups) = (0, 0, 0);
        for t in &texts {
            let want: Vec<_> = d.regex.find_iter(t).map(|m| m.range()).collect();
            if pii.handles(t) {
                let mut got = Vec::new();
                pii.find_iter(t, |r| got.push(r));
                assert_eq!(got, want, "{pii:?} on {t:?}");
                handled += 1;
                matched += want.len();
            }
            for c in d.regex.captures_iter(t) {
                let want = Groups::builtin(&c);
                let got = d.shape.groups(t, want.whole.clone()).expect("a shape");
                assert_eq!(got, want, "{pii:?} groups on {t:?}");
                groups += 1;
            }
        }
        assert!(
            matched > 500 && groups >= matched,
            "{pii:?}: only {matched} matches compared"
        );
        assert!(handled > 50_000, "{pii:?}: only {handled} texts handled");
        assert!(handled < texts.len(), "{pii:?}: Unicode digits never seen");
    }
    use super::Pii::*;
    assert_eq!(hands, [Iban, Ssn, Card, E164, Nanp]);
}

/// `handles` rests on this: below U+0600 only ASCII digits are `\d`.
#[test]
fn no_unicode_digit_below_u0600() {
    let d = regex::Regex::new(r"^\d$").unwrap();
    for c in ('\u{80}'..'\u{600}').map(String::from) {
        assert!(!d.is_match(&c), "{c:?}");
    }
    assert!(d.is_match("٠") && d.is_match("３"));
    assert!(!super::Pii::Card.handles("4111 ٣") && super::Pii::Card.handles("é 4111"));
}
