//! What every command prints goes through here or through
//! [`belay_proto::display::Escaped`]: values from a watched process, an agent, the server
//! or its audit log are escaped for the terminal (`\u{1b}`, `\r`, `\u{202e}`), whoever
//! sent them and whatever they checked before. JSON output keeps the real values,
//! JSON-escaped so that printing it cannot rewrite the terminal either.
use belay_proto::display::{Escaped, Quoted, env, escape, escape_json};
use serde::Serialize;

/// Shorthand for the one escaping every field goes through.
pub fn esc(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// An optional field: escaped, or `default` when absent.
pub fn esc_or<'a>(s: Option<&'a str>, default: &'a str) -> Escaped<'a> {
    Escaped(s.unwrap_or(default))
}

/// argv as `["git", "push"]`: each value quoted, so none can pass for two.
pub fn argv(argv: &[String]) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| Quoted(a).to_string()).collect();
    format!("[{}]", quoted.join(", "))
}

/// A list of names, `a, b`, each escaped.
pub fn list(items: &[String]) -> String {
    let escaped: Vec<String> = items.iter().map(|i| escape(i).into_owned()).collect();
    escaped.join(", ")
}

/// Text whose lines are meant as lines (a policy document, an error): each line
/// escaped, the line breaks kept.
pub fn lines(text: &str) -> String {
    let escaped: Vec<String> = text.lines().map(|l| escape(l).into_owned()).collect();
    escaped.join("\n")
}

/// What the agent puts last when it left entries out.
const CUT: &str = "…";

/// The environment lines of `show`, label column included: the variables that change
/// what the program does first (`runs with`), always, then the others (`env`).
pub fn env_lines(env: Option<&[String]>) -> Vec<String> {
    let Some(entries) = env else {
        return vec!["env       none known (not read, or empty)".into()];
    };
    let (cut, entries) = match entries.split_last() {
        Some((last, rest)) if last == CUT => (true, rest),
        _ => (false, entries),
    };
    let (program, other): (Vec<&String>, Vec<&String>) =
        entries.iter().partition(|e| env::entry_changes_program(e));
    let mut out = Vec::new();
    if program.is_empty() {
        out.push("runs with nothing that changes what runs (no LD_*, PATH, GIT_*, ...)".into());
    }
    for (i, e) in program.iter().enumerate() {
        let label = if i == 0 { "runs with" } else { "" };
        out.push(format!("{label:<9} {}", esc(e)));
    }
    for (i, e) in other.iter().enumerate() {
        let label = if i == 0 { "env" } else { "" };
        out.push(format!("{label:<9} {}", esc(e)));
    }
    if cut {
        out.push(format!(
            "{:<9} {CUT} (cut: the environment is longer than belay reads)",
            if other.is_empty() { "env" } else { "" }
        ));
    }
    out
}

/// Pretty JSON for `--output json`.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(escape_json(&serde_json::to_string_pretty(value)?).into_owned())
}

/// One-line JSON (`watch --output json`: one object per line).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(escape_json(&serde_json::to_string(value)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn argv_values_are_quoted_and_escaped() {
        let shown = argv(&strings(&[
            "sh",
            "-c",
            "echo \x1b[2J\r",
            "a\", \"b",
            "\u{202e}x",
        ]));
        assert_eq!(
            shown,
            r#"["sh", "-c", "echo \u{1b}[2J\r", "a\", \"b", "\u{202e}x"]"#
        );
    }

    #[test]
    fn program_changing_variables_come_first_and_escaped() {
        let env = strings(&[
            "TERM=xterm",
            "LD_PRELOAD=/tmp/\u{202e}os.x",
            "LANG=C",
            "PATH=/tmp/bin\x1b[2J",
            CUT,
        ]);
        let shown = env_lines(Some(&env));
        assert_eq!(shown[0], "runs with LD_PRELOAD=/tmp/\\u{202e}os.x");
        assert_eq!(shown[1], "          PATH=/tmp/bin\\u{1b}[2J");
        assert_eq!(shown[2], "env       TERM=xterm");
        assert_eq!(shown[3], "          LANG=C");
        assert!(shown[4].starts_with("          … (cut"), "{shown:?}");
        assert!(
            shown
                .iter()
                .all(|l| !l.contains('\x1b') && !l.contains('\u{202e}'))
        );
    }

    #[test]
    fn an_environment_without_them_says_so() {
        let shown = env_lines(Some(&strings(&["TERM=xterm"])));
        assert!(shown[0].starts_with("runs with nothing"), "{shown:?}");
        assert_eq!(
            env_lines(None),
            ["env       none known (not read, or empty)"]
        );
    }

    #[test]
    fn json_keeps_the_real_value() {
        let value = serde_json::json!({"path": "/tmp/\u{202e}x\x1b[2J\u{9b}"});
        let text = json_pretty(&value).unwrap();
        assert!(text.contains(r#""/tmp/\u202ex\u001b[2J\u009b""#), "{text}");
        assert!(!text.contains('\u{202e}') && !text.contains('\x1b') && !text.contains('\u{9b}'));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        let line = json_line(&value).unwrap();
        assert!(!line.contains('\n') && !line.contains('\u{202e}'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            value
        );
    }
}
