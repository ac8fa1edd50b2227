//! What the daemon learns about a paused task from /proc, for the reviewer.
use std::{fs, io::IoSliceMut};

use agent_common::{EXEC_IMAGE_MAX, ExecExpect, image_hash};
use belay_proto::{display::env, domain::limits};
use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

const SYS_EXECVE: u64 = 59;
const SYS_EXECVEAT: u64 = 322;
const MAX_ARGS: usize = 256;
const MAX_ARG_BYTES: usize = 4096;
/// The last entry of a vector that was cut.
const CUT: &str = "…";

/// How much of an environment is kept for the reviewer, and how far it is searched.
struct EnvLimits {
    /// Entries and bytes kept, the cut marker included.
    entries: usize,
    bytes: usize,
    /// Bytes of one entry.
    each: usize,
    /// Entries looked at in all: past what is kept, the variables that change what a
    /// program does are still looked for (each entry costs a read or two).
    scan: usize,
}

/// What belay-server accepts (`domain::limits::MAX_ENV_*`), searched 16 Ki entries deep.
const ENV_LIMITS: EnvLimits = EnvLimits {
    entries: limits::MAX_ENV_ENTRIES,
    bytes: limits::MAX_ENV_TOTAL_LEN,
    each: limits::MAX_ARG_LEN,
    scan: 16 * 1024,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContext {
    pub ppid: Option<u32>,
    pub cwd: Option<String>,
}

pub fn context(tgid: u32) -> TaskContext {
    let ppid = fs::read_to_string(format!("/proc/{tgid}/stat"))
        .ok()
        .and_then(|s| parse_stat_ppid(&s));
    let cwd = fs::read_link(format!("/proc/{tgid}/cwd"))
        .ok()
        .map(|p| p.display().to_string());
    TaskContext { ppid, cwd }
}

/// A kernel `dev_t` (`MKDEV`: major in the top 12 bits, minor in the low 20) as
/// userspace's `st_dev` encodes it.
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    let (major, minor) = (u64::from(dev >> 20), u64::from(dev & 0xf_ffff));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The file an exec will run, as a path in the process's own view, when the path can be
/// confirmed to name that very file (inode and device from the kernel). `path` is what
/// the process passed: `/proc/self/exe`, a relative path or one inside a container
/// would otherwise tell a reviewer little or mislead.
pub fn exec_file(tgid: u32, path: &str, ino: u64, dev: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let probe = probe_path(tgid, path);
    let shown = if path.starts_with("/proc/self/") {
        fs::read_link(&probe).map_or_else(|_| path.to_owned(), |t| t.display().to_string())
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        let cwd = fs::read_link(format!("/proc/{tgid}/cwd")).ok()?;
        cwd.join(path).display().to_string()
    };
    let md = fs::metadata(&probe).ok()?;
    (md.ino() == ino && md.dev() == kernel_dev_to_user(dev)).then_some(shown)
}

/// Where the daemon finds the file `path` names for process `tgid`: `/proc/self/...` as
/// that process's own, an absolute path through its root (right inside containers and
/// chroots), a relative one from its cwd.
fn probe_path(tgid: u32, path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/proc/self/") {
        format!("/proc/{tgid}/{rest}")
    } else if path.starts_with('/') {
        format!("/proc/{tgid}/root{path}")
    } else {
        format!("/proc/{tgid}/cwd/{path}")
    }
}

/// `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The state letter of a task (`T` when stopped), from /proc.
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// The argv of an execve/execveat that thread `pid` of `tgid` is stopped in, read from
/// its memory. `None` when the thread is not in such a call or its memory is unreadable.
pub fn exec_argv(tgid: u32, pid: u32) -> Option<Vec<String>> {
    exec_image(tgid, pid, false).argv
}

/// The environment (`NAME=VALUE` each) of the execve/execveat that thread `pid` of
/// `tgid` is stopped in: envp, execve's third argument and execveat's fourth. Within
/// what belay-server accepts (a last entry `…` says entries were left out); the
/// variables that change what the program does (`display::env`: `LD_PRELOAD`, `PATH`,
/// `GIT_*`, ...) are kept before any other, wherever they are, so that padding the
/// environment cannot push them out of the reviewer's sight. Unmasked: mask before
/// showing it to anyone.
pub fn exec_env(tgid: u32, pid: u32) -> Option<Vec<String>> {
    exec_image(tgid, pid, false).env
}

/// What a stopped exec will run with, read once: what a reviewer is shown and what the
/// kernel will check the new image against are the same bytes.
#[derive(Debug, Clone, Default)]
pub struct ExecImage {
    /// argv, for display (a last `…` marks a cut).
    pub argv: Option<Vec<String>>,
    /// The environment, unmasked, for display (a last `…` marks a cut).
    pub env: Option<Vec<String>>,
    /// What the new image must carry, when all of argv and the environment were read
    /// and fit the kernel's check; `None` otherwise, and then no allow may be given.
    pub expect: Option<ExecExpect>,
}

/// Reads argv and the environment of the exec thread `pid` of `tgid` is stopped in.
/// `script`: the file starts with `#!`, so the kernel will put the interpreter's
/// arguments before argv[1..] and the check covers only those.
pub fn exec_image(tgid: u32, pid: u32, script: bool) -> ExecImage {
    let Some((argv_ptr, envp)) = exec_pointers(tgid, pid) else {
        return ExecImage::default();
    };
    let pid = Pid::from_raw(pid as i32);
    let argv = read_vector(pid, argv_ptr, MAX_ARGS, usize::MAX, MAX_ARG_BYTES);
    // Searched deep for what changes the program (shown within what belay-server
    // accepts); an entry longer than MAX_ARG_BYTES is cut, and then nothing is granted.
    let env = read_vector(pid, envp, ENV_LIMITS.scan, usize::MAX, MAX_ARG_BYTES);
    let expect = match (&argv, &env) {
        (Some(a), Some(e)) => expect_for(a, e, script),
        _ => None,
    };
    ExecImage {
        argv: argv.map(|v| v.display()),
        env: env.map(|v| select_env(&v, &ENV_LIMITS)),
        expect,
    }
}

/// The area of NUL-terminated strings the kernel builds from `items`.
fn area<'a>(items: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(item);
        out.push(0);
    }
    out
}

fn expect_for(argv: &RawVector, env: &RawVector, script: bool) -> Option<ExecExpect> {
    if argv.cut || env.cut {
        return None;
    }
    let args = if script {
        area(argv.items.iter().skip(1))
    } else if argv.items.is_empty() {
        // The kernel gives an empty argv an empty argv[0].
        vec![0]
    } else {
        area(&argv.items)
    };
    let env = area(&env.items);
    let max = EXEC_IMAGE_MAX as usize;
    if args.len() > max || env.len() > max {
        return None;
    }
    Some(ExecExpect {
        args_hash: image_hash(&args),
        env_hash: image_hash(&env),
        args_len: args.len() as u32,
        env_len: env.len() as u32,
        bprm: 0,
    })
}

/// Whether the file an exec of `path` by `tgid` runs (`ino`, `dev`) starts with `#!`;
/// false when that file cannot be found, so all of argv is checked.
pub fn is_script(tgid: u32, path: &str, ino: u64, dev: u32) -> bool {
    use std::{io::Read as _, os::unix::fs::MetadataExt as _};
    let Ok(mut f) = fs::File::open(probe_path(tgid, path)) else {
        return false;
    };
    // Only the file the kernel is about to run says what it is.
    let same = f
        .metadata()
        .is_ok_and(|md| md.ino() == ino && md.dev() == kernel_dev_to_user(dev));
    let mut head = [0u8; 2];
    same && f.read_exact(&mut head).is_ok() && &head == b"#!"
}

/// See [`exec_env`]: the environment, with a search `limits.scan` entries deep (what
/// [`exec_image`] reads, as the tests see it).
#[cfg(test)]
fn read_env(pid: Pid, at: u64, limits: &EnvLimits) -> Option<Vec<String>> {
    read_vector(pid, at, limits.scan, usize::MAX, MAX_ARG_BYTES).map(|raw| select_env(&raw, limits))
}

/// What of an environment a reviewer is shown, within `limits`. Kept entries stay in
/// their order; a variable that changes the program takes the room of the last
/// ordinary entries kept before it.
fn select_env(raw: &RawVector, limits: &EnvLimits) -> Vec<String> {
    let (max_entries, max_bytes) = (limits.entries - 1, limits.bytes - CUT.len());
    // (entry, changes the program)
    let mut kept: Vec<(String, bool)> = Vec::new();
    let mut bytes = 0usize;
    let mut left_out = false;
    for item in &raw.items {
        let entry = clip(String::from_utf8_lossy(item).into_owned(), limits.each);
        let program = env::entry_changes_program(&entry);
        let fits =
            |count: usize, bytes: usize| count < max_entries && bytes + entry.len() <= max_bytes;
        // Ordinary entries make room only if enough of it can be made.
        let (others, others_bytes) = kept
            .iter()
            .filter(|(_, program)| !program)
            .fold((0, 0), |(n, b), (e, _)| (n + 1, b + e.len()));
        if program && fits(kept.len() - others, bytes - others_bytes) {
            while !fits(kept.len(), bytes) {
                let Some(last) = kept.iter().rposition(|(_, program)| !program) else {
                    break;
                };
                bytes -= kept.remove(last).0.len();
                left_out = true;
            }
        }
        if fits(kept.len(), bytes) {
            bytes += entry.len();
            kept.push((entry, program));
        } else {
            left_out = true;
        }
    }
    let mut out: Vec<String> = kept.into_iter().map(|(entry, _)| entry).collect();
    if raw.cut || left_out {
        out.push(CUT.into());
    }
    out
}

/// At most `max` bytes, the cut marked with [`CUT`].
fn clip(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max - CUT.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT);
    s
}

fn exec_pointers(tgid: u32, pid: u32) -> Option<(u64, u64)> {
    let line = fs::read_to_string(format!("/proc/{tgid}/task/{pid}/syscall")).ok()?;
    let mut fields = line.split_whitespace();
    let nr: u64 = fields.next()?.parse().ok()?;
    let args: Vec<u64> = fields
        .take(6)
        .filter_map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .collect();
    match nr {
        SYS_EXECVE => Some((*args.get(1)?, *args.get(2)?)),
        SYS_EXECVEAT => Some((*args.get(2)?, *args.get(3)?)),
        _ => None,
    }
}

/// Strings read from another process, raw.
struct RawVector {
    items: Vec<Vec<u8>>,
    /// More entries or bytes than were read (or a string longer than [`MAX_ARG_BYTES`]).
    cut: bool,
}

impl RawVector {
    fn display(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .items
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if self.cut {
            out.push("…".into());
        }
        out
    }
}

/// A NULL-terminated array of C strings in another process: at most `max` entries and
/// `max_total` bytes, each string at most `max_each`. A NULL array is empty (Linux
/// accepts `envp == NULL`).
fn read_vector(
    pid: Pid,
    at: u64,
    max: usize,
    max_total: usize,
    max_each: usize,
) -> Option<RawVector> {
    let mut out = RawVector {
        items: Vec::new(),
        cut: false,
    };
    if at == 0 {
        return Some(out);
    }
    let mut total = 0usize;
    for i in 0..max {
        let mut ptr = [0u8; 8];
        read_remote(pid, at + 8 * i as u64, &mut ptr)?;
        let ptr = u64::from_ne_bytes(ptr);
        if ptr == 0 {
            return Some(out);
        }
        let (s, whole) = read_c_string(pid, ptr, max_each)?;
        total += s.len();
        if total > max_total {
            break;
        }
        out.items.push(s);
        if !whole {
            out.cut = true;
            return Some(out);
        }
    }
    out.cut = true;
    Some(out)
}

fn read_remote(pid: Pid, addr: u64, buf: &mut [u8]) -> Option<usize> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote).ok()
}

/// Reads a NUL-terminated string page by page: a string near the end of a mapping must
/// not fail because a fixed-size read crossed into an unmapped page. The bool is false
/// when the string was longer than `max` bytes and was cut (shown with `…`).
fn read_c_string(pid: Pid, addr: u64, max: usize) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let to_page_end = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; to_page_end.min(max - out.len())];
        let n = read_remote(pid, at, &mut chunk)?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some((out, true));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    out.extend_from_slice("…".as_bytes());
    Some((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_to_kernel_dev(dev: u64) -> u32 {
        let major = ((dev >> 8) & 0xfff) as u32;
        let minor = ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32;
        (major << 20) | minor
    }

    #[test]
    fn kernel_dev_numbers_convert_to_st_dev() {
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), 0x801);
        // A minor above 255 splits across the encoding.
        assert_eq!(
            kernel_dev_to_user((259 << 20) | 300),
            (300 & 0xff) | (259 << 8) | (256 << 12)
        );
    }

    #[test]
    fn exec_file_names_the_file_the_kernel_identified() {
        use std::os::unix::fs::MetadataExt as _;
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let md = fs::metadata(&exe).unwrap();
        let dev = user_to_kernel_dev(md.dev());
        assert_eq!(
            exec_file(me, "/proc/self/exe", md.ino(), dev),
            Some(exe.display().to_string()),
            "/proc/self/exe is shown as the file it is"
        );
        assert_eq!(
            exec_file(me, exe.to_str().unwrap(), md.ino(), dev),
            Some(exe.display().to_string())
        );
        // Relative to the process's cwd (cargo runs tests in the crate directory).
        let rel = fs::metadata("Cargo.toml").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            exec_file(me, "Cargo.toml", rel.ino(), user_to_kernel_dev(rel.dev())),
            Some(cwd.join("Cargo.toml").display().to_string())
        );
        // A path that names another file than the kernel's is not confirmed.
        assert_eq!(exec_file(me, "Cargo.toml", md.ino(), dev), None);
        assert_eq!(exec_file(me, "/nonexistent", md.ino(), dev), None);
    }

    #[test]
    fn ppid_survives_odd_comm() {
        assert_eq!(parse_stat_ppid("12 (a) b (c)) S 7 12 12 0"), Some(7));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn own_context_and_state() {
        let me = std::process::id();
        let ctx = context(me);
        assert_eq!(ctx.ppid, Some(std::os::unix::process::parent_id()));
        assert_eq!(
            ctx.cwd.as_deref(),
            Some(std::env::current_dir().unwrap().to_str().unwrap())
        );
    }

    #[test]
    fn state_shows_a_stopped_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let pid_t = Pid::from_raw(pid as i32);
        let wait_for = |want: char| {
            (0..200).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                state(pid) == Some(want)
            })
        };
        assert!(wait_for('S'), "sleeping child shows S");
        nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGSTOP).unwrap();
        assert!(wait_for('T'), "stopped child shows T");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn reads_string_vectors_with_caps() {
        let strings: Vec<std::ffi::CString> = ["A=1", "B=22", "C=333"]
            .iter()
            .map(|s| std::ffi::CString::new(*s).unwrap())
            .collect();
        let mut ptrs: Vec<u64> = strings.iter().map(|s| s.as_ptr() as u64).collect();
        ptrs.push(0);
        let me = Pid::this();
        let at = ptrs.as_ptr() as u64;
        let read = |at, max, total| read_vector(me, at, max, total, MAX_ARG_BYTES).unwrap();
        let all = read(at, 16, usize::MAX);
        assert_eq!(all.display(), ["A=1", "B=22", "C=333"]);
        assert!(!all.cut);
        assert_eq!(read(at, 2, usize::MAX).display(), ["A=1", "B=22", "…"]);
        assert_eq!(read(at, 16, 7).display(), ["A=1", "B=22", "…"]);
        assert!(read(at, 16, 7).cut);
        assert_eq!(read(0, 16, 100).display(), Vec::<String>::new());
    }

    #[test]
    fn the_expected_image_is_the_kernels_string_areas() {
        let v = |items: &[&str], cut| RawVector {
            items: items.iter().map(|s| s.as_bytes().to_vec()).collect(),
            cut,
        };
        let e = expect_for(&v(&["echo", "x"], false), &v(&["A=1"], false), false).unwrap();
        assert_eq!(e.args_len, 7);
        assert_eq!(e.args_hash, image_hash(b"echo\0x\0"));
        assert_eq!((e.env_len, e.env_hash), (4, image_hash(b"A=1\0")));
        // A script: the interpreter's arguments come first; only argv[1..] is checked.
        let s = expect_for(&v(&["./s.sh", "x"], false), &v(&[], false), true).unwrap();
        assert_eq!((s.args_len, s.args_hash), (2, image_hash(b"x\0")));
        assert_eq!((s.env_len, s.env_hash), (0, image_hash(b"")));
        // An empty argv gets an empty argv[0] from the kernel.
        let z = expect_for(&v(&[], false), &v(&[], false), false).unwrap();
        assert_eq!((z.args_len, z.args_hash), (1, image_hash(b"\0")));
        // What was cut was not all seen: nothing to grant on.
        assert!(expect_for(&v(&["a"], true), &v(&[], false), false).is_none());
        assert!(expect_for(&v(&["a"], false), &v(&[], true), false).is_none());
    }

    /// A NULL-terminated array of C strings in this process, like an envp.
    struct Vector {
        _strings: Vec<std::ffi::CString>,
        ptrs: Vec<u64>,
    }

    impl Vector {
        fn new(entries: &[String]) -> Self {
            let strings: Vec<std::ffi::CString> = entries
                .iter()
                .map(|s| std::ffi::CString::new(s.as_str()).unwrap())
                .collect();
            let mut ptrs: Vec<u64> = strings.iter().map(|s| s.as_ptr() as u64).collect();
            ptrs.push(0);
            Self {
                _strings: strings,
                ptrs,
            }
        }

        fn at(&self) -> u64 {
            self.ptrs.as_ptr() as u64
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn variables_that_change_the_program_take_the_room_of_others() {
        let env = Vector::new(&strings(&[
            "A=1",
            "B=2",
            "C=3",
            "D=4",
            "E=5",
            "LD_PRELOAD=/tmp/x.so",
            "F=6",
            "PATH=/tmp/bin",
        ]));
        let limits = EnvLimits {
            entries: 5,
            bytes: 1024,
            each: 64,
            scan: 100,
        };
        assert_eq!(
            read_env(Pid::this(), env.at(), &limits).unwrap(),
            ["A=1", "B=2", "LD_PRELOAD=/tmp/x.so", "PATH=/tmp/bin", CUT]
        );
        // Bytes count as entries do.
        let limits = EnvLimits {
            entries: 100,
            bytes: 3 * 3 + "LD_PRELOAD=/tmp/x.so".len() + CUT.len(),
            ..limits
        };
        assert_eq!(
            read_env(Pid::this(), env.at(), &limits).unwrap(),
            ["A=1", "B=2", "C=3", "LD_PRELOAD=/tmp/x.so", CUT]
        );
        // All of it fits: no marker.
        let all = EnvLimits {
            entries: 100,
            bytes: 1024,
            ..limits
        };
        assert_eq!(read_env(Pid::this(), env.at(), &all).unwrap().len(), 8);
        assert_eq!(
            read_env(Pid::this(), 0, &all).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn padding_cannot_hide_ld_preload_path_or_git_ssh_command() {
        // 128 KiB of padding in front of them, twice what belay-server accepts.
        let mut entries: Vec<String> = (0..1024)
            .map(|i| format!("PAD{i}={}", "x".repeat(120)))
            .collect();
        entries.push("LD_PRELOAD=/tmp/evil.so".into());
        entries.push("GIT_SSH_COMMAND=ssh -o ProxyCommand=/tmp/x".into());
        entries.push(format!("PATH=/tmp/{}", "b".repeat(5000)));
        let env = Vector::new(&entries);
        let got = read_env(Pid::this(), env.at(), &ENV_LIMITS).unwrap();
        for wanted in [
            "LD_PRELOAD=/tmp/evil.so",
            "GIT_SSH_COMMAND=ssh -o ProxyCommand=/tmp/x",
        ] {
            assert!(got.iter().any(|e| e == wanted), "{wanted} left out");
        }
        let path = got
            .iter()
            .find(|e| e.starts_with("PATH="))
            .expect("PATH left out");
        assert!(path.ends_with(CUT) && path.len() <= limits::MAX_ARG_LEN);
        assert_eq!(got.last().map(String::as_str), Some(CUT));
        // What belay-server accepts.
        belay_proto::domain::ExecAction::new("/bin/sh", vec![], None)
            .unwrap()
            .with_env(got)
            .expect("within the server's limits");
    }

    #[test]
    fn reads_c_strings_across_a_page_boundary() {
        // A string whose bytes straddle two pages of this very process.
        let mut buf = vec![b'x'; 8192];
        let base = buf.as_ptr() as u64;
        let start = 4096 - (base % 4096) - 3;
        buf[start as usize + 10] = 0;
        let (s, whole) = read_c_string(Pid::this(), base + start, MAX_ARG_BYTES).unwrap();
        assert_eq!(s, b"xxxxxxxxxx");
        assert!(whole);
    }
}
