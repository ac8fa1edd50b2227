//! The cheap passes that decide which detectors run on a text: literal triggers and
//! the digit gates.
use aho_corasick::{
    Anchored, MatchKind, StartKind,
    automaton::{Automaton as _, StateID},
    dfa::DFA,
};

/// How many leading bytes of each trigger the automaton holds.
///
/// Whole triggers made a 190 KB transition table, and every byte of every text is a
/// dependent load from it: out of L1, that walk was the largest single cost on long
/// arguments (PEM blocks, JSON key files). Prefixes keep the table small; the rest of a
/// trigger is compared where its prefix occurs, which is rare.
const PREFIX: usize = 3;

/// The detectors' literal triggers (ASCII case-insensitive).
pub(crate) struct Triggers {
    dfa: DFA,
    /// Per prefix (the automaton's pattern id): each trigger with that prefix, as the
    /// lowercase bytes after the prefix and the detectors it enables.
    rests: Vec<Vec<(Box<[u8]>, u128)>>,
}

impl Triggers {
    /// `literals`: each trigger with the detectors it enables (bit i: detector i).
    pub(crate) fn new(literals: &[(&str, u128)]) -> Triggers {
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        let mut rests: Vec<Vec<(Box<[u8]>, u128)>> = Vec::new();
        for (lit, bits) in literals {
            let lower = lit.to_ascii_lowercase().into_bytes();
            let (head, rest) = lower.split_at(lower.len().min(PREFIX));
            let k = match prefixes.iter().position(|p| p == head) {
                Some(k) => k,
                None => {
                    prefixes.push(head.to_vec());
                    rests.push(Vec::new());
                    prefixes.len() - 1
                }
            };
            rests[k].push((rest.into(), *bits));
        }
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(&prefixes)
            .expect("literal triggers build");
        Triggers { dfa, rests }
    }

    /// The detectors (bit i: detector i) one of whose triggers occurs in `text`.
    pub(crate) fn triggered(&self, text: &[u8]) -> u128 {
        let dfa = &self.dfa;
        let mut sid = dfa
            .start_state(Anchored::No)
            .expect("built with an unanchored start");
        let mut run = 0;
        for (at, &b) in text.iter().enumerate() {
            sid = dfa.next_state(Anchored::No, sid, b);
            // Walked by hand rather than through `find_overlapping_iter`: no per-call
            // setup, which short arguments would pay for, and a loop small enough to
            // keep in registers (matches are handled out of line).
            if dfa.is_special(sid) {
                run = self.matched(sid, &text[at + 1..], run);
            }
        }
        run
    }

    /// `run` with the detectors of the triggers whose prefix ends in state `sid` and
    /// whose rest starts `after`. With standard semantics a match state lists every
    /// prefix ending there, and an unanchored search never dies.
    #[inline(never)]
    fn matched(&self, sid: StateID, after: &[u8], mut run: u128) -> u128 {
        let dfa = &self.dfa;
        if !dfa.is_match(sid) {
            return run;
        }
        for i in 0..dfa.match_len(sid) {
            for (rest, bits) in &self.rests[dfa.match_pattern(sid, i).as_usize()] {
                if (run & bits) != *bits
                    && after.len() >= rest.len()
                    && after[..rest.len()].eq_ignore_ascii_case(rest)
                {
                    run |= bits;
                }
            }
        }
        run
    }

    #[cfg(test)]
    pub(crate) fn table_bytes(&self) -> usize {
        self.dfa.memory_usage()
    }
}

/// What the digit-gated detectors need to know about a text, from one pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    pub digits: usize,
    /// The most digits in one run, where single separators (` -.()`) may interrupt a
    /// run: what card numbers, SSNs and phone numbers need at least.
    pub digit_run: usize,
    /// Two capitals and two digits in a row, the start of every IBAN.
    pub iban_head: bool,
}

/// Byte classes for [`scan_digits`].
const DIGIT: u8 = 1;
/// `-` and `.`: a separator, but not twice in a row.
const SEP1: u8 = 2;
/// `(`, `)` and space: a separator, also after another (`(415) 555`).
const SEP2: u8 = 3;
const UPPER: u8 = 4;
const OTHER: u8 = 5;
const CLASSES: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'0'..=b'9' => DIGIT,
            b'-' | b'.' => SEP1,
            b'(' | b')' | b' ' => SEP2,
            b'A'..=b'Z' => UPPER,
            _ => OTHER,
        };
        i += 1;
    }
    t
};

/// [`Scan`] of a text with `digits` digits. Branch-free per byte: texts with many
/// digits are mostly random tokens, where branches mispredict.
pub(crate) fn scan_digits(text: &[u8], digits: usize) -> Scan {
    let (mut best, mut cur, mut sep) = (0usize, 0usize, false);
    // The classes of the last four bytes, two bits each: 1 capital, 2 digit.
    let mut last4: u8 = 0;
    let mut iban_head = false;
    for &b in text {
        let class = CLASSES[usize::from(b)];
        let digit = class == DIGIT;
        last4 = (last4 << 2) | (u8::from(digit) << 1) | u8::from(class == UPPER);
        iban_head |= last4 == 0b01_01_10_10;
        let reset = class >= UPPER || (class == SEP1 && sep);
        cur = if reset { 0 } else { cur + usize::from(digit) };
        best = best.max(cur);
        sep = !digit && !reset;
    }
    Scan {
        digits,
        digit_run: best,
        iban_head,
    }
}
