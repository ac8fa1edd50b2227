//! Measures the masker on the generated corpus (`belay_mask::corpus`, fixed seed) and
//! prints three lines:
//!
//! ```text
//! bench: mask_recall <fraction 0..1 of secret samples fully masked>
//! bench: mask_false_positive_rate <fraction 0..1 of ordinary command lines changed>
//! bench: mask_throughput_mb_s <MB (10^6 bytes) of argv text masked per CPU second (one core)>
//! ```
//!
//! Throughput is measured the way the agent masks, in place on command lines it owns
//! (`Masker::mask_argv_in_place`); stderr also gives the copying `mask_argv` for
//! comparison. Time is the thread's CPU time from the scheduler, so other jobs on the
//! machine do not count against it. Each figure is the median over passes of at least
//! 2 CPU seconds in all: on a shared virtual machine a pass now and then runs several
//! times slower (time stolen by the host, caches flushed by neighbours), and the median
//! leaves those out where a total would not.
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
        let copies = |lines: &Vec<Vec<String>>, n: usize| vec![lines.clone(); n];
        fixed(&masker, &mut copies(&ordinary, 1));
        fixed(&masker, &mut copies(&secret_lines, 1));
        fixed_ordinary(&masker, &mut copies(&ordinary, rounds));
        fixed_secret(&masker, &mut copies(&secret_lines, rounds));
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
        "ordinary lines only: {:.1} MB/s; secret lines only: {:.1} MB/s; the mix through the copying API (mask_argv): {:.1} MB/s",
        throughput(&masker, &ordinary),
        throughput(&masker, &secret_lines),
        throughput_copying(&masker, &mix)
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

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`): the kernel
/// brings the count up to date when asked, so even a pass of a few milliseconds is
/// timed exactly, and the time other jobs on a shared machine take does not count.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// MB (10^6 bytes) of argv text masked per CPU second, the median of passes over
/// `lines` taking at least 2 CPU seconds in all, the way the agent masks: in place, on
/// command lines it owns.
fn throughput(masker: &Masker, lines: &[Vec<String>]) -> f64 {
    throughput_for(masker, lines, 2.0)
}

/// The same for `seconds` CPU seconds. Each pass masks fresh copies of `lines`, as the
/// agent masks freshly decoded events; making and dropping the copies is not counted.
fn throughput_for(masker: &Masker, lines: &[Vec<String>], seconds: f64) -> f64 {
    median_rate(corpus::argv_bytes(lines), seconds, || {
        let mut copies = lines.to_vec();
        let start = cpu_ns();
        for argv in &mut copies {
            masker.mask_argv_in_place(std::hint::black_box(argv));
        }
        let ns = cpu_ns() - start;
        std::hint::black_box(&copies);
        ns
    })
}

/// The copying API (`mask_argv`, which returns new strings), for comparison.
fn throughput_copying(masker: &Masker, lines: &[Vec<String>]) -> f64 {
    median_rate(corpus::argv_bytes(lines), 2.0, || {
        let start = cpu_ns();
        for argv in lines {
            std::hint::black_box(masker.mask_argv(std::hint::black_box(argv)));
        }
        cpu_ns() - start
    })
}

/// MB/s of `bytes` per pass, the median over passes (`pass` returns its CPU ns) until
/// they add up to `seconds` CPU seconds, and at least 5 (30 s of wall time at most).
fn median_rate(bytes: usize, seconds: f64, mut pass: impl FnMut() -> u64) -> f64 {
    let mut rates = Vec::new();
    let mut ns = 0u64;
    let wall = Instant::now();
    while ((ns as f64) < seconds * 1e9 || rates.len() < 5)
        && wall.elapsed() < Duration::from_secs(30)
    {
        let took = pass().max(1);
        ns += took;
        rates.push(bytes as f64 / 1e6 / (took as f64 / 1e9));
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// `rounds` passes over the ordinary lines (`copies`, one per round, made beforehand):
/// a symbol of its own, so that callgrind's inclusive count for it is the masking work
/// alone.
#[inline(never)]
fn fixed_ordinary(masker: &Masker, copies: &mut [Vec<Vec<String>>]) {
    // Distinct bodies, so that the linker cannot fold the two into one symbol.
    std::hint::black_box(1u8);
    fixed(masker, copies);
}

#[inline(never)]
fn fixed_secret(masker: &Masker, copies: &mut [Vec<Vec<String>>]) {
    std::hint::black_box(2u8);
    fixed(masker, copies);
}

#[inline(never)]
fn fixed(masker: &Masker, copies: &mut [Vec<Vec<String>>]) {
    for lines in copies {
        for argv in lines {
            masker.mask_argv_in_place(std::hint::black_box(argv));
        }
    }
}
