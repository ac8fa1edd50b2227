//! A small ustar writer: image layers and archives need exact owners, modes and times
//! (the server's state directory belongs to uid 65532, every mtime is the commit's), which
//! GNU tar gives only from a staging tree owned the same way.

use std::io::{self, Write};

/// One entry's metadata.
#[derive(Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl Meta {
    pub fn root(mode: u32, mtime: u64) -> Self {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime,
        }
    }
}

/// Writes ustar entries to `W`; [`Tar::finish`] adds the two zero blocks.
pub struct Tar<W: Write> {
    out: W,
}

impl<W: Write> Tar<W> {
    pub fn new(out: W) -> Self {
        Tar { out }
    }

    pub fn dir(&mut self, path: &str, meta: Meta) -> io::Result<()> {
        let p = format!("{}/", path.trim_end_matches('/'));
        self.header(&p, meta, 0, b'5', "")
    }

    pub fn file(&mut self, path: &str, meta: Meta, data: &[u8]) -> io::Result<()> {
        self.header(path, meta, data.len() as u64, b'0', "")?;
        self.out.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&vec![0; pad])
    }

    pub fn symlink(&mut self, path: &str, target: &str, mtime: u64) -> io::Result<()> {
        self.header(path, Meta::root(0o777, mtime), 0, b'2', target)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, path: &str, m: Meta, size: u64, kind: u8, link: &str) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        let mut h = [0u8; 512];
        let (prefix, name) = split_path(path)?;
        put(&mut h[0..100], name.as_bytes())?;
        octal(&mut h[100..108], u64::from(m.mode & 0o7777))?;
        octal(&mut h[108..116], u64::from(m.uid))?;
        octal(&mut h[116..124], u64::from(m.gid))?;
        octal(&mut h[124..136], size)?;
        octal(&mut h[136..148], m.mtime)?;
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        put(&mut h[157..257], link.as_bytes())?;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let user = if m.uid == 0 { "root" } else { "" };
        put(&mut h[265..297], user.as_bytes())?;
        put(&mut h[297..329], user.as_bytes())?;
        put(&mut h[345..500], prefix.as_bytes())?;
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }
}

/// ustar keeps 100 bytes of name and 155 of prefix, split at a `/`.
fn split_path(path: &str) -> io::Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    for (i, _) in path.match_indices('/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Ok((prefix, name));
        }
    }
    Err(io::Error::other(format!("path too long for ustar: {path}")))
}

fn put(field: &mut [u8], v: &[u8]) -> io::Result<()> {
    if v.len() > field.len() {
        return Err(io::Error::other(format!(
            "tar field too long: {}",
            String::from_utf8_lossy(v)
        )));
    }
    field[..v.len()].copy_from_slice(v);
    Ok(())
}

fn octal(field: &mut [u8], v: u64) -> io::Result<()> {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    put(field, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU tar reads back what this writes: names, owners, modes, links and contents.
    #[test]
    fn gnu_tar_lists_it() {
        let dir = std::env::temp_dir().join(format!("xtask-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.tar");
        let mut t = Tar::new(std::fs::File::create(&path).unwrap());
        t.dir(
            "var/lib/x",
            Meta {
                mode: 0o750,
                uid: 65532,
                gid: 65532,
                mtime: 1,
            },
        )
        .unwrap();
        t.file("usr/bin/hello", Meta::root(0o755, 1), b"hi\n")
            .unwrap();
        let long = format!("{}/f", "d".repeat(120));
        t.file(&long, Meta::root(0o644, 1), b"").unwrap();
        t.symlink("bin/sh", "busybox", 1).unwrap();
        t.finish().unwrap();
        let out = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&path)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{list}");
        assert!(list.contains("drwxr-x--- 65532/65532"), "{list}");
        assert!(
            list.contains("-rwxr-xr-x 0/0") && list.contains("usr/bin/hello"),
            "{list}"
        );
        assert!(list.contains(&long), "{list}");
        assert!(list.contains("bin/sh -> busybox"), "{list}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
