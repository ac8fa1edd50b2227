use belay_mask::{MaskConfig, Masker, corpus};
use std::time::Instant;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let m = Masker::new(&MaskConfig::default(), [0x42; 32]).unwrap();
    let lines: Vec<Vec<String>> = if which == "secret" {
        corpus::secret_samples(corpus::SEED, 100).into_iter().map(|s| s.argv).collect()
    } else if which == "long" || which == "short" {
        corpus::secret_samples(corpus::SEED, 100).into_iter().map(|s| s.argv)
            .filter(|l| l.iter().any(|a| a.len() > 100) == (which == "long")).collect()
    } else {
        corpus::ordinary_argv(corpus::SEED, 5000)
    };
    if std::env::var("DUMP").is_ok() {
        let mut v: Vec<&String> = lines.iter().flatten().collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.len()));
        let total: usize = v.iter().map(|a| a.len()).sum();
        let big: usize = v.iter().filter(|a| a.len() > 100).map(|a| a.len()).sum();
        println!("total {total} in >100B args {big} count {}", v.iter().filter(|a| a.len() > 100).count());
        for a in v.iter().take(5) { println!("{} {:?}", a.len(), &a[..a.len().min(300)]); }
    }
    let bytes = corpus::argv_bytes(&lines);
    let args: usize = lines.iter().map(Vec::len).sum();
    println!("{} lines {} args {} bytes, {:.1} bytes/arg", lines.len(), args, bytes, bytes as f64 / args as f64);
    let t = Instant::now();
    let c0 = cpu();
    let mut n = 0;
    let iters: usize = std::env::args().nth(2).map_or(0, |v| v.parse().unwrap());
    while if iters > 0 { n < iters } else { cpu() - c0 < 3.0 } {
        for l in &lines { std::hint::black_box(m.mask_argv(l)); }
        n += 1;
    }
    println!("{:.1} MB/s cpu, {:.1} wall", (n * bytes) as f64 / 1e6 / (cpu() - c0), (n * bytes) as f64 / 1e6 / t.elapsed().as_secs_f64());
}

fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}
