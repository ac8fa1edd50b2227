//! Paths the daemon can vouch for: what a rule that lets an action through may match.
//!
//! A process names a file or socket with a string it chose (`..`, `//`, symlinks, a
//! path under mounts of its own making). The daemon resolves that string the way the
//! process's own lookup would, checks that it reaches the very object the kernel
//! reported, and vouches for the object's canonical path, and for the string itself
//! when it is clean.
use std::fs;

use agent_common::UnixPeer;

use crate::task::kernel_dev_to_user;

/// `ioctl(NS_GET_USERNS)`: the user namespace that owns a namespace, as a new fd.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// Whether every mount the process `tgid` sees was made by someone as privileged as
/// the daemon: its mount namespace belongs to the daemon's own user namespace. In a
/// mount namespace an unprivileged process created (inside a user namespace of its
/// own) a bind mount can make any file appear at any path.
pub fn mounts_trusted(tgid: u32) -> bool {
    use std::os::{fd::AsRawFd as _, fd::FromRawFd as _, unix::fs::MetadataExt as _};
    let Ok(mnt) = fs::File::open(format!("/proc/{tgid}/ns/mnt")) else {
        return false;
    };
    // SAFETY: a plain ioctl on an fd we own; it returns a new fd or -1.
    let owner = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
    if owner < 0 {
        return false;
    }
    // SAFETY: a fresh fd, owned from here on.
    let owner = unsafe { fs::File::from_raw_fd(owner) };
    match (owner.metadata(), fs::metadata("/proc/self/ns/user")) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Opens `path` below `dir` with `openat2` (`O_PATH`, never through a magic link such
/// as `/proc/self/...`), `in_root`: as if `dir` were the root (absolute symlinks and
/// `..` stay inside it).
fn open_below(dir: &fs::File, path: &str, in_root: bool) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_MAGICLINKS | if in_root { libc::RESOLVE_IN_ROOT } else { 0 };
    // SAFETY: valid fd, C string and open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    // SAFETY: a fresh fd, owned from here on.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// A path without `.` or `..` segments or empty ones (`//`): as a string, it says where
/// it leads.
fn is_clean(path: &str) -> bool {
    path.split('/')
        .enumerate()
        .all(|(i, seg)| !matches!(seg, "." | "..") && (i == 0 || !seg.is_empty()))
}

/// The paths of the file an exec of `path` by `tgid` runs that the daemon can vouch
/// for; exec rules that grant match only these. Empty when it can vouch for none.
///
/// Vouched for: `path` resolves, as the process would resolve it (in its root, from its
/// cwd; symlinks and `..` followed), to the very file the kernel reported (`ino`,
/// `dev`), and the process's mounts are trusted ([`mounts_trusted`]). Then the file's
/// canonical path (a chroot shows as the directory it is) is vouched for, and so is
/// `path` itself (made absolute) if it is clean: a symlink the host put there, such as
/// `/usr/bin/python3`, names the file it leads to. Files reached through
/// `/proc/self/fd` or a memfd get nothing.
pub fn exec_trusted_paths(tgid: u32, path: &str, ino: u64, dev: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let is_it =
        |md: &fs::Metadata| md.ino() == ino && md.dev() == kernel_dev_to_user(dev) && md.is_file();
    vouched_paths(tgid, path, &is_it)
}

/// The paths of the Unix socket a connect or send of `tgid` to `path` reaches that the
/// daemon can vouch for, as [`exec_trusted_paths`] does for a file: the canonical path
/// of the socket file `path` leads to (so `//run/x.sock`, `/run/./x.sock` and a
/// symlink show as the socket itself), and `path` when it is clean. An abstract name
/// (`@...`) is no file: it is vouched for as it is.
pub fn unix_socket_trusted_paths(tgid: u32, path: &str) -> Vec<String> {
    unix_socket_vouched(tgid, path).0
}

/// [`unix_socket_trusted_paths`], and the identity of the socket file vouched for (the
/// kernel's device number and the inode), which an allow binds: the path is resolved
/// again when the call restarts. An abstract name has none.
pub fn unix_socket_vouched(tgid: u32, path: &str) -> (Vec<String>, Option<UnixPeer>) {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if path.starts_with('@') {
        return (vec![path.to_owned()], None);
    }
    let (paths, md) = vouched(tgid, path, &|md: &fs::Metadata| md.file_type().is_socket());
    let peer = md.map(|md| UnixPeer {
        dev: user_dev_to_kernel(md.dev()),
        armed: 0,
        ino: md.ino(),
    });
    (paths, peer)
}

/// `st_dev` as the kernel's `super_block::s_dev` holds it (major in the top 12 bits).
fn user_dev_to_kernel(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (major << 20) | (minor & 0xf_ffff)
}

fn vouched_paths(tgid: u32, path: &str, is_it: &dyn Fn(&fs::Metadata) -> bool) -> Vec<String> {
    vouched(tgid, path, is_it).0
}

/// The paths vouched for, and the metadata of the file they name.
fn vouched(
    tgid: u32,
    path: &str,
    is_it: &dyn Fn(&fs::Metadata) -> bool,
) -> (Vec<String>, Option<fs::Metadata>) {
    let Some((canonical, md)) = canonical_path(tgid, path, is_it) else {
        return (Vec::new(), None);
    };
    let given = if path.starts_with('/') {
        Some(path.to_owned())
    } else {
        fs::read_link(format!("/proc/{tgid}/cwd"))
            .ok()
            .map(|cwd| cwd.join(path).display().to_string())
    };
    let mut out = vec![canonical];
    if let Some(given) = given
        && is_clean(&given)
        && !out.contains(&given)
    {
        out.push(given);
    }
    (out, Some(md))
}

/// The canonical path of the file `path` leads to for process `tgid`, and that file's
/// metadata, if that file `is_it` and the process's mounts are trusted.
fn canonical_path(
    tgid: u32,
    path: &str,
    is_it: &dyn Fn(&fs::Metadata) -> bool,
) -> Option<(String, fs::Metadata)> {
    use std::os::fd::AsRawFd as _;
    if !mounts_trusted(tgid) {
        return None;
    }
    let file = if path.starts_with('/') {
        let root = fs::File::open(format!("/proc/{tgid}/root")).ok()?;
        open_below(&root, path, true)?
    } else {
        let cwd = fs::File::open(format!("/proc/{tgid}/cwd")).ok()?;
        open_below(&cwd, path, false)?
    };
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let md = fs::metadata(&link).ok()?;
    if !is_it(&md) {
        return None;
    }
    let canonical = fs::read_link(&link).ok()?;
    let canonical = canonical.to_str()?;
    // Unreachable from the daemon's root, or gone: not a path a rule can vouch for.
    (canonical.starts_with('/') && !canonical.ends_with(" (deleted)"))
        .then(|| (canonical.to_owned(), md))
}
