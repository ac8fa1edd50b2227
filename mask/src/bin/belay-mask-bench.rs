//! Measures the masker on the generated corpus (`belay_mask::corpus`, fixed seed) and
//! prints three lines:
//!
//! ```text
//! bench: mask_recall <fraction 0..1 of secret samples fully masked>
//! bench: mask_false_positive_rate <fraction 0..1 of ordinary command lines changed>
//! bench: mask_throughput_mb_s <MB (10^6 bytes) of argv text masked per CPU second (one core)>
//! ```
//!
//! Run it built with `--release`: `cargo run --release -p belay-mask --bin
//! belay-mask-bench`. `--samples N` (secret samples per kind, default 100) and
//! `--lines N` (ordinary command lines, default 5000) size the corpus. `--rounds N`
//! instead masks the ordinary lines and then the secret lines exactly N times each and
//! prints nothing else: a fixed amount of work, for instruction counts under
//! `valgrind --tool=callgrind`, which stay comparable on a busy machine. `--by-kind`
//! prints, per secret kind, the throughput on its sample lines and its share of the
//! time all secret lines take.
use std::time::{Duration, Instant};

use belay_mask::{MaskConfig, Masker, corpus};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number"))
        })
}

fn main() {
    let per_kind = arg("--samples", 100);
    let lines = arg("--lines", 5000);
    let rounds = arg("--rounds", 0);
    let masker = Masker::new(&MaskConfig::default(), [0x42; 32]).expect("built-in detectors");
    let samples = corpus::secret_samples(corpus::SEED, per_kind);
    let ordinary = corpus::ordinary_argv(corpus::SEED, lines);
    let secret_lines: Vec<Vec<String>> = samples.iter().map(|s| s.argv.clone()).collect();
    if rounds > 0 {
        // Warm the regexes' lazy DFAs first: their state building is a start-up cost.
        fixed(&masker, &ordinary, 1);
        fixed(&masker, &secret_lines, 1);
        fixed_ordinary(&masker, &ordinary, rounds);
        fixed_secret(&masker, &secret_lines, rounds);
        println!(
            "rounds {rounds}: ordinary {} bytes, secret {} bytes a round",
            corpus::argv_bytes(&ordinary),
            corpus::argv_bytes(&secret_lines)
        );
        return;
    }

    if std::env::args().any(|a| a == "--by-kind") {
        by_kind(&masker, &samples);
        return;
    }
    let (recall, _) = corpus::recall(&masker, &samples);
    let (fp, _) = corpus::false_positive_rate(&masker, &ordinary);

    // Throughput over a realistic mix: mostly ordinary command lines, some with secrets.
    let mut mix: Vec<Vec<String>> = ordinary.clone();
    mix.extend(samples.iter().map(|s| s.argv.clone()));
    let mb_s = throughput(&masker, &mix);
    eprintln!(
        "ordinary lines only: {:.1} MB/s; secret lines only: {:.1} MB/s",
        throughput(&masker, &ordinary),
        throughput(&masker, &secret_lines)
    );

    println!("bench: mask_recall {recall:.4}");
    println!("bench: mask_false_positive_rate {fp:.4}");
    println!("bench: mask_throughput_mb_s {mb_s:.1}");
}

/// Per secret kind: bytes of its sample lines, MB/s, and its share of the time all
/// secret lines take, largest first. Where to look when throughput drops.
fn by_kind(masker: &Masker, samples: &[corpus::Sample]) {
    let mut kinds: Vec<&str> = samples.iter().map(|s| s.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut rows: Vec<(&str, usize, f64)> = kinds
        .iter()
        .map(|&k| {
            let lines: Vec<Vec<String>> = samples
                .iter()
                .filter(|s| s.kind == k)
                .map(|s| s.argv.clone())
                .collect();
            let bytes = corpus::argv_bytes(&lines);
            let rate = throughput_for(masker, &lines, 0.2);
            (k, bytes, bytes as f64 / 1e6 / rate)
        })
        .collect();
    let total: f64 = rows.iter().map(|r| r.2).sum();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("{:<20} {:>8} {:>8} {:>6}", "kind", "bytes", "MB/s", "time%");
    for (k, bytes, secs) in rows {
        println!(
            "{k:<20} {bytes:>8} {:>8.1} {:>5.1}%",
            bytes as f64 / 1e6 / secs,
            100.0 * secs / total
        );
    }
}

/// CPU seconds this process has used (user + system), from /proc: throughput per CPU
/// second stays meaningful on a machine other jobs share.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 11 and 12 after the state field; ticks of 1/100 s
    // (USER_HZ is 100 on Linux).
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}

/// MB (10^6 bytes) of argv text masked per CPU second, over at least 2 CPU seconds.
fn throughput(masker: &Masker, lines: &[Vec<String>]) -> f64 {
    throughput_for(masker, lines, 2.0)
}

fn throughput_for(masker: &Masker, lines: &[Vec<String>], seconds: f64) -> f64 {
    let bytes = corpus::argv_bytes(lines);
    let mut total = 0usize;
    let start = cpu_seconds();
    let wall = Instant::now();
    while cpu_seconds() - start < seconds && wall.elapsed() < Duration::from_secs(30) {
        for argv in lines {
            std::hint::black_box(masker.mask_argv(std::hint::black_box(argv)));
        }
        total += bytes;
    }
    total as f64 / 1e6 / (cpu_seconds() - start)
}

/// `rounds` passes over the ordinary lines: a symbol of its own, so that callgrind's
/// inclusive count for it is the masking work alone.
#[inline(never)]
fn fixed_ordinary(masker: &Masker, lines: &[Vec<String>], rounds: usize) {
    // Distinct bodies, so that the linker cannot fold the two into one symbol.
    std::hint::black_box(1u8);
    fixed(masker, lines, rounds);
}

#[inline(never)]
fn fixed_secret(masker: &Masker, lines: &[Vec<String>], rounds: usize) {
    std::hint::black_box(2u8);
    fixed(masker, lines, rounds);
}

#[inline(never)]
fn fixed(masker: &Masker, lines: &[Vec<String>], rounds: usize) {
    for _ in 0..rounds {
        for argv in lines {
            std::hint::black_box(masker.mask_argv(std::hint::black_box(argv)));
        }
    }
}
