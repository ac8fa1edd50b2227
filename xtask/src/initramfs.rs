//! A newc cpio initramfs written directly from Rust.
//!
//! ELF files are copied with their debug info stripped (`strip --strip-debug`), and every
//! shared library `ldd` lists for them (the dynamic loader included) is copied to the same
//! path in the image.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::util::{self, say};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug)]
enum Node {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// The contents of an initramfs, keyed by path without the leading `/`.
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
    scratch: PathBuf,
}

impl Initramfs {
    /// `scratch` is a directory for stripped copies of binaries.
    pub fn new(scratch: &Path) -> Result<Self> {
        fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
        Ok(Initramfs {
            nodes: BTreeMap::new(),
            scratch: scratch.to_path_buf(),
        })
    }

    fn key(path: &str) -> String {
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    }

    fn insert(&mut self, path: &str, node: Node) {
        let key = Self::key(path);
        let mut parent = Path::new(&key).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.nodes
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = p.parent();
        }
        self.nodes.insert(key, node);
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(path, Node::Dir);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.insert(
            path,
            Node::File {
                mode,
                data: data.into(),
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(path, Node::CharDev { major, minor });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&Self::key(path))
    }

    /// Copies a host file or directory tree to `guest`. ELF files are stripped of debug
    /// info and bring their shared libraries along.
    pub fn add_host_path(&mut self, host: &Path, guest: &str) -> Result<()> {
        let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        if meta.is_dir() {
            self.dir(guest);
            let mut entries: Vec<_> = fs::read_dir(host)
                .with_context(|| format!("listing {}", host.display()))?
                .filter_map(|e| e.ok())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                self.add_host_path(
                    &e.path(),
                    &format!("{}/{name}", guest.trim_end_matches('/')),
                )?;
            }
            return Ok(());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        if !data.starts_with(b"\x7fELF") {
            self.file(guest, mode, data);
            return Ok(());
        }
        let stripped = self.strip_debug(host).unwrap_or_else(|e| {
            say!("warning: {e:#}; copying {} unstripped", host.display());
            data
        });
        self.file(guest, mode, stripped);
        self.add_libraries(host)
    }

    fn strip_debug(&self, host: &Path) -> Result<Vec<u8>> {
        let name = host.file_name().context("file name")?;
        let out = self.scratch.join(name);
        util::run(
            util::cmd("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&out)
                .arg(host),
        )?;
        let data = fs::read(&out)?;
        let _ = fs::remove_file(&out);
        Ok(data)
    }

    /// Adds the libraries `ldd` lists for `elf` (nothing for static binaries).
    fn add_libraries(&mut self, elf: &Path) -> Result<()> {
        let out = util::cmd("ldd")
            .arg(elf)
            .output()
            .with_context(|| format!("could not run ldd on {}", elf.display()))?;
        // ldd exits 1 for static binaries ("not a dynamic executable").
        let text = String::from_utf8_lossy(&out.stdout);
        for lib in parse_ldd(&text) {
            if self.contains(&lib) {
                continue;
            }
            let data =
                fs::read(&lib).with_context(|| format!("reading {lib} (for {})", elf.display()))?;
            self.file(&lib, 0o755, data);
        }
        Ok(())
    }

    /// Total bytes of file contents.
    pub fn payload_bytes(&self) -> usize {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive (newc format, uncompressed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::new(file);
        let mut ino = 1u32;
        for (name, node) in &self.nodes {
            ino += 1;
            match node {
                Node::Dir => write_entry(&mut w, name, ino, S_IFDIR | 0o755, 2, (0, 0), b"")?,
                Node::File { mode, data } => {
                    write_entry(&mut w, name, ino, S_IFREG | mode, 1, (0, 0), data)?
                }
                Node::Symlink(t) => {
                    write_entry(&mut w, name, ino, S_IFLNK | 0o777, 1, (0, 0), t.as_bytes())?
                }
                Node::CharDev { major, minor } => {
                    write_entry(&mut w, name, ino, S_IFCHR | 0o600, 1, (*major, *minor), b"")?
                }
            }
        }
        write_entry(&mut w, "TRAILER!!!", 0, 0, 1, (0, 0), b"")?;
        w.flush()?;
        drop(w);
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }
}

fn write_entry(
    w: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &[u8],
) -> Result<()> {
    let size = u32::try_from(data.len()).context("file too large for cpio")?;
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.write_all(&[0; 3][..pad4(110 + namesize)])?;
    w.write_all(data)?;
    w.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Absolute library paths from `ldd` output.
fn parse_ldd(text: &str) -> Vec<String> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    libs
}

/// Fails unless `path` exists (for clearer errors than a failed read deep inside).
pub fn require_file(path: &Path, what: &str) -> Result<()> {
    if !path.is_file() {
        bail!("{what} not found at {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn newc_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        let mut fs_ = Initramfs::new(&dir).unwrap();
        fs_.file("/a/b/c.txt", 0o644, "hello");
        fs_.symlink("/bin/sh", "busybox");
        let out = dir.join("t.cpio");
        fs_.write(&out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        // Parents come before children.
        let a = text.find("a\0").unwrap();
        let ab = text.find("a/b\0").unwrap();
        let abc = text.find("a/b/c.txt\0").unwrap();
        assert!(a < ab && ab < abc);
        assert!(text.contains("TRAILER!!!"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
