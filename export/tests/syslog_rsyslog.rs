//! RFC 5424 over TCP (octet counting), TLS and UDP into a real rsyslogd started by the
//! test, which writes what it parsed (MSGID, structured data, header fields) to a file.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use belay_export::Exporter;
use support::{config, event, test_pki, wait_until};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

struct Rsyslog {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Starts rsyslogd with one listener on a free port; `tls`: (ca, cert, key) files.
fn rsyslog(dir: &Path, input: &str, tls: Option<(&Path, &Path, &Path)>) -> Rsyslog {
    rsyslog_on(dir, input, tls, free_port(input == "udp"))
}

/// Starts rsyslogd listening on `port`, appending to `dir/received.log`: called again
/// with the same arguments, it is the same receiver restarted.
fn rsyslog_on(dir: &Path, input: &str, tls: Option<(&Path, &Path, &Path)>, port: u16) -> Rsyslog {
    let binary = Path::new(RSYSLOGD);
    assert!(
        binary.exists(),
        "{RSYSLOGD} is missing: run `cargo xtask setup` (installs rsyslog and rsyslog-gnutls)"
    );
    let out = dir.join("received.log");
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let mut conf = format!("global(workDirectory=\"{}\"", work.display());
    if let Some((ca, cert, key)) = tls {
        conf += &format!(
            " defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" \
             defaultNetstreamDriverKeyFile=\"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        );
    }
    conf += ")\n";
    conf += match (input, tls.is_some()) {
        ("udp", _) => "module(load=\"imudp\")\n",
        (_, true) => {
            "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
             streamDriver.authMode=\"anon\")\n"
        }
        _ => "module(load=\"imtcp\")\n",
    };
    let kind = if input == "udp" { "imudp" } else { "imtcp" };
    conf += &format!("input(type=\"{kind}\" address=\"127.0.0.1\" port=\"{port}\")\n");
    // Each record starts with MARK: a record a SIGKILL cut short is followed, on the same
    // line, by the first record of the restarted rsyslogd, and MARK tells them apart.
    conf += &format!(
        "template(name=\"fields\" type=\"string\" string=\"{MARK}%pri%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\\n\")\n"
    );
    conf += &format!(
        "action(type=\"omfile\" file=\"{}\" template=\"fields\")\n",
        out.display()
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // A pid file per start: a SIGKILLed rsyslogd leaves its own behind.
    let starts = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("rsyslog-"))
        })
        .count();
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.join(format!("rsyslog-{starts}.pid")))
        .stdin(Stdio::null())
        .spawn()
        .expect("rsyslogd starts");
    let server = Rsyslog { child, out, port };
    if input != "udp" {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        std::thread::sleep(Duration::from_millis(500));
    }
    server
}

const MARK: &str = "@@";

/// The records rsyslog wrote, complete or not.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .flat_map(|l| l.split(MARK).filter(|r| !r.is_empty()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Ids of the complete records: every field there and MSG a whole JSON event whose id
/// matches the structured data's.
fn received_ids(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .filter_map(|record| {
            let fields: Vec<&str> = record.splitn(7, '|').collect();
            let msg: serde_json::Value = serde_json::from_str(fields.get(6)?.trim()).ok()?;
            let id = msg["id"].as_str()?;
            fields[5]
                .contains(&format!("id=\"{id}\""))
                .then(|| id.to_owned())
        })
        .collect()
}

/// Returns the exporter's metrics, after its stop.
async fn deliver_and_check(
    dir: &Path,
    server: &Rsyslog,
    sink: String,
    count: u64,
) -> std::sync::Arc<belay_export::Metrics> {
    let exporter = Exporter::start(config(dir, "", &sink)).unwrap();
    let metrics = exporter.metrics().clone();
    let handle = exporter.handle();
    for n in 0..count {
        handle.offer(event(n));
    }
    let out = server.out.clone();
    let arrived = wait_until(Duration::from_secs(20), || {
        lines(&out).len() as u64 >= count
    })
    .await;
    assert!(
        arrived,
        "rsyslog wrote {} of {count} lines",
        lines(&out).len()
    );
    exporter.shutdown().await;

    let received = lines(&server.out);
    let mut ids = HashSet::new();
    for (line, n) in received.iter().zip(0..) {
        let fields: Vec<&str> = line.splitn(7, '|').collect();
        let e = event(n);
        // authpriv (10) * 8 + warning (4) for denials, notice (5) for new requests.
        let pri = if e.kind == "submitted" { 85 } else { 84 };
        assert_eq!(fields[0], pri.to_string(), "{line}");
        assert!(fields[1].starts_with("2026-05-28T20:26:40."), "{line}");
        assert_eq!(fields[2], "host-a");
        assert_eq!(fields[3], "belay-server");
        assert_eq!(fields[4], e.kind);
        assert_eq!(
            fields[5],
            format!("[belay@32473 id=\"{}\" kind=\"{}\"]", e.id, e.kind)
        );
        let msg: serde_json::Value = serde_json::from_str(fields[6].trim()).expect("MSG is JSON");
        assert_eq!(msg["id"], e.id.as_str());
        ids.insert(fields[5].to_owned());
    }
    assert_eq!(ids.len() as u64, count, "every event once, in order");
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5424_over_tcp_with_octet_counting_reaches_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let server = rsyslog(dir.path(), "tcp", None);
    let sink = format!(
        "[[sink]]\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\n",
        server.port
    );
    deliver_and_check(dir.path(), &server, sink, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5424_over_udp_reaches_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let server = rsyslog(dir.path(), "udp", None);
    let sink = format!(
        "[[sink]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"127.0.0.1:{}\"\n",
        server.port
    );
    // Few enough that loopback UDP does not overflow rsyslog's receive buffer.
    let metrics = deliver_and_check(dir.path(), &server, sink, 20).await;
    // Best effort: counted as sent, never as delivered.
    assert_eq!(
        metrics.counter(belay_export::sink::SENT_UNCONFIRMED, "syslog-0", None),
        20
    );
    assert_eq!(
        metrics.counter(belay_export::metrics::DELIVERED, "syslog-0", None),
        0
    );
}

#[test]
fn confirm_after_ms_is_refused_for_udp() {
    let text = "[spool]\ndir = \"/tmp/s\"\n[[sink]]\ntype = \"syslog\"\ntransport = \"udp\"\n\
                address = \"127.0.0.1:514\"\nconfirm_after_ms = 100\n";
    let err = belay_export::ExportConfig::parse(Path::new("x.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.toml:7:20: confirm_after_ms: does not apply to transport = \"udp\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5424_over_tls_reaches_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let server = rsyslog(dir.path(), "tcp", Some((&ca, &cert, &key)));
    let sink = format!(
        "[[sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\n\
         server_name = \"localhost\"\nca_file = {:?}\n",
        server.port,
        ca.display().to_string()
    );
    deliver_and_check(dir.path(), &server, sink, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_server_outside_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = test_pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = test_pki(other.path());
    let server = rsyslog(dir.path(), "tcp", Some((&other_ca, &cert, &key)));
    let sink = format!(
        "[[sink]]\nname = \"s\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\n\
         server_name = \"localhost\"\nca_file = {:?}\n",
        server.port,
        other_ca.display().to_string()
    );
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    exporter.handle().offer(event(0));
    let metrics = exporter.metrics().clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            metrics.counter(belay_export::metrics::RETRIED, "s", None) > 0
        })
        .await
    );
    assert!(
        lines(&server.out).is_empty(),
        "nothing sent to an unverified server"
    );
    assert_eq!(
        metrics.counter(belay_export::metrics::DELIVERED, "s", None),
        0
    );
    exporter.shutdown().await;
}

const KILL_COUNT: u64 = 2000;

/// Offers KILL_COUNT events at about 500 a second, so the stream is still flowing when
/// rsyslogd is killed.
fn produce_slowly(handle: belay_export::ExportHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for chunk in 0..KILL_COUNT / 10 {
            for n in chunk * 10..chunk * 10 + 10 {
                handle.offer(event(n));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// rsyslogd SIGKILLed mid-stream and started again on the same port and output file:
/// every event arrives (duplicates allowed: the ids are stable).
async fn killed_mid_stream_then_restarted(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls.then(|| test_pki(dir.path()));
    let files = pki
        .as_ref()
        .map(|(ca, cert, key)| (ca.as_path(), cert.as_path(), key.as_path()));
    let mut server = rsyslog(dir.path(), "tcp", files);
    let port = server.port;
    let mut sink = format!(
        "[[sink]]\nname = \"s\"\ntype = \"syslog\"\ntransport = \"{}\"\naddress = \"127.0.0.1:{port}\"\n",
        if tls { "tls" } else { "tcp" }
    );
    if let Some((ca, _, _)) = &pki {
        sink += &format!(
            "server_name = \"localhost\"\nca_file = {:?}\n",
            ca.display().to_string()
        );
    }
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    let metrics = exporter.metrics().clone();
    let producer = produce_slowly(exporter.handle());

    let out = server.out.clone();
    assert!(
        wait_until(Duration::from_secs(60), || received_ids(&out).len() >= 500).await,
        "rsyslog wrote {} records before the kill",
        received_ids(&out).len()
    );
    let retried = metrics.counter(belay_export::metrics::RETRIED, "s", None);
    drop(server); // SIGKILL, then reaped
    let at_kill = received_ids(&out).len();
    // Down until the exporter has noticed (or a few seconds: nothing depends on how long).
    wait_until(Duration::from_secs(5), || {
        metrics.counter(belay_export::metrics::RETRIED, "s", None) > retried
    })
    .await;
    server = rsyslog_on(dir.path(), "tcp", files, port);

    producer.await.unwrap();
    let all: HashSet<String> = (0..KILL_COUNT).map(|n| event(n).id).collect();
    let arrived = wait_until(Duration::from_secs(120), || {
        all.is_subset(&received_ids(&out).into_iter().collect())
    })
    .await;
    let received = received_ids(&server.out);
    let distinct: HashSet<String> = received.iter().cloned().collect();
    let missing: Vec<u64> = (0..KILL_COUNT)
        .filter(|&n| !distinct.contains(&event(n).id))
        .collect();
    assert!(
        arrived,
        "{} of {KILL_COUNT} events missing after the restart (killed at {at_kill} records): \
         first missing {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        distinct.len() as u64,
        KILL_COUNT,
        "no id that was not produced"
    );
    assert!(received.len() >= at_kill, "the output file was appended to");
    assert!(
        metrics.counter(belay_export::metrics::RETRIED, "s", None) > retried,
        "the exporter saw the receiver go away"
    );
    // With the receiver up, the settle time (not the stop) confirms everything.
    let spool = exporter.spool().clone();
    assert!(
        wait_until(Duration::from_secs(60), || spool.cursor("s") == KILL_COUNT).await,
        "cursor at {} of {KILL_COUNT}",
        spool.cursor("s")
    );
    assert_eq!(
        metrics.counter(belay_export::metrics::DELIVERED, "s", None),
        KILL_COUNT,
        "each event counted delivered once, when confirmed"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_receiver_killed_mid_stream_and_restarted_gets_every_event() {
    killed_mid_stream_then_restarted(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receiver_killed_mid_stream_and_restarted_gets_every_event() {
    killed_mid_stream_then_restarted(true).await;
}

fn stream_sink(port: u16, pki: Option<&(PathBuf, PathBuf, PathBuf)>, extra: &str) -> String {
    let mut sink = format!(
        "[[sink]]\nname = \"s\"\ntype = \"syslog\"\ntransport = \"{}\"\n\
         address = \"127.0.0.1:{port}\"\n{extra}",
        if pki.is_some() { "tls" } else { "tcp" }
    );
    if let Some((ca, _, _)) = pki {
        sink += &format!(
            "server_name = \"localhost\"\nca_file = {:?}\n",
            ca.display().to_string()
        );
    }
    sink
}

/// With a settle time no test waits out, only the clean close at stop (our end of
/// stream, then rsyslogd's) can confirm: it does, and the next start sends nothing again.
async fn clean_stop_confirms(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls.then(|| test_pki(dir.path()));
    let files = pki
        .as_ref()
        .map(|(ca, cert, key)| (ca.as_path(), cert.as_path(), key.as_path()));
    let server = rsyslog(dir.path(), "tcp", files);
    let sink = stream_sink(server.port, pki.as_ref(), "confirm_after_ms = 600000\n");
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    let (spool, metrics) = (exporter.spool().clone(), exporter.metrics().clone());
    for n in 0..100 {
        exporter.handle().offer(event(n));
    }
    let out = server.out.clone();
    assert!(wait_until(Duration::from_secs(30), || received_ids(&out).len() >= 100).await);
    assert_eq!(
        spool.cursor("s"),
        0,
        "nothing confirmed before the settle time"
    );
    exporter.shutdown().await;
    assert_eq!(
        spool.cursor("s"),
        100,
        "the clean close confirmed every batch"
    );
    assert_eq!(
        metrics.counter(belay_export::metrics::DELIVERED, "s", None),
        100
    );
    drop(spool);

    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    exporter.handle().offer(event(100));
    assert!(wait_until(Duration::from_secs(30), || received_ids(&out).len() >= 101).await);
    // In order: anything sent again would have come before event 100.
    let ids = received_ids(&out);
    assert_eq!(ids.len(), 101, "nothing sent twice");
    assert_eq!(ids[100], event(100).id);
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clean_stop_confirms_what_rsyslog_read() {
    clean_stop_confirms(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clean_stop_confirms_what_rsyslog_read() {
    clean_stop_confirms(true).await;
}

/// Stopped after the receiver died: nothing pending is confirmed, and the next start
/// sends it all to the restarted receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_the_receiver_died_keeps_pending_events_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = rsyslog(dir.path(), "tcp", None);
    let (port, out) = (server.port, server.out.clone());
    let sink = stream_sink(port, None, "confirm_after_ms = 600000\n");
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    let spool = exporter.spool().clone();
    for n in 0..100 {
        exporter.handle().offer(event(n));
    }
    assert!(wait_until(Duration::from_secs(30), || received_ids(&out).len() >= 100).await);
    drop(server); // SIGKILL
    exporter.shutdown().await;
    assert_eq!(spool.cursor("s"), 0, "a dead receiver confirms nothing");
    drop(spool);

    let _server = rsyslog_on(dir.path(), "tcp", None, port);
    let exporter = Exporter::start(config(dir.path(), "", &sink)).unwrap();
    assert!(wait_until(Duration::from_secs(60), || received_ids(&out).len() >= 200).await);
    let ids = received_ids(&out);
    for n in 0..100 {
        assert_eq!(ids[100 + n as usize], event(n).id, "sent again, in order");
    }
    exporter.shutdown().await;
}
