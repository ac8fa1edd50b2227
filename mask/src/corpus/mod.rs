//! The labelled corpus the tests and `belay-mask-bench` measure the masker on,
//! generated from a seed: secrets built from the formats' published shapes (AWS key ids
//! are `AKIA` + 16 base32 characters, GitHub tokens `ghp_` + 36 base62, JWTs real
//! base64url JSON, card numbers Luhn-valid, IBANs mod-97-valid, ...) placed in the
//! command lines and environments they turn up in, and ordinary command lines that
//! must come out unchanged.
mod formats;
mod ordinary;
mod secrets;

pub use ordinary::{ordinary_argv, ordinary_env};
pub use secrets::secret_samples;

/// What the drift tests run a hand matcher and its regex on: every argv element, env
/// entry and whole line (joined with spaces) of the secret samples and ordinary lines.
#[cfg(test)]
pub(crate) fn texts() -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for s in secret_samples(SEED, 20) {
        texts.push(s.argv.join(" "));
        texts.push(s.env.join(" "));
        texts.extend(s.argv);
        texts.extend(s.env);
    }
    for l in ordinary_argv(SEED, 2000) {
        texts.push(l.join(" "));
        texts.extend(l);
    }
    texts.extend(ordinary_env(SEED, 500));
    texts
}

/// A small deterministic generator (SplitMix64): the corpus is the same on every run
/// and machine, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

pub const BASE62: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const BASE32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub const HEX: &str = "0123456789abcdef";
pub const DIGITS: &str = "0123456789";
pub const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    pub fn chars(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }

    /// `lo..=hi` characters of `alphabet`.
    pub fn chars_n(&mut self, alphabet: &str, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        self.chars(alphabet, n)
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// One command line (and environment) holding secrets of one kind.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The detector kind expected to find it.
    pub kind: &'static str,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Parts of the secret that must not survive masking (the vendor prefix, an
    /// email's domain or a card's last four digits may).
    pub secrets: Vec<String>,
}

impl Sample {
    /// Whether masked argv and env still hold any part that must vanish.
    pub fn leaks(&self, argv: &[String], env: &[String]) -> bool {
        self.secrets
            .iter()
            .any(|s| argv.iter().chain(env).any(|a| a.contains(s.as_str())))
    }
}

/// Bytes of argv text, the throughput unit.
pub fn argv_bytes(argv: &[Vec<String>]) -> usize {
    argv.iter().flatten().map(String::len).sum()
}

/// Recall over samples: the fraction whose secrets were all masked.
pub fn recall(masker: &crate::Masker, samples: &[Sample]) -> (f64, Vec<usize>) {
    let mut missed = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let argv = masker.mask_argv(&s.argv);
        let env = masker.mask_env(&s.env);
        if s.leaks(&argv, &env) {
            missed.push(i);
        }
    }
    let ok = samples.len() - missed.len();
    (ok as f64 / samples.len().max(1) as f64, missed)
}

/// False-positive rate over ordinary command lines: the fraction with anything masked.
pub fn false_positive_rate(masker: &crate::Masker, lines: &[Vec<String>]) -> (f64, Vec<usize>) {
    let hit: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| masker.mask_argv(l) != **l)
        .map(|(i, _)| i)
        .collect();
    (hit.len() as f64 / lines.len().max(1) as f64, hit)
}

/// The seed the tests and the benchmark use.
pub const SEED: u64 = 0x5eed_b41a_7000_0005;
