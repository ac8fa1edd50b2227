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

/// Walks of one text run side by side (see [`Triggers::triggered`]).
const LANES: usize = 4;
/// Texts shorter than `LANES` parts of this are walked in one piece.
const LANE_MIN: usize = 16;

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
        let s0 = dfa
            .start_state(Anchored::No)
            .expect("built with an unanchored start");
        if text.len() < LANES * LANE_MIN {
            return self.walk_from(text, 0, text.len(), s0, 0);
        }
        // Each byte's step is a load that depends on the previous one, so a single
        // walk waits on memory at every byte. Walking LANES parts of the text at once
        // keeps that many loads in flight. A part starts PREFIX - 1 bytes before the
        // previous one ends, so every prefix lies wholly inside one part: one ending
        // before part k starts at or after part k-1's start, one ending later starts
        // at or after part k's.
        let part = text.len() / LANES;
        let start = |k: usize| (k * part).saturating_sub(if k > 0 { PREFIX - 1 } else { 0 });
        let end = |k: usize| {
            if k + 1 == LANES {
                text.len()
            } else {
                (k + 1) * part
            }
        };
        let mut sid = [s0; LANES];
        let mut at: [usize; LANES] = std::array::from_fn(start);
        // Every part is at least `part` bytes long: walk that many in lock step.
        let mut run = 0;
        for _ in 0..part {
            for k in 0..LANES {
                sid[k] = dfa.next_state(Anchored::No, sid[k], text[at[k]]);
                at[k] += 1;
                if dfa.is_special(sid[k]) {
                    run = self.matched(sid[k], &text[at[k]..], run);
                }
            }
        }
        for k in 0..LANES {
            run = self.walk_from(text, at[k], end(k), sid[k], run);
        }
        run
    }

    /// The walk over `text[from..to]` from state `sid`.
    fn walk_from(
        &self,
        text: &[u8],
        from: usize,
        to: usize,
        mut sid: StateID,
        mut run: u128,
    ) -> u128 {
        let dfa = &self.dfa;
        for at in from..to {
            sid = dfa.next_state(Anchored::No, sid, text[at]);
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

/// What the digit-gated detectors need to know about a text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    pub digits: usize,
    /// The most digits in one run, where single separators (` -.()`) may interrupt a
    /// run: what card numbers, SSNs and phone numbers need at least. Exact when it is
    /// `MIN_GATED_RUN` or more; below that, only known to be below it.
    pub digit_run: usize,
    /// `\b[A-Z]{2}\d{2}`: where every IBAN candidate starts.
    pub iban_head: bool,
}

/// What [`summary`] finds in one pass, sixteen bytes a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub digits: usize,
    /// Eight bytes in a row that are digits or ` -.()`, which a digit run of 8 (the
    /// smallest any detector needs) takes. Long base64 values (PEM blocks, key files)
    /// have plenty of digits but practically never such a row, and then the
    /// byte-by-byte [`scan_digits`] is not needed.
    pub row: bool,
    pub iban_head: bool,
}

/// Per byte of a 16-byte chunk, bit i for byte i.
#[derive(Clone, Copy, Default)]
struct Masks {
    digit: u16,
    /// A digit or one of ` -.()`: what a digit run is made of.
    run: u16,
    upper: u16,
    /// `[A-Za-z0-9_]`, as `(?-u:\b)` sees words.
    word: u16,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks_sse2(chunk: &[u8; 16]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8, _mm_sub_epi8,
    };
    let lo = i64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
    let hi = i64::from_le_bytes(chunk[8..].try_into().expect("8 bytes"));
    let v = _mm_set_epi64x(hi, lo);
    // first <= b <= first + span, unsigned: t = b - first, min(t, span) == t.
    let within = |first: u8, span: u8| -> __m128i {
        let t = _mm_sub_epi8(v, _mm_set1_epi8(first as i8));
        _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(span as i8)), t)
    };
    let digit = within(b'0', 9);
    let upper = within(b'A', 25);
    let lower = within(b'a', 25);
    let mut run = digit;
    for sep in *b" ().-" {
        run = _mm_or_si128(run, _mm_cmpeq_epi8(v, _mm_set1_epi8(sep as i8)));
    }
    let underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'_' as i8));
    let word = _mm_or_si128(_mm_or_si128(digit, upper), _mm_or_si128(lower, underscore));
    let bits = |m| _mm_movemask_epi8(m) as u16;
    Masks {
        digit: bits(digit),
        run: bits(run),
        upper: bits(upper),
        word: bits(word),
    }
}

/// The same, a byte at a time: the reference for the vector version, and the version
/// for other CPUs.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn masks_scalar(chunk: &[u8; 16]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in chunk.iter().enumerate() {
        let bit = |yes: bool| u16::from(yes) << i;
        m.digit |= bit(b.is_ascii_digit());
        m.run |= bit(b.is_ascii_digit() || b" ().-".contains(&b));
        m.upper |= bit(b.is_ascii_uppercase());
        m.word |= bit(b.is_ascii_alphanumeric() || b == b'_');
    }
    m
}

#[inline(always)]
fn summary_with(text: &[u8], masks: impl Fn(&[u8; 16]) -> Masks) -> Summary {
    let mut out = Summary {
        digits: 0,
        row: false,
        iban_head: false,
    };
    // Bytes in a row at the end of the chunks so far that a digit run may hold.
    let mut carry = 0u32;
    // The previous chunk (IBAN heads in it need three bytes of the next one) and
    // whether the byte before it is a word character (zeros before the text: none).
    let (mut prev, mut before) = (Masks::default(), 0u32);
    let mut step = |m: Masks| {
        out.digits += m.digit.count_ones() as usize;
        let mut x = m.run & (m.run >> 1);
        x &= x >> 2;
        x &= x >> 4;
        out.row |= x != 0 || carry + m.run.trailing_ones() >= 8;
        carry = if m.run == u16::MAX {
            carry + 16
        } else {
            m.run.leading_ones()
        };
        let two = |p: u16, c: u16| u32::from(p) | (u32::from(c) << 16);
        let (upper, digit, word) = (
            two(prev.upper, m.upper),
            two(prev.digit, m.digit),
            two(prev.word, m.word),
        );
        let boundary = !((word << 1) | before);
        let heads = boundary & upper & (upper >> 1) & (digit >> 2) & (digit >> 3);
        out.iban_head |= heads & 0xFFFF != 0;
        before = u32::from(prev.word >> 15);
        prev = m;
    };
    let mut chunks = text.chunks_exact(16);
    for c in &mut chunks {
        step(masks(c.try_into().expect("16 bytes")));
    }
    // Zeros are nothing: they pad the last chunk, and one more chunk of them lets the
    // last real one's IBAN heads be seen.
    let rest = chunks.remainder();
    let mut last = [0u8; 16];
    last[..rest.len()].copy_from_slice(rest);
    if !rest.is_empty() {
        step(masks(&last));
    }
    step(Masks::default());
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn summary_sse2(text: &[u8]) -> Summary {
    summary_with(text, |c| masks_sse2(c))
}

/// The same with a `popcnt` instruction rather than a dozen for each count.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2,popcnt")]
fn summary_popcnt(text: &[u8]) -> Summary {
    summary_with(text, |c| masks_sse2(c))
}

/// Digits, a row a digit run of 8 could be, and IBAN heads, in one vectorised pass.
pub(crate) fn summary(text: &[u8]) -> Summary {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: SSE2 is part of the x86-64 baseline, popcnt was just detected.
            return unsafe { summary_popcnt(text) };
        }
        // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
        unsafe { summary_sse2(text) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    summary_with(text, masks_scalar)
}

#[cfg(test)]
pub(crate) fn summary_scalar(text: &[u8]) -> Summary {
    summary_with(text, masks_scalar)
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
    for &b in text {
        let class = CLASSES[usize::from(b)];
        let digit = class == DIGIT;
        let reset = class >= UPPER || (class == SEP1 && sep);
        cur = if reset { 0 } else { cur + usize::from(digit) };
        best = best.max(cur);
        sep = !digit && !reset;
    }
    Scan {
        digits,
        digit_run: best,
        iban_head: false,
    }
}
