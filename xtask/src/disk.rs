//! Where the build goes when the disk is short.
//!
//! A clean `xtask test` writes several GB (target dir, VM images, PostgreSQL clusters
//! and other test scratch). Machines of this kind have been seen with a few hundred MB
//! free on `/` while RAM (24 GB) sat idle, and a build that fails half-way with
//! "No space left on device" says nothing useful. So before building, xtask compares the
//! free space with what a clean build needs and, when the disk cannot hold it but the
//! RAM-backed `/dev/shm` can (with room left for the VMs), builds there instead, and
//! says so. Otherwise it says plainly that the build will likely run out of space.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{self, say};

const GIB: u64 = 1 << 30;

/// Disk a clean `cargo xtask test` needs: the target dir measured 2.3 GB with the
/// workspace's dev profile (line tables only) and no incremental cache (11 GB before),
/// plus VM images (0.4 GB) and test scratch, with a margin.
pub const CLEAN_BUILD_NEEDS: u64 = 4 * GIB;

/// RAM kept free for everything else when the build lives in RAM: two VMs of 2 GB, the
/// host tests' PostgreSQL clusters and servers, and the page cache they lean on.
const RAM_RESERVE: u64 = 8 * GIB;

/// The RAM-backed filesystem tried when the disk is short.
const TMPFS: &str = "/dev/shm";

/// Where to build, and where tests keep their scratch files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub target: PathBuf,
    /// `Some` when TMPDIR must move too (the disk is short).
    pub tmpdir: Option<PathBuf>,
}

/// What is known about the machine, read once so the decision is testable.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    /// Free bytes on the filesystem holding the workspace's target dir.
    pub disk_free: u64,
    /// Bytes the target dir already holds (a warm build needs less).
    pub target_used: u64,
    /// Free bytes on [`TMPFS`], if it is a tmpfs.
    pub tmpfs_free: Option<u64>,
    /// MemAvailable.
    pub mem_available: u64,
}

/// The workspace target dir unless the disk is short and RAM can take the build.
pub fn placement(root: &Path) -> Placement {
    let target = root.join("target");
    let Some(space) = measure(&target) else {
        return Placement {
            target,
            tmpdir: None,
        };
    };
    let choice = decide(&target, &space, CLEAN_BUILD_NEEDS);
    let need = CLEAN_BUILD_NEEDS.saturating_sub(space.target_used);
    if choice.tmpdir.is_some() {
        say!(
            "only {} free on the disk holding {}, and a build needs about {}: building in \
             {} instead (RAM-backed tmpfs, {} free; it is gone after a reboot)",
            gib(space.disk_free),
            target.display(),
            gib(need),
            choice.target.display(),
            gib(space.tmpfs_free.unwrap_or(0)),
        );
    } else if space.disk_free < need {
        say!(
            "warning: only {} free on the disk holding {}, and a build needs about {}; \
             {} cannot take it either, so this will likely fail with \"No space left on \
             device\"",
            gib(space.disk_free),
            target.display(),
            gib(need),
            TMPFS
        );
    }
    choice
}

/// The decision itself: the disk if it holds what is still needed; else the tmpfs if it
/// holds that and leaves [`RAM_RESERVE`] of memory; else the disk anyway.
pub fn decide(target: &Path, space: &Space, needs: u64) -> Placement {
    let need = needs.saturating_sub(space.target_used);
    let on_disk = Placement {
        target: target.to_path_buf(),
        tmpdir: None,
    };
    if space.disk_free >= need {
        return on_disk;
    }
    // The whole build moves, so the tmpfs needs the clean figure, not the remainder.
    match space.tmpfs_free {
        Some(free) if free >= needs && space.mem_available >= needs + RAM_RESERVE => {
            let base = Path::new(TMPFS).join(format!("belay-{}", short_hash(target)));
            Placement {
                target: base.join("target"),
                tmpdir: Some(base.join("tmp")),
            }
        }
        _ => on_disk,
    }
}

fn measure(target: &Path) -> Option<Space> {
    // The target dir may not exist yet on a fresh clone: ask about its parent.
    let probe = if target.exists() {
        target
    } else {
        target.parent()?
    };
    Some(Space {
        disk_free: df_avail(probe)?,
        target_used: du(target),
        tmpfs_free: is_tmpfs(Path::new(TMPFS))
            .then(|| df_avail(Path::new(TMPFS)))
            .flatten(),
        mem_available: mem_available()?,
    })
}

fn df_avail(path: &Path) -> Option<u64> {
    let out = util::output(util::cmd("df").args(["--output=avail", "-B1"]).arg(path)).ok()?;
    out.lines().nth(1)?.trim().parse().ok()
}

/// A tmpfs that may hold executables (test binaries run from the target dir).
fn is_tmpfs(path: &Path) -> bool {
    util::output(
        util::cmd("findmnt")
            .args(["-n", "-o", "FSTYPE,OPTIONS", "--target"])
            .arg(path),
    )
    .map(|out| usable_tmpfs(&out))
    .unwrap_or(false)
}

fn usable_tmpfs(findmnt: &str) -> bool {
    let mut cols = findmnt.split_whitespace();
    cols.next() == Some("tmpfs") && !cols.next().unwrap_or("").split(',').any(|o| o == "noexec")
}

/// Bytes under `dir` (apparent sizes; 0 when it does not exist).
fn du(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn mem_available() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Distinct workspaces get distinct tmpfs directories.
fn short_hash(p: &Path) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(disk_free: u64, target_used: u64, tmpfs_free: Option<u64>, mem: u64) -> Space {
        Space {
            disk_free,
            target_used,
            tmpfs_free,
            mem_available: mem,
        }
    }

    const T: &str = "/w/target";

    #[test]
    fn enough_disk_builds_in_the_workspace() {
        let p = decide(
            Path::new(T),
            &space(50 * GIB, 0, Some(20 * GIB), 22 * GIB),
            8 * GIB,
        );
        assert_eq!(p.target, Path::new(T));
        assert_eq!(p.tmpdir, None);
    }

    #[test]
    fn a_warm_target_dir_needs_only_the_rest() {
        let p = decide(
            Path::new(T),
            &space(2 * GIB, 7 * GIB, Some(20 * GIB), 22 * GIB),
            8 * GIB,
        );
        assert_eq!(p.target, Path::new(T));
    }

    #[test]
    fn a_short_disk_moves_build_and_scratch_to_the_tmpfs() {
        let p = decide(
            Path::new(T),
            &space(300 << 20, 0, Some(20 * GIB), 22 * GIB),
            8 * GIB,
        );
        assert!(p.target.starts_with(TMPFS), "{p:?}");
        assert!(p.target.ends_with("target"));
        assert_eq!(
            p.tmpdir.as_deref().map(|t| t.starts_with(TMPFS)),
            Some(true)
        );
    }

    #[test]
    fn the_tmpfs_is_not_used_when_ram_would_run_short() {
        // 12 GB available: the build's 8 leaves less than the reserve for the VMs.
        let p = decide(
            Path::new(T),
            &space(300 << 20, 0, Some(20 * GIB), 12 * GIB),
            8 * GIB,
        );
        assert_eq!(p.target, Path::new(T));
        let p = decide(Path::new(T), &space(300 << 20, 0, None, 22 * GIB), 8 * GIB);
        assert_eq!(p.target, Path::new(T));
    }

    #[test]
    fn mem_available_is_read_in_kilobytes() {
        let info = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(info), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_noexec_tmpfs_is_not_used() {
        assert!(usable_tmpfs("tmpfs  rw,relatime,size=24683656k\n"));
        assert!(!usable_tmpfs("tmpfs  rw,nosuid,nodev,noexec,relatime\n"));
        assert!(!usable_tmpfs("ext4   rw,relatime\n"));
    }

    #[test]
    fn workspaces_get_their_own_tmpfs_directory() {
        assert_ne!(
            short_hash(Path::new("/a/target")),
            short_hash(Path::new("/b/target"))
        );
        assert_eq!(
            short_hash(Path::new("/a/target")),
            short_hash(Path::new("/a/target"))
        );
    }
}
