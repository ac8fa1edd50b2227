//! A stand-in for an AI agent's process in belay's VM tests: it does one action the
//! test names and reports what the kernel answered, in a form the test can assert on.
//!
//! Protocol: prints `ready <pid>` and waits for a line on stdin (so the test can watch
//! it first), then acts and prints one result line:
//!   `connect ok` | `connect err <errno>`; `exec err <errno>` (a successful exec prints
//!   nothing itself); `decide <answer json>`.
//! Exit status: 0 ok, 10 EPERM, 11 any other error.
use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{net::UnixStream, process::CommandExt as _},
    process::ExitCode,
};

fn sockaddr_in(v4: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn errno_exit(what: &str, e: &std::io::Error) -> ExitCode {
    let errno = e.raw_os_error().unwrap_or(-1);
    println!("{what} err {errno}");
    if errno == libc::EPERM {
        ExitCode::from(10)
    } else {
        ExitCode::from(11)
    }
}

fn connect(addr: &str) -> ExitCode {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            println!("bad address {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    match TcpStream::connect(addr) {
        Ok(_) => {
            println!("connect ok");
            ExitCode::SUCCESS
        }
        Err(e) => errno_exit("connect", &e),
    }
}

/// A connect submitted through io_uring instead of the connect syscall; `worker` forces
/// it onto an io-wq worker thread (IOSQE_ASYNC) instead of the inline issue.
fn uring_connect(addr: &str, worker: bool) -> ExitCode {
    use io_uring::{IoUring, opcode, squeue, types};
    let Ok(SocketAddr::V4(v4)) = addr.parse::<SocketAddr>() else {
        println!("uring-connect needs an IPv4 address, got {addr}");
        return ExitCode::from(2);
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return errno_exit("socket", &std::io::Error::last_os_error());
    }
    let sa = sockaddr_in(v4);
    let mut ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return errno_exit("io_uring_setup", &e),
    };
    let flags = if worker {
        squeue::Flags::ASYNC
    } else {
        squeue::Flags::empty()
    };
    let op = opcode::Connect::new(
        types::Fd(fd),
        (&raw const sa).cast::<libc::sockaddr>(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
    .build()
    .flags(flags)
    .user_data(1);
    // SAFETY: `sa` outlives the submission: we wait for its completion below.
    if unsafe { ring.submission().push(&op) }.is_err() {
        println!("uring-connect: submission queue full");
        return ExitCode::from(11);
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return errno_exit("io_uring_enter", &e);
    }
    let Some(cqe) = ring.completion().next() else {
        println!("uring-connect: no completion");
        return ExitCode::from(11);
    };
    let res = cqe.result();
    println!("uring-connect res {res}");
    match res {
        0 => ExitCode::SUCCESS,
        r if r == -libc::EPERM => ExitCode::from(10),
        _ => ExitCode::from(11),
    }
}

fn udp_send(addr: &str) -> ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        println!("bad address {addr}");
        return ExitCode::from(2);
    };
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = match std::net::UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => return errno_exit("udp-send", &e),
    };
    match sock.send_to(b"belay", addr) {
        Ok(_) => {
            println!("udp-send ok");
            ExitCode::SUCCESS
        }
        Err(e) => errno_exit("udp-send", &e),
    }
}

/// Looks `name` up with one DNS query (A record) to `server` over UDP, then connects to
/// the first address of the answer on `port`: the lookup a reviewer should see named.
/// Prints `resolve <ip>` before connecting.
/// Asks `server` for `name` (type A), then connects to the address it answers, on
/// `port`. With `connected`, the query leaves a connected socket (`connect` + `send`,
/// as glibc's resolver does) rather than through `sendto`.
fn resolve_connect(server: &str, name: &str, port: &str, connected: bool) -> ExitCode {
    let (Ok(server), Ok(port)) = (server.parse::<SocketAddr>(), port.parse::<u16>()) else {
        println!("bad server {server} or port {port}");
        return ExitCode::from(2);
    };
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => return errno_exit("resolve", &e),
    };
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let sent = if connected {
        sock.connect(server).and_then(|()| sock.send(&query))
    } else {
        sock.send_to(&query, server)
    };
    if let Err(e) = sent {
        return errno_exit("resolve", &e);
    }
    let mut buf = [0u8; 512];
    let n = match sock.recv(&mut buf) {
        Ok(n) => n,
        Err(e) => return errno_exit("resolve", &e),
    };
    // The test's server answers with one A record, last in the message.
    if n < 4 {
        println!("resolve short answer");
        return ExitCode::from(11);
    }
    let ip = std::net::Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]);
    println!("resolve {ip}");
    connect(&format!("{ip}:{port}"))
}

/// Connects to a Unix socket: a path, or `@name` for an abstract one.
fn unix_connect(path: &str) -> ExitCode {
    let res = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| UnixStream::connect_addr(&a))
        }
        None => UnixStream::connect(path),
    };
    match res {
        Ok(_) => {
            println!("connect ok");
            ExitCode::SUCCESS
        }
        Err(e) => errno_exit("connect", &e),
    }
}

/// Runs `/bin/true` `n` times, or connects to `addr` `n` times, and prints
/// `rate <per second>`: the benchmark's measuring loop, in a process belay may watch.
fn rate(what: &str, addr: Option<&str>, n: &str) -> ExitCode {
    let Ok(n) = n.parse::<u32>() else {
        println!("bad count {n}");
        return ExitCode::from(2);
    };
    let addr: Option<SocketAddr> = addr.and_then(|a| a.parse().ok());
    let t = std::time::Instant::now();
    for _ in 0..n {
        let ok = match addr {
            Some(addr) => TcpStream::connect(addr).is_ok(),
            None => std::process::Command::new("/bin/true")
                .status()
                .is_ok_and(|s| s.success()),
        };
        if !ok {
            println!("{what} failed");
            return ExitCode::from(11);
        }
    }
    println!("rate {}", f64::from(n) / t.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

/// TCP Fast Open: `sendto(MSG_FASTOPEN)` on an unconnected socket connects and sends.
fn tfo(addr: &str) -> ExitCode {
    let Ok(SocketAddr::V4(v4)) = addr.parse::<SocketAddr>() else {
        println!("tfo needs an IPv4 address, got {addr}");
        return ExitCode::from(2);
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let sa = sockaddr_in(v4);
    // SAFETY: valid fd, buffer and address for the duration of the call.
    let n = unsafe {
        libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            libc::MSG_FASTOPEN,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return errno_exit("tfo", &std::io::Error::last_os_error());
    }
    println!("tfo ok");
    ExitCode::SUCCESS
}

/// `n` connects to `addr`, printing `lat <microseconds>` for each (benchmarks).
fn connect_loop(addr: &str, n: &str) -> ExitCode {
    let (Ok(addr), Ok(n)) = (addr.parse::<SocketAddr>(), n.parse::<u32>()) else {
        println!("usage: connect-loop ADDR N");
        return ExitCode::from(2);
    };
    for _ in 0..n {
        let t = std::time::Instant::now();
        if let Err(e) = TcpStream::connect(addr) {
            return errno_exit("connect", &e);
        }
        println!("lat {}", t.elapsed().as_nanos() as f64 / 1000.0);
    }
    ExitCode::SUCCESS
}

/// `n` times: stop itself and wait for someone's SIGCONT, printing `lat <microseconds>`:
/// the bare cost of a stop/continue cycle through another process (benchmarks).
fn stop_loop(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<u32>() else {
        println!("usage: stop-loop N");
        return ExitCode::from(2);
    };
    for _ in 0..n {
        let t = std::time::Instant::now();
        // SAFETY: signalling ourselves.
        unsafe { libc::raise(libc::SIGSTOP) };
        println!("lat {}", t.elapsed().as_nanos() as f64 / 1000.0);
    }
    ExitCode::SUCCESS
}

/// Forks `n` children that wait; prints `child <pid>` for each, then
/// `fork-many ok <forked> refused <refused> errno <last errno>`, waits for a line on stdin
/// and kills them.
fn fork_many(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<u32>() else {
        println!("usage: fork-many N");
        return ExitCode::from(2);
    };
    let (mut children, mut refused, mut errno) = (Vec::new(), 0, 0);
    for _ in 0..n {
        // SAFETY: the child only waits for its signal.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: plain pause(2).
                unsafe { libc::pause() };
            },
            -1 => {
                refused += 1;
                errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            }
            child => {
                println!("child {child}");
                children.push(child);
            }
        }
    }
    println!(
        "fork-many ok {} refused {refused} errno {errno}",
        children.len()
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for c in children {
        // SAFETY: our own children.
        unsafe {
            libc::kill(c, libc::SIGKILL);
            libc::waitpid(c, std::ptr::null_mut(), 0);
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!(
            "usage: belay-actor connect ADDR | exec PATH [ARG]... | fork-connect ADDR | grandchild-connect ADDR | \
             udp-send ADDR | tfo ADDR | resolve-connect DNS-SERVER NAME PORT | resolve-connected DNS-SERVER NAME PORT | connect-loop ADDR N | stop-loop N | fork-many N | exec-rate N | unix-connect PATH|@NAME | connect-rate ADDR N | uring-connect ADDR | uring-connect-worker ADDR | decide SOCKET ID"
        );
        return ExitCode::from(2);
    }
    println!("ready {}", std::process::id());
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    let _ = std::io::stdin().lock().read_line(&mut go);

    let out = match (args[0].as_str(), &args[1..]) {
        ("connect", [addr]) => connect(addr),
        ("udp-send", [addr]) => udp_send(addr),
        ("connect-loop", [addr, n]) => connect_loop(addr, n),
        ("stop-loop", [n]) => stop_loop(n),
        ("fork-many", [n]) => fork_many(n),
        ("tfo", [addr]) => tfo(addr),
        ("exec-rate", [n]) => rate("exec", None, n),
        ("unix-connect", [path]) => unix_connect(path),
        ("connect-rate", [addr, n]) => rate("connect", Some(addr), n),
        ("resolve-connect", [server, name, port]) => resolve_connect(server, name, port, false),
        ("resolve-connected", [server, name, port]) => resolve_connect(server, name, port, true),
        ("uring-connect", [addr]) => uring_connect(addr, false),
        ("uring-connect-worker", [addr]) => uring_connect(addr, true),
        ("exec", [path, rest @ ..]) => {
            let e = std::process::Command::new(path).args(rest).exec();
            errno_exit("exec", &e)
        }
        // The child does the connect: tests that watched status is inherited.
        ("fork-connect", [addr]) => {
            // SAFETY: single-threaded here; the child only connects and exits.
            match unsafe { libc::fork() } {
                0 => {
                    let code = connect(addr);
                    let _ = std::io::stdout().flush();
                    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 10 });
                }
                -1 => errno_exit("fork", &std::io::Error::last_os_error()),
                child => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &raw mut status, 0) };
                    ExitCode::from(libc::WEXITSTATUS(status) as u8)
                }
            }
        }
        // A grandchild does the connect: the watch passes down more than one generation.
        ("grandchild-connect", [addr]) => {
            // SAFETY: single-threaded here; each child only forks, connects and exits.
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: as above.
                    let code = match unsafe { libc::fork() } {
                        0 => {
                            let code = connect(addr);
                            let _ = std::io::stdout().flush();
                            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 10 });
                        }
                        -1 => 11,
                        grandchild => {
                            let mut status = 0;
                            // SAFETY: waiting for our own child.
                            unsafe { libc::waitpid(grandchild, &raw mut status, 0) };
                            libc::WEXITSTATUS(status)
                        }
                    };
                    std::process::exit(code);
                }
                -1 => errno_exit("fork", &std::io::Error::last_os_error()),
                child => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &raw mut status, 0) };
                    ExitCode::from(libc::WEXITSTATUS(status) as u8)
                }
            }
        }
        // A watched process trying to decide a request through the local API.
        ("decide", [socket, id]) => {
            let mut s = match UnixStream::connect(socket) {
                Ok(s) => s,
                Err(e) => return errno_exit("decide", &e),
            };
            let req = format!("{{\"op\":\"decide\",\"id\":{id},\"verdict\":\"allow\"}}\n");
            let mut answer = String::new();
            if let Err(e) = s
                .write_all(req.as_bytes())
                .and_then(|()| s.read_to_string(&mut answer))
            {
                return errno_exit("decide", &e);
            }
            println!("decide {}", answer.trim());
            ExitCode::SUCCESS
        }
        _ => {
            println!("unknown action {args:?}");
            ExitCode::from(2)
        }
    };
    let _ = std::io::stdout().flush();
    out
}
