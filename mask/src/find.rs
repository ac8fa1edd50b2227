//! Which values of a text to mask: the cheap passes, the detectors they select, and
//! the choice among overlapping candidates.
use std::ops::Range;

use crate::{
    CheckFn, Ctx, Hit, MIN_GATED_RUN, Masker,
    groups::{Groups, Shape},
    prefilter::{Scan, Summary, scan_digits, summary},
    tokens::Hand,
};

impl Masker {
    /// The non-overlapping values to mask in `text`, in order.
    pub(crate) fn find(&self, text: &str, ctx: Ctx) -> Vec<Hit> {
        if text.len() < self.min_len {
            return Vec::new();
        }
        // Most arguments are short words, flags and paths. Without separators a short
        // text can hold no built-in candidate: every vendor token is 15 bytes or more,
        // emails need `@`, assignments and headers `=` or `:`, flag values a space, and
        // the digit-gated kinds 8 digits.
        // Counting, and looking for 8 bytes in a row a run could be made of, is a
        // vectorised pass; the run itself needs a byte-by-byte one, and only matters
        // when there is such a row and digits enough for any digit-gated detector.
        // Short arguments with few digits (most of them) need no more than a count.
        let quick = (text.len() < 32)
            .then(|| text.bytes().filter(u8::is_ascii_digit).count())
            .filter(|&d| d < MIN_GATED_RUN);
        let Summary {
            digits,
            row,
            iban_head,
        } = match quick {
            // Every digit gate and the IBAN gate want 8 digits or more.
            Some(digits) => Summary {
                digits,
                row: false,
                iban_head: false,
            },
            None => summary(text.as_bytes()),
        };
        if self.builtin_only
            && text.len() < 15
            && digits < MIN_GATED_RUN
            && !text.bytes().any(|b| matches!(b, b'@' | b'=' | b':' | b' '))
        {
            return Vec::new();
        }
        let digit_run = if digits >= MIN_GATED_RUN && row {
            scan_digits(text.as_bytes(), digits).digit_run
        } else {
            // No run can reach the smallest gate.
            digits.min(MIN_GATED_RUN - 1)
        };
        let scan = Scan {
            digits,
            digit_run,
            iban_head,
        };
        let mut run = self.triggers.triggered(text.as_bytes());
        for &d in &self.always {
            if digit_run >= self.detectors[d].min_run {
                run |= 1 << d;
            }
        }
        if ctx.no_email
            && let Some(e) = self.email
        {
            run &= !(1 << e);
        }
        if run == 0 {
            return Vec::new();
        }
        let mut cands: Vec<Hit> = Vec::new();
        // Set bits in ascending order keep candidates in priority order.
        let mut bits = run;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let d = &self.detectors[i];
            if digit_run < d.min_run || !(d.gate)(text, &scan) {
                continue;
            }
            let mut consider = |g: Groups| {
                let range = match d.check {
                    CheckFn::Builtin(check) => check(&g, text),
                    CheckFn::Custom => g.s.filter(|r| !r.is_empty()),
                };
                let Some(range) = range else { return };
                if !self.allowed(&text[range.clone()], &text[g.whole]) {
                    cands.push(Hit {
                        range,
                        kind: i,
                        sub: None,
                    });
                }
            };
            if let Some(Hand::Vendor(v)) = &d.hand {
                v.find_iter(text, |range, entry| {
                    if !self.allowed(&text[range.clone()], &text[range.clone()]) {
                        cands.push(Hit {
                            range,
                            kind: i,
                            sub: Some(entry as u16),
                        });
                    }
                });
                continue;
            }
            if let Some(hand) = &d.hand
                && hand.handles(text)
            {
                // Hand matchers stand in for patterns with a shape (`Whole`, `Value`).
                hand.find_iter(text, |r| {
                    consider(d.shape.groups(text, r).expect("not Captures"));
                });
                continue;
            }
            match d.shape {
                Shape::Captures => {
                    for caps in d.regex.captures_iter(text) {
                        consider(match d.check {
                            CheckFn::Builtin(_) => Groups::builtin(&caps),
                            CheckFn::Custom => Groups::custom(&caps),
                        });
                    }
                }
                shape => {
                    for m in d.regex.find_iter(text) {
                        consider(shape.groups(text, m.range()).expect("not Captures"));
                    }
                }
            }
        }
        if cands.is_empty() {
            return cands;
        }
        let markers = self.markers(text);
        let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
        // Candidates come in detector priority order already. The chosen ones are
        // gathered at the front of `cands`, which spares a second vector.
        let mut kept = 0;
        for i in 0..cands.len() {
            let c = &cands[i].range;
            if markers.iter().any(|m| overlaps(m, c))
                || cands[..kept].iter().any(|h| overlaps(&h.range, c))
            {
                continue;
            }
            cands.swap(kept, i);
            kept += 1;
        }
        cands.truncate(kept);
        cands.sort_by_key(|h| h.range.start);
        cands
    }
}
