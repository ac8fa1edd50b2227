//! Escaping for a person's screen: what would move the cursor, clear the screen, end a
//! line, reorder the text (bidi overrides) or draw nothing at all is written as a Rust
//! escape (`\u{1b}`, `\r`, `\u{202e}`); everything else is left as it is.
//!
//! Backslashes are left alone (except inside [`Quoted`]), so escaping is idempotent: the
//! agent escapes the context it sends and every view escapes again, and the two agree.
//! The price is that a value holding the six characters `\u{7}` looks like one holding a
//! bell; both are odd enough for a reviewer to look closer, and neither can make a value
//! look harmless.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Combining marks shown after one base character; further ones are escaped, since
/// stacked marks draw over the lines above and below.
const MAX_MARKS: u8 = 2;

/// Code points that draw nothing although Unicode does not class them as format
/// characters (Default_Ignorable_Code_Point letters and variation selectors), and the
/// blank Braille pattern: each lets two different strings look the same.
const INVISIBLE: &[(char, char)] = &[
    ('\u{034f}', '\u{034f}'),   // combining grapheme joiner
    ('\u{115f}', '\u{1160}'),   // Hangul choseong and jungseong fillers
    ('\u{17b4}', '\u{17b5}'),   // Khmer inherent vowels
    ('\u{180b}', '\u{180f}'),   // Mongolian variation selectors and vowel separator
    ('\u{2800}', '\u{2800}'),   // Braille pattern blank
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{fe00}', '\u{fe0f}'),   // variation selectors
    ('\u{ffa0}', '\u{ffa0}'),   // halfwidth Hangul filler
    ('\u{e0000}', '\u{e0fff}'), // tags, variation selectors supplement, reserved
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Shown as itself.
    Plain,
    /// A combining mark: shown after a base character, escaped anywhere else.
    Mark,
    Escape,
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        return if c.is_ascii_control() {
            Class::Escape
        } else {
            Class::Plain
        };
    }
    if INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) || !printable(c) {
        return Class::Escape;
    }
    // `char::escape_debug` escapes every mark that combines with what precedes it.
    if c.escape_debug().nth(1).is_some() {
        Class::Mark
    } else {
        Class::Plain
    }
}

/// Whether the standard library's `Debug` shows `c` as itself after a letter. It does not
/// for controls (C0, DEL, C1), format characters (bidi embeddings, overrides and
/// isolates, zero-width spaces and joiners, the BOM, soft hyphens, tags), line and
/// paragraph separators, spaces other than U+0020, private-use and unassigned code
/// points: its tables follow the Unicode version of the toolchain.
fn printable(c: char) -> bool {
    let mut buf = [0u8; 5];
    buf[0] = b'a';
    let len = 1 + c.encode_utf8(&mut buf[1..]).len();
    // `str::escape_debug` escapes a combining mark only at the start of the string, so
    // after the `a` only a character that is not printable comes out escaped.
    std::str::from_utf8(&buf[..len]).is_ok_and(|s| s.escape_debug().nth(2).is_none())
}

/// Whether `c`, on its own, is written escaped: control, format, separator, invisible,
/// unassigned, or a combining mark with nothing to combine with.
pub fn needs_escape(c: char) -> bool {
    class(c) != Class::Plain
}

/// Writes `s` escaped; in `quoted` form `"` and `\` are escaped too, so that the quotes
/// around it show where the value ends.
fn write_escaped(out: &mut impl fmt::Write, s: &str, quoted: bool) -> fmt::Result {
    // Marks shown since the last base character shown; None: none to combine with.
    let mut marks: Option<u8> = None;
    for c in s.chars() {
        if quoted && matches!(c, '"' | '\\') {
            out.write_char('\\')?;
            out.write_char(c)?;
            marks = Some(0);
            continue;
        }
        let shown = match class(c) {
            Class::Plain => {
                marks = Some(0);
                true
            }
            Class::Mark => match marks {
                Some(n) if n < MAX_MARKS => {
                    marks = Some(n + 1);
                    true
                }
                _ => false,
            },
            Class::Escape => false,
        };
        if shown {
            out.write_char(c)?;
        } else {
            marks = None;
            write!(out, "{}", c.escape_default())?;
        }
    }
    Ok(())
}

/// `s` ready for a person's screen (see the module docs); borrowed when nothing changed.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    // Writing into a String cannot fail.
    let _ = write_escaped(&mut out, s, false);
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

/// Displays a value escaped, honouring width and alignment (`{:<16}`).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_none() && f.precision().is_none() {
            write_escaped(f, self.0, false)
        } else {
            f.pad(&escape(self.0))
        }
    }
}

/// Displays a value escaped and in double quotes, with `"` and `\` inside escaped: for
/// lists (argv) where a person must see where one value ends and the next begins.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        write_escaped(&mut out, self.0, true)?;
        out.push('"');
        f.pad(&out)
    }
}

/// JSON text as serde_json writes it, with every character [`escape`] would escape and
/// serde_json leaves as it is (DEL, C1 controls, format characters, ...) written as a
/// JSON `\uXXXX` escape: the same document, the same values, but nothing in it can
/// rewrite a terminal it is printed on. serde_json escapes C0 controls itself and writes
/// non-ASCII characters only inside strings, so the result is valid JSON.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    let risky = |c: char| c == '\x7f' || (!c.is_ascii() && needs_escape(c));
    if !json.chars().any(risky) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if risky(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "escape_tests.rs"]
mod tests;
