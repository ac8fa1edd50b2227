//! Debian cloud kernels with BPF LSM, fetched from Debian's archive and cached.
//!
//! The current kernel of a release is the one the metapackage `linux-image-cloud-amd64`
//! depends on. Each release gets a private apt configuration under
//! `target/belay-vm/apt/<codename>/` (its own sources file, lists and cache), built from
//! the host's Debian sources with the codename swapped, so the host's apt state is never
//! touched and trixie's index can be read on a bookworm host. Kernels are cached as
//! `target/belay-vm/kernels/<release>/vmlinuz`; a cached kernel needs no network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::Ctx;
use crate::util::{self, say};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// Debian 12 (bookworm) cloud kernel, 6.1.
    #[value(name = "6.1")]
    V6_1,
    /// Debian 13 (trixie) cloud kernel, 6.12.
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::V6_1, Kernel::V6_12];

    pub fn label(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    fn codename(self) -> &'static str {
        match self {
            Kernel::V6_1 => "bookworm",
            Kernel::V6_12 => "trixie",
        }
    }
}

/// A kernel image ready to boot.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// A cpio of the modules the tests load (see [`crate::modules`]), appended to the
    /// initramfs at boot.
    pub modules: PathBuf,
}

const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Returns the kernel image, downloading it the first time.
pub fn ensure(ctx: &Ctx, kernel: Kernel) -> Result<KernelImage> {
    let apt = PrivateApt::prepare(&ctx.vm_dir().join("apt"), kernel.codename())
        .with_context(|| format!("preparing apt configuration for {}", kernel.codename()))?;
    let mut fresh = false;
    if !apt.has_lists() {
        say!(
            "fetching the {} package index (first run only)",
            kernel.codename()
        );
        apt.update()?;
        fresh = true;
    }
    loop {
        match fetch(ctx, &apt, kernel) {
            Ok(image) => return Ok(image),
            Err(e) if !fresh => {
                say!(
                    "{e:#}; refreshing the {} package index and trying again",
                    kernel.codename()
                );
                apt.update()?;
                fresh = true;
            }
            Err(e) => return Err(e),
        }
    }
}

fn fetch(ctx: &Ctx, apt: &PrivateApt, kernel: Kernel) -> Result<KernelImage> {
    let show =
        util::output(
            apt.command("apt-cache")
                .args(["show", "--no-all-versions", METAPACKAGE]),
        )
        .with_context(|| format!("looking up {METAPACKAGE} in {}", kernel.codename()))?;
    let package = image_package_from_depends(&show).with_context(|| {
        format!(
            "{METAPACKAGE} in {} depends on no linux-image-*-cloud-amd64",
            kernel.codename()
        )
    })?;
    let release = package.trim_start_matches("linux-image-").to_string();
    if !release.starts_with(&format!("{}.", kernel.label())) {
        bail!(
            "{METAPACKAGE} in {} points to {package}, not a {} kernel",
            kernel.codename(),
            kernel.label()
        );
    }
    let dir = ctx.vm_dir().join("kernels").join(&release);
    let vmlinuz = dir.join("vmlinuz");
    let modules = dir.join("modules.cpio");
    if vmlinuz.is_file() && modules.is_file() {
        return Ok(KernelImage {
            release,
            vmlinuz,
            modules,
        });
    }

    say!("downloading {package} (first run only)");
    let started = std::time::Instant::now();
    let work = ctx
        .vm_dir()
        .join("kernels")
        .join(format!(".download-{release}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    util::run(
        apt.command("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&work),
    )
    .with_context(|| format!("downloading {package}"))?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    extract_boot(&deb, &work).with_context(|| format!("unpacking {}", deb.display()))?;

    let boot = work.join("boot");
    let src = boot.join(format!("vmlinuz-{release}"));
    if !src.is_file() {
        bail!("{} has no boot/vmlinuz-{release}", deb.display());
    }
    let staged = work.join("staged");
    fs::create_dir_all(&staged)?;
    fs::rename(&src, staged.join("vmlinuz"))?;
    crate::modules::stage(&deb, &work, &staged)
        .with_context(|| format!("taking the SCTP modules from {}", deb.display()))?;
    let config = boot.join(format!("config-{release}"));
    if config.is_file() {
        fs::rename(&config, staged.join("config"))?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staged, &dir).with_context(|| format!("moving the kernel to {}", dir.display()))?;
    let _ = fs::remove_dir_all(&work);
    say!("downloaded {package} in {}", util::secs(started.elapsed()));
    Ok(KernelImage {
        release,
        vmlinuz,
        modules,
    })
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x ./boot`: only the kernel image and its config,
/// not the thousands of modules `dpkg -x` would unpack.
fn extract_boot(deb: &Path, into: &Path) -> Result<()> {
    extract_from_deb(deb, into, &["./boot/vmlinuz-*", "./boot/config-*"])
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x --wildcards PATTERN...` into `into`: only the
/// members named (`*` also matches `/`).
pub fn extract_from_deb(deb: &Path, into: &Path, patterns: &[&str]) -> Result<()> {
    let mut dpkg = util::cmd("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start dpkg-deb")?;
    let stdout = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = util::cmd("tar")
        .args(["-x", "-f", "-", "--wildcards", "--wildcards-match-slash"])
        .args(patterns)
        .current_dir(into)
        .stdin(stdout)
        .status()
        .context("could not start tar")?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.success() {
        bail!("dpkg-deb ({dpkg}) | tar ({tar}) failed extracting {patterns:?}");
    }
    Ok(())
}

/// The `linux-image-<release>` named in the metapackage's Depends line.
fn image_package_from_depends(show: &str) -> Option<String> {
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-") && *name != METAPACKAGE)
        .map(str::to_string)
}

/// apt with its own sources, lists and cache, for one Debian release.
struct PrivateApt {
    sources: PathBuf,
    lists: PathBuf,
    cache: PathBuf,
}

impl PrivateApt {
    fn prepare(base: &Path, codename: &str) -> Result<Self> {
        let dir = base.join(codename);
        let me = PrivateApt {
            sources: dir.join(format!("{codename}.sources")),
            lists: dir.join("lists"),
            cache: dir.join("cache"),
        };
        fs::create_dir_all(me.lists.join("partial"))?;
        fs::create_dir_all(me.cache.join("archives").join("partial"))?;
        let text = sources_for(codename)?;
        let old = fs::read_to_string(&me.sources).unwrap_or_default();
        if old != text {
            // Different sources: the old lists no longer describe them.
            for e in fs::read_dir(&me.lists)?.filter_map(|e| e.ok()) {
                if e.path().is_file() {
                    fs::remove_file(e.path())?;
                }
            }
            fs::write(&me.sources, text)
                .with_context(|| format!("writing {}", me.sources.display()))?;
        }
        Ok(me)
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(&self.lists)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = util::cmd(program);
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        c.arg("-o")
            .arg(opt("Dir::Etc::SourceList", &self.sources))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(opt("Dir::State::Lists", &self.lists))
            .arg("-o")
            .arg(opt("Dir::Cache", &self.cache))
            // Root-owned private directories: no need to drop to the _apt user.
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Acquire::Languages=none"])
            // Only the Packages index is needed, not AppStream metadata.
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn update(&self) -> Result<()> {
        let started = std::time::Instant::now();
        util::run(self.command("apt-get").args(["update", "-q"]))
            .with_context(|| format!("apt-get update with {}", self.sources.display()))?;
        say!("package index fetched in {}", util::secs(started.elapsed()));
        Ok(())
    }
}

/// A deb822 sources file for `codename`, made from the host's Debian entries (same
/// URIs and keyring, codename swapped; only `<codename>`, `-updates` and `-security`).
fn sources_for(codename: &str) -> Result<String> {
    let host = host_codename();
    let mut stanzas = Vec::new();
    if let Some(host) = &host {
        let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            more.sort();
            files.extend(more);
        }
        for f in files {
            let Ok(text) = fs::read_to_string(&f) else {
                continue;
            };
            let name = f.to_string_lossy();
            let entries = if name.ends_with(".sources") {
                parse_deb822(&text)
            } else if name.ends_with(".list") {
                parse_one_line(&text)
            } else {
                continue;
            };
            for e in entries {
                if let Some(s) = e.retarget(host, codename) {
                    stanzas.push(s);
                }
            }
        }
    }
    if stanzas.is_empty() {
        say!("warning: found no Debian entries in the host's apt sources; using deb.debian.org");
        let key = "/usr/share/keyrings/debian-archive-keyring.gpg".to_string();
        stanzas.push(Entry {
            uris: "http://deb.debian.org/debian".into(),
            suites: vec![codename.into(), format!("{codename}-updates")],
            signed_by: Some(key.clone()),
        });
        stanzas.push(Entry {
            uris: "http://deb.debian.org/debian-security".into(),
            suites: vec![format!("{codename}-security")],
            signed_by: Some(key),
        });
    }
    let mut out = String::from("# Generated by `cargo xtask`: kernels for the VM tests.\n");
    for s in stanzas {
        out.push_str("\nTypes: deb\n");
        out.push_str(&format!("URIs: {}\n", s.uris));
        out.push_str(&format!("Suites: {}\n", s.suites.join(" ")));
        out.push_str("Components: main\n");
        if let Some(k) = s.signed_by {
            out.push_str(&format!("Signed-By: {k}\n"));
        }
    }
    Ok(out)
}

fn host_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

#[derive(Debug, PartialEq)]
struct Entry {
    uris: String,
    suites: Vec<String>,
    /// A path, or an inline key block (continuation lines kept as written).
    signed_by: Option<String>,
}

impl Entry {
    /// This entry for another release, if it is one of the host release's own suites.
    fn retarget(&self, host: &str, codename: &str) -> Option<Entry> {
        let suites: Vec<String> = self
            .suites
            .iter()
            .filter_map(|s| match s.strip_prefix(host)? {
                "" | "-updates" | "-security" => Some(s.replacen(host, codename, 1)),
                _ => None,
            })
            .collect();
        (!suites.is_empty()).then(|| Entry {
            uris: self.uris.clone(),
            suites,
            signed_by: self.signed_by.clone(),
        })
    }
}

fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(line);
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let enabled = get("enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let is_deb = get("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let (Some(uris), Some(suites)) = (get("uris"), get("suites")) else {
            continue;
        };
        if enabled && is_deb {
            out.push(Entry {
                uris,
                suites: suites.split_whitespace().map(str::to_string).collect(),
                signed_by: get("signed-by"),
            });
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                if let Some(v) = o.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Entry {
            uris: uri.into(),
            suites: vec![suite.into()],
            signed_by,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_line() {
        let show = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(
            image_package_from_depends(show).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn deb822_retarget() {
        let text = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates bookworm-backports\nComponents: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: https://example.invalid/node\nSuites: nodistro\n\
                    Components: main\n";
        let entries = parse_deb822(text);
        assert_eq!(entries.len(), 2);
        let t = entries[0].retarget("bookworm", "trixie").unwrap();
        assert_eq!(t.suites, ["trixie", "trixie-updates"]);
        assert_eq!(t.uris, "http://deb.debian.org/debian");
        assert!(entries[1].retarget("bookworm", "trixie").is_none());
    }

    #[test]
    fn one_line_sources() {
        let text = "deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\n\
                    # deb http://x bookworm main\ndeb http://m/debian-security bookworm-security main\n";
        let e = parse_one_line(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(
            e[1].retarget("bookworm", "trixie").unwrap().suites,
            ["trixie-security"]
        );
    }
}
