//! `xtask dist`: what a platform team installs.
//!
//! * release binaries `belay-agent`, `belay-server`, `belay` (glibc, x86_64; the minimum
//!   glibc is the newest `GLIBC_x.y` symbol version they import, found with `objdump -T`
//!   and written into the packages' `Depends`),
//! * `belay-<version>-x86_64-linux-gnu.tar.gz`: the binaries, units and example policy,
//! * Debian packages `belay-agent`, `belay-server`, `belay` ([`deb`]),
//! * OCI image archives for the agent and the server ([`oci`]), built without a daemon,
//! * `SHA256SUMS` over all of them.
//!
//! Everything lands in `target/dist/` (or `--out`); mtimes are the last commit's time, so
//! the archives do not change between two builds of the same commit.

mod deb;
mod oci;
pub mod tar;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, say};
use crate::{Ctx, workspace};

/// The workspace version (xtask's own version is the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The three binaries: (cargo package, binary name).
const BINARIES: &[(&str, &str)] = &[
    ("belay-agent", "belay-agent"),
    ("belay-server", "belay-server"),
    ("belay-cli", "belay"),
];

pub struct Options {
    /// Debian revision (`0.1.0-<revision>`); images are tagged with the version alone.
    pub revision: u32,
    pub out: Option<PathBuf>,
}

/// What `dist` made.
pub struct Dist {
    pub debian_version: String,
    pub binaries: PathBuf,
    pub debs: Vec<PathBuf>,
    pub images: Vec<PathBuf>,
    glibc: String,
    epoch: u64,
}

impl Dist {
    pub fn deb(&self, package: &str) -> Result<&Path> {
        let prefix = format!("{package}_");
        self.debs
            .iter()
            .find(|p| file_name(p).starts_with(&prefix))
            .map(PathBuf::as_path)
            .with_context(|| format!("dist made no {package} package"))
    }

    pub fn image(&self, name: &str) -> Result<&Path> {
        let prefix = format!("{name}-{VERSION}");
        self.images
            .iter()
            .find(|p| file_name(p).starts_with(&prefix))
            .map(PathBuf::as_path)
            .with_context(|| format!("dist made no {name} image"))
    }
}

pub fn run(ctx: &Ctx, opts: &Options) -> Result<Dist> {
    let started = Instant::now();
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| ctx.target_dir().join("dist"));
    let bin_dir = build_binaries(ctx, &dir)?;
    let glibc = glibc_requirement(&bin_dir)?;
    say!(
        "dist: the binaries need glibc >= {glibc} (Debian 12 has 2.36, RHEL 9 2.34, Ubuntu 22.04 2.35)"
    );
    let epoch = source_date_epoch(ctx);
    let debian_version = format!("{VERSION}-{}", opts.revision);
    let pkg = deb::Inputs {
        root: &ctx.root,
        bin_dir: &bin_dir,
        version: &debian_version,
        glibc: &glibc,
        epoch,
    };
    let debs = deb::build_all(&pkg, &dir)?;
    let images = oci::build_all(
        &oci::Inputs {
            root: &ctx.root,
            bin_dir: &bin_dir,
            epoch,
            commit: git_commit(ctx),
        },
        &dir,
    )?;
    let tarball = plain_tarball(ctx, &bin_dir, &dir, epoch)?;
    let mut all: Vec<PathBuf> = BINARIES.iter().map(|(_, b)| bin_dir.join(b)).collect();
    all.push(tarball);
    all.extend(debs.iter().cloned());
    all.extend(images.iter().cloned());
    write_checksums(&dir, &all)?;
    say!(
        "dist: artifacts in {} ({}):",
        dir.display(),
        util::secs(started.elapsed())
    );
    for p in all.iter().chain([&dir.join("SHA256SUMS")]) {
        let size = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        say!(
            "  {:>10}  {}",
            human(size),
            p.strip_prefix(&dir).unwrap_or(p).display()
        );
    }
    Ok(Dist {
        debian_version,
        binaries: bin_dir,
        debs,
        images,
        glibc,
        epoch,
    })
}

/// The Debian packages again, from the same binaries, with another revision (the
/// deploy tests upgrade to it).
pub fn repackage(ctx: &Ctx, dist: &Dist, revision: u32, out: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let version = format!("{VERSION}-{revision}");
    deb::build_all(
        &deb::Inputs {
            root: &ctx.root,
            bin_dir: &dist.binaries,
            version: &version,
            glibc: &dist.glibc,
            epoch: dist.epoch,
        },
        out,
    )
}

/// `cargo build --release` of the three binaries, copied (stripped) to `<out>/bin`.
fn build_binaries(ctx: &Ctx, out: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    say!("dist: building the release binaries (cargo build --release)");
    let mut c = workspace::cargo(ctx);
    c.args(["build", "--release"]);
    for (pkg, _) in BINARIES {
        c.args(["-p", pkg]);
    }
    util::run(&mut c).context("building the release binaries")?;
    say!("dist: release build took {}", util::secs(started.elapsed()));
    let release = ctx.target_dir().join("release");
    let bin_dir = out.join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    for (_, name) in BINARIES {
        let src = release.join(name);
        let dst = bin_dir.join(name);
        // Debug info goes; symbols stay, so a panic's backtrace still names functions.
        util::run(
            util::cmd("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dst)
                .arg(&src),
        )
        .with_context(|| format!("stripping {}", src.display()))?;
    }
    Ok(bin_dir)
}

/// The newest `GLIBC_x.y` version any binary imports.
fn glibc_requirement(bin_dir: &Path) -> Result<String> {
    let mut newest: Option<(u32, u32)> = None;
    for (_, name) in BINARIES {
        let out = util::output(util::cmd("objdump").arg("-T").arg(bin_dir.join(name)))?;
        for v in out.split_whitespace().filter_map(|w| {
            let w = w.trim_start_matches('(').trim_end_matches(')');
            let (maj, min) = w.strip_prefix("GLIBC_")?.split_once('.')?;
            let min = min.split('.').next()?;
            Some((maj.parse().ok()?, min.parse().ok()?))
        }) {
            newest = newest.max(Some(v));
        }
    }
    let (maj, min) = newest.context("the binaries import no GLIBC_ symbol version")?;
    Ok(format!("{maj}.{min}"))
}

fn source_date_epoch(ctx: &Ctx) -> u64 {
    util::output(
        util::cmd("git")
            .current_dir(&ctx.root)
            .args(["log", "-1", "--format=%ct"]),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn git_commit(ctx: &Ctx) -> String {
    util::output(
        util::cmd("git")
            .current_dir(&ctx.root)
            .args(["rev-parse", "HEAD"]),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}

/// The plain-binaries archive: `bin/`, the units and the example policy.
fn plain_tarball(ctx: &Ctx, bin_dir: &Path, out: &Path, epoch: u64) -> Result<PathBuf> {
    use tar::{Meta, Tar};
    let top = format!("belay-{VERSION}");
    let path = out.join(format!("{top}-x86_64-linux-gnu.tar.gz"));
    let mut t = Tar::new(Vec::new());
    t.dir(&top, Meta::root(0o755, epoch))?;
    t.dir(&format!("{top}/bin"), Meta::root(0o755, epoch))?;
    for (_, name) in BINARIES {
        let data = fs::read(bin_dir.join(name))?;
        t.file(
            &format!("{top}/bin/{name}"),
            Meta::root(0o755, epoch),
            &data,
        )?;
    }
    for (src, dst) in [
        (
            "deploy/systemd/belay-agent.service",
            "systemd/belay-agent.service",
        ),
        (
            "deploy/systemd/belay-server.service",
            "systemd/belay-server.service",
        ),
        ("deploy/policy/example.yaml", "policy/example.yaml"),
    ] {
        let data = fs::read(ctx.root.join(src)).with_context(|| format!("reading {src}"))?;
        t.file(&format!("{top}/{dst}"), Meta::root(0o644, epoch), &data)?;
    }
    gzip_to(&t.finish()?, &path)?;
    Ok(path)
}

/// Writes `data` gzip-compressed (`gzip -n`: no name or time in the header).
pub fn gzip_to(data: &[u8], path: &Path) -> Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut child = util::cmd("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting gzip")?;
    child.stdin.take().context("gzip stdin")?.write_all(data)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    Ok(())
}

/// `sha256sum` of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = util::output(util::cmd("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum printed nothing for {}", path.display()))
}

fn write_checksums(dir: &Path, files: &[PathBuf]) -> Result<()> {
    let mut s = String::new();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        s.push_str(&format!("{}  {}\n", sha256_file(f)?, rel.display()));
    }
    fs::write(dir.join("SHA256SUMS"), s).context("writing SHA256SUMS")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
