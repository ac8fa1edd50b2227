//! An attacker's toolbox for belay's VM tests: each case is one way a watched,
//! unprivileged process might try to act without being held. The tests run it watched and
//! assert that the kernel refused (and that the effect did not happen); the same
//! protocol as `belay-actor`.
//!
//! Protocol: prints `ready <pid>`, waits for a line on stdin, acts, and prints one line
//! `<case> ok` or `<case> err <errno>` (exit 0, or 10 for EPERM, 11 otherwise). The
//! victim cases (`hold-socket`) are run unwatched and print what the attacker needs.
use std::{
    ffi::CString,
    io::{BufRead as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    process::ExitCode,
};

#[path = "../evade/sctp.rs"]
mod sctp;

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn report(case: &str, result: Result<(), i32>) -> ExitCode {
    match result {
        Ok(()) => {
            println!("{case} ok");
            ExitCode::SUCCESS
        }
        Err(errno) => {
            println!("{case} err {errno}");
            ExitCode::from(if errno == libc::EPERM { 10 } else { 11 })
        }
    }
}

/// -1 from a libc call becomes its errno.
fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 { Err(last_errno()) } else { Ok(ret) }
}

fn v4(addr: &str) -> Result<SocketAddrV4, i32> {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        _ => {
            eprintln!("need an IPv4 address, got {addr}");
            Err(libc::EINVAL)
        }
    }
}

/// A UDP datagram to `addr` whose sockaddr says `family` (the kernel's IPv4 UDP sends
/// an `AF_UNSPEC` address as IPv4).
fn udp_family(addr: &str, family: libc::sa_family_t) -> Result<(), i32> {
    let a = v4(addr)?;
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    let sa = libc::sockaddr_in {
        sin_family: family,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in of the length given; the buffer is valid.
    let ret = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            b"evade".as_ptr().cast(),
            5,
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check(ret as libc::c_long).map(drop)
}

fn tcp_connect(addr: &str) -> Result<(), i32> {
    let a: SocketAddr = addr.parse().map_err(|_| libc::EINVAL)?;
    TcpStream::connect(a)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn unix_connect(path: &str) -> Result<(), i32> {
    std::os::unix::net::UnixStream::connect(path)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn pid_arg(pid: &str) -> Result<libc::pid_t, i32> {
    pid.parse().map_err(|_| libc::EINVAL)
}

/// Takes file `fd` of process `pid` (an unwatched process's connected socket) and sends
/// `msg` through it.
fn pidfd_getfd(pid: &str, fd: &str, msg: &str) -> Result<(), i32> {
    let pid = pid_arg(pid)?;
    let target_fd: RawFd = fd.parse().map_err(|_| libc::EINVAL)?;
    // SAFETY: plain syscalls; the returned fds are owned below.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd is a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: plain syscall.
    let stolen =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: a fresh fd we own.
    let stolen = unsafe { OwnedFd::from_raw_fd(stolen as RawFd) };
    let mut stream = TcpStream::from(stolen);
    stream
        .write_all(msg.as_bytes())
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn ptrace_attach(pid: &str) -> Result<(), i32> {
    let pid = pid_arg(pid)?;
    // SAFETY: plain syscall; a seized tracee is not stopped and is released at exit.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) }).map(drop)
}

fn proc_mem(pid: &str) -> Result<(), i32> {
    let path = CString::new(format!("/proc/{}/mem", pid_arg(pid)?)).map_err(|_| libc::EINVAL)?;
    // SAFETY: valid C string; the fd is closed at once.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR) } as libc::c_long)?;
    // SAFETY: a fresh fd we own.
    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(())
}

/// The victim: an unwatched process of the same user holding a connected socket, which
/// lets any process ptrace it (as crash reporters and debuggers arrange).
fn hold_socket(addr: &str) -> ExitCode {
    let stream = match tcp_connect_stream(addr) {
        Ok(s) => s,
        Err(errno) => return report("hold-socket", Err(errno)),
    };
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
    println!("holding fd {}", stream.as_raw_fd());
    let _ = std::io::stdout().flush();
    // Until the test closes stdin.
    let mut rest = String::new();
    let _ = std::io::stdin().lock().read_line(&mut rest);
    ExitCode::SUCCESS
}

fn tcp_connect_stream(addr: &str) -> Result<TcpStream, i32> {
    let a: SocketAddr = addr.parse().map_err(|_| libc::EINVAL)?;
    TcpStream::connect(a).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Receives datagrams on a UDP socket until `n` arrived or none came for a second, then
/// connects to `addr`. Prints `udp <port>` before the ready line's wait ends, so a test
/// can flood the socket from port 53.
fn recv_then_connect(n: &str, addr: &str, sock: &std::net::UdpSocket) -> ExitCode {
    let n: usize = n.parse().unwrap_or(0);
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let mut buf = [0u8; 1500];
    let mut got = 0;
    while got < n && sock.recv(&mut buf).is_ok() {
        got += 1;
    }
    eprintln!("received {got} datagrams");
    report("recv-then-connect", tcp_connect(addr))
}

/// Runs `path` as `belay-evade hello` (which then needs no go line).
fn exec_hello(path: &str) -> Result<(), i32> {
    use std::os::unix::process::CommandExt as _;
    let e = std::process::Command::new(path)
        .arg("hello")
        .env(NO_WAIT, "1")
        .exec();
    Err(e.raw_os_error().unwrap_or(-1))
}

fn write_file(path: &str, text: &str) -> Result<(), i32> {
    std::fs::write(path, text).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// In a user and mount namespace of its own (where it may mount), binds `src` over
/// `target`; the caller then runs `target`.
fn userns_bind(src: &str, target: &str) -> Result<(), i32> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: plain syscall; single-threaded here.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } as libc::c_long)?;
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    let cstr = |s: &str| CString::new(s).map_err(|_| libc::EINVAL);
    let (root, src_c, target_c) = (cstr("/")?, cstr(src)?, cstr(target)?);
    // SAFETY: valid C strings; null fs type and data are allowed for these flags.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } as libc::c_long)?;
    // SAFETY: as above.
    check(unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    } as libc::c_long)
    .map(drop)
}

/// Runs `path hello`, with argv in memory shared with a child that rewrites `hello` to
/// `evil!` once this process has been stopped for review (a reviewer saw `hello`).
fn exec_swap(path: &str) -> Result<(), i32> {
    // SAFETY: a fresh anonymous shared mapping of one page.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(last_errno());
    }
    let buf = page.cast::<u8>();
    let mut at = 0usize;
    let mut put = |s: &[u8]| {
        // SAFETY: within the page (the strings are short), NUL-terminated below.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf.add(at), s.len());
            *buf.add(at + s.len()) = 0;
        }
        let p = at;
        at += s.len() + 1;
        p
    };
    let (p_path, p_arg, p_env) = (
        put(path.as_bytes()),
        put(b"hello"),
        put(format!("{NO_WAIT}=1").as_bytes()),
    );
    // SAFETY: offsets inside the page.
    let ptr = |off: usize| unsafe { buf.add(off) }.cast::<libc::c_char>().cast_const();
    let argv = [ptr(p_path), ptr(p_arg), std::ptr::null()];
    let envp = [ptr(p_env), std::ptr::null()];
    let parent = std::process::id();
    // SAFETY: single-threaded; the child only polls /proc, writes the shared page and
    // exits.
    match unsafe { libc::fork() } {
        -1 => return Err(last_errno()),
        0 => {
            let stat = format!("/proc/{parent}/stat");
            for _ in 0..2000 {
                let state = std::fs::read_to_string(&stat).unwrap_or_default();
                if state
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('T'))
                {
                    // Give the daemon time to read (and show) `hello`.
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    // SAFETY: the shared page, same length as before.
                    unsafe { std::ptr::copy_nonoverlapping(b"evil!".as_ptr(), buf.add(p_arg), 5) };
                    eprintln!("swapped");
                    // SAFETY: leaving the forked child without running destructors.
                    unsafe { libc::_exit(0) };
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
        _ => {}
    }
    let c_path = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: NULL-terminated arrays of NUL-terminated strings in the mapping.
    unsafe { libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(last_errno())
}

/// Set in the environment of a `belay-evade hello` that another case execs.
const NO_WAIT: &str = "BELAY_EVADE_NO_WAIT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!(
            "usage: belay-evade udp-unspec ADDR | udp-family FAMILY ADDR | connect ADDR | unix-connect PATH | \
             mptcp-connect ADDR | sctp-connect ADDR | sctp-connectx ADDR[,ADDR...] | sctp-send ADDR EXTRA-IP|- | \
             pidfd-getfd PID FD MSG | ptrace-attach PID | proc-mem PID | hold-socket ADDR | \
             recv-then-connect N ADDR | exec-hello PATH | exec-swap PATH | userns-bind-exec SRC TARGET | hello"
        );
        return ExitCode::from(2);
    }
    if let ("hold-socket", [addr]) = (args[0].as_str(), &args[1..]) {
        return hold_socket(addr);
    }
    // Bound before the ready line so the test knows where to send.
    let udp = if args[0] == "recv-then-connect" {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        println!("udp {}", s.local_addr().expect("its address").port());
        Some(s)
    } else {
        None
    };
    if std::env::var_os(NO_WAIT).is_none() {
        println!("ready {}", std::process::id());
        let _ = std::io::stdout().flush();
        let mut go = String::new();
        let _ = std::io::stdin().lock().read_line(&mut go);
    }
    let case = args[0].as_str();
    match (case, &args[1..]) {
        ("hello", []) => report(case, Ok(())),
        ("udp-unspec", [addr]) => report(case, udp_family(addr, libc::AF_UNSPEC as _)),
        ("udp-family", [fam, addr]) => {
            let fam = fam.parse().unwrap_or(u16::MAX);
            report(case, udp_family(addr, fam))
        }
        ("connect", [addr]) => report(case, tcp_connect(addr)),
        ("mptcp-connect", [addr]) => report(case, sctp::connect(sctp::IPPROTO_MPTCP, addr)),
        ("sctp-connect", [addr]) => report(case, sctp::connect(sctp::IPPROTO_SCTP, addr)),
        ("sctp-connectx", [addrs]) => report(case, sctp::connectx(addrs)),
        ("sctp-send", [to, extra]) => report(case, sctp::send_dstaddr(to, extra)),
        ("unix-connect", [path]) => report(case, unix_connect(path)),
        ("pidfd-getfd", [pid, fd, msg]) => report(case, pidfd_getfd(pid, fd, msg)),
        ("ptrace-attach", [pid]) => report(case, ptrace_attach(pid)),
        ("proc-mem", [pid]) => report(case, proc_mem(pid)),
        ("exec-hello", [path]) => report(case, exec_hello(path)),
        ("exec-swap", [path]) => report(case, exec_swap(path)),
        // A failure to set up says so: it must not pass for belay's refusal.
        ("userns-bind-exec", [src, target]) => match userns_bind(src, target) {
            Ok(()) => report(case, exec_hello(target)),
            Err(errno) => report("userns-setup", Err(errno)),
        },
        ("recv-then-connect", [n, addr]) => match &udp {
            Some(s) => recv_then_connect(n, addr, s),
            None => ExitCode::from(2),
        },
        _ => {
            eprintln!("unknown case or arguments: {args:?}");
            ExitCode::from(2)
        }
    }
}
