use super::*;

/// Values a process can choose that would rewrite, reorder or hide text on a screen.
const HOSTILE: &[(&str, &str)] = &[
    ("a\x1b[2Jb", "a\\u{1b}[2Jb"),
    ("ok\rdenied", "ok\\rdenied"),
    ("line\nforged", "line\\nforged"),
    ("tab\there", "tab\\there"),
    ("bell\x07", "bell\\u{7}"),
    ("nul\0", "nul\\u{0}"),
    ("del\x7f", "del\\u{7f}"),
    ("csi\u{9b}2J", "csi\\u{9b}2J"),
    ("nel\u{85}", "nel\\u{85}"),
    ("/tmp/\u{202e}fdp.exe", "/tmp/\\u{202e}fdp.exe"),
    ("iso\u{2066}late\u{2069}", "iso\\u{2066}late\\u{2069}"),
    ("zero\u{200b}width", "zero\\u{200b}width"),
    ("bom\u{feff}", "bom\\u{feff}"),
    ("soft\u{ad}hyphen", "soft\\u{ad}hyphen"),
    ("tag\u{e0041}", "tag\\u{e0041}"),
    ("sep\u{2028}par\u{2029}", "sep\\u{2028}par\\u{2029}"),
    ("nb\u{a0}sp", "nb\\u{a0}sp"),
    ("fill\u{3164}er", "fill\\u{3164}er"),
    ("private\u{e000}", "private\\u{e000}"),
    ("\u{301}leading mark", "\\u{301}leading mark"),
];

#[test]
fn hostile_characters_are_escaped() {
    for (raw, shown) in HOSTILE {
        assert_eq!(escape(raw), *shown, "{raw:?}");
        assert_eq!(Escaped(raw).to_string(), *shown, "{raw:?}");
        assert!(raw.chars().any(needs_escape), "{raw:?}");
    }
}

#[test]
fn ordinary_text_is_left_as_it_is() {
    for text in [
        "/usr/bin/git",
        "git push --force origin main",
        "path with spaces/and\\backslashes",
        "café",
        "cafe\u{301}",
        "Grüße, 日本語, русский, עברית, العربية",
        "…[github-token:3f9a1c2b]",
        "",
    ] {
        assert!(matches!(escape(text), Cow::Borrowed(_)), "{text:?}");
        assert_eq!(Escaped(text).to_string(), text);
    }
}

#[test]
fn escaping_twice_changes_nothing() {
    for (raw, _) in HOSTILE {
        let once = escape(raw).into_owned();
        assert_eq!(escape(&once), once, "{raw:?}");
    }
}

#[test]
fn stacked_marks_are_escaped_after_two() {
    assert_eq!(escape("a\u{301}\u{302}"), "a\u{301}\u{302}");
    assert_eq!(escape("a\u{301}\u{302}\u{303}"), "a\u{301}\u{302}\\u{303}");
    // An escaped character shows as `\u{..}`: a mark after it would sit on the brace.
    assert_eq!(escape("\x1b\u{301}"), "\\u{1b}\\u{301}");
}

#[test]
fn quoted_shows_where_a_value_ends() {
    assert_eq!(Quoted("plain").to_string(), "\"plain\"");
    assert_eq!(Quoted("a\", \"b").to_string(), "\"a\\\", \\\"b\"");
    assert_eq!(Quoted("back\\slash").to_string(), "\"back\\\\slash\"");
    assert_eq!(
        Quoted("\x1b[2J\u{202e}").to_string(),
        "\"\\u{1b}[2J\\u{202e}\""
    );
}

#[test]
fn width_and_alignment_apply_to_the_escaped_form() {
    assert_eq!(format!("[{:<8}]", Escaped("a\rb")), "[a\\rb    ]");
    assert_eq!(format!("[{:>6}]", Quoted("x")), "[   \"x\"]");
}

#[test]
fn json_keeps_its_values_and_loses_what_rewrites_a_screen() {
    // As serde_json writes it: C0 escaped already, the rest raw inside strings.
    let json =
        "{\n  \"path\": \"/tmp/\u{202e}x\u{7f}\u{9b}\\u001b\",\n  \"emoji\": \"\u{1f600}\"\n}";
    let escaped = escape_json(json);
    assert_eq!(
        escaped,
        "{\n  \"path\": \"/tmp/\\u202ex\\u007f\\u009b\\u001b\",\n  \"emoji\": \"\u{1f600}\"\n}"
    );
    // Outside the BMP: a surrogate pair.
    assert_eq!(escape_json("\"\u{e0041}\""), "\"\\udb40\\udc41\"");
    assert!(matches!(escape_json("{\"a\": \"é\"}"), Cow::Borrowed(_)));
}

/// Unicode's format characters (general category Cf, Unicode 15): each changes how text
/// around it is shown, or is itself invisible.
const FORMAT: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

#[test]
fn every_format_and_control_character_is_escaped() {
    let format = FORMAT.iter().flat_map(|&(lo, hi)| lo..=hi);
    let control = ('\0'..='\u{1f}').chain('\u{7f}'..='\u{9f}');
    for c in format.chain(control) {
        let text = format!("a{c}b");
        let shown = escape(&text);
        assert!(!shown.contains(c), "U+{:04X} shown raw", c as u32);
        assert_eq!(shown, format!("a{}b", c.escape_default()));
    }
}
