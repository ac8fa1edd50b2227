use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source, line_column, read};

#[test]
fn line_column_is_one_based_and_counts_from_the_line_start() {
    let text = "a = 1\nbb = 2\n";
    assert_eq!(line_column(text, 0), (1, 1));
    // `bb` starts right after the first newline: line 2, column 1, not column 0 or 2.
    assert_eq!(line_column(text, 6), (2, 1));
    // The `2`: five characters into line 2, so column 6.
    assert_eq!(line_column(text, 11), (2, 6));
}

#[test]
fn line_column_counts_characters_not_bytes() {
    // "é" is two bytes; the `x` after it is the third character of line 2.
    let text = "k = 1\né = x\n";
    let x = text.find('x').unwrap();
    assert_eq!(line_column(text, x), (2, 5));
}

#[test]
fn line_column_past_the_end_is_the_end() {
    assert_eq!(line_column("a\nbc", 99), (2, 3));
}

#[test]
fn read_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = read(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", path.display())),
        "{shown}"
    );
}

#[test]
fn read_returns_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(&path, "a = 1\n").unwrap();
    assert_eq!(read(&path).unwrap(), "a = 1\n");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
}

#[test]
fn parse_errors_point_at_the_offending_key() {
    let text = "name = \"a\"\n  colour = 1\n";
    let err = Source::new(Path::new("x.toml"), text)
        .parse::<Raw>()
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("x.toml:2:3: unknown field `colour`"),
        "{shown}"
    );
}

#[test]
fn at_locates_a_spanned_value_and_whole_names_only_the_file() {
    let text = "\nname = \"\"\n";
    let source = Source::new(Path::new("x.toml"), text);
    let raw: Raw = source.parse().unwrap();
    assert_eq!(
        source.at(raw.name.span(), "must not be empty").to_string(),
        "x.toml:2:8: must not be empty"
    );
    assert_eq!(
        source.whole("nothing configured").to_string(),
        "x.toml: nothing configured"
    );
}
