//! Counting libtest's `test result:` lines.

/// Passed and failed tests, summed over `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
}

impl Counts {
    /// Adds the counts of a `test result: ok. 3 passed; 1 failed; ...` line, if `line` is
    /// one; returns the line's own counts.
    pub fn add_line(&mut self, line: &str) -> Option<Counts> {
        let c = parse_result_line(line)?;
        self.passed += c.passed;
        self.failed += c.failed;
        Some(c)
    }

    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Parses `test result: ok. 3 passed; 0 failed; 0 ignored; ...`.
pub fn parse_result_line(line: &str) -> Option<Counts> {
    let at = line.find("test result: ")?;
    let rest = &line[at + "test result: ".len()..];
    let (_, rest) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    let mut seen = false;
    for part in rest.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => {
                counts.passed = n;
                seen = true;
            }
            "failed" => counts.failed = n,
            _ => {}
        }
    }
    seen.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        let ok = "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            parse_result_line(ok),
            Some(Counts {
                passed: 3,
                failed: 0
            })
        );
        let bad = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            parse_result_line(bad),
            Some(Counts {
                passed: 1,
                failed: 2
            })
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
        let mut total = Counts::default();
        total.add_line(ok);
        total.add_line(bad);
        total.add_line("noise");
        assert_eq!(
            total,
            Counts {
                passed: 4,
                failed: 2
            }
        );
    }
}
