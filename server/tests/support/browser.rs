//! Real-browser tests: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver, via fantoccini) from async tests. Included with
//! `#[path = "support/browser.rs"] mod browser;`.
//!
//! ```ignore
//! let browser = Browser::start().await;          // one chromedriver per test
//! let alice = browser.new_session().await;       // own profile, own cookie jar
//! alice.goto(&console_url).await;
//! alice.type_into("#username", "alice").await;
//! alice.click("#sign-in").await;
//! alice.wait_for_text("#who", "alice@example.com", WAIT).await;
//! ```
//!
//! Chromium and chromedriver come from `cargo xtask setup`; without them every browser
//! test fails (never skips): a console nobody tested in a browser must not look green.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A reasonable bound for one wait in a browser test on a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(50);

/// A chromedriver process on a loopback port; it and every Chromium it started are
/// killed when this is dropped.
#[derive(Clone, Copy)]
enum Priority {
    Normal,
    Idle,
}

pub struct Browser {
    driver: Child,
    url: String,
    /// chromedriver's output, shown when something goes wrong.
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and waits until it accepts sessions.
    pub async fn start() -> Self {
        Self::start_with(Priority::Normal).await
    }

    /// A browser whose processes run only on CPU time nothing else wants (SCHED_IDLE,
    /// which Chromium's own priority changes cannot undo): for benchmarks on one
    /// machine, where reviewers' browsers would otherwise starve the server they watch.
    pub async fn start_idle() -> Self {
        Self::start_with(Priority::Idle).await
    }

    async fn start_with(priority: Priority) -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: browser tests of the console need Chromium and \
                 chromedriver; run `cargo xtask setup` (installs chromium and chromium-driver)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let output = std::fs::File::create(&log).unwrap();
        let mut command = match priority {
            Priority::Normal => Command::new(CHROMEDRIVER),
            Priority::Idle => {
                let mut chrt = Command::new("chrt");
                chrt.args(["--idle", "0", CHROMEDRIVER]);
                chrt
            }
        };
        let driver = command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            // Its own process group, so Drop can kill the Chromium processes too: killed
            // with SIGKILL, chromedriver cannot take them down itself.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {CHROMEDRIVER}: {err}"));
        let mut browser = Self {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            log,
            dir,
        };
        browser.wait_until_ready().await;
        browser
    }

    async fn wait_until_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("chromedriver exited ({status}):\n{}", self.log_text());
            }
            if let Ok(response) = http.get(format!("{}/status", self.url)).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == json!(true)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within {WAIT:?}:\n{}",
                self.url,
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// chromedriver's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new headless Chromium with a fresh profile: its own cookies and storage, so
    /// two sessions are two people.
    pub async fn new_session(&self) -> Session {
        let profile = tempfile::tempdir_in(self.dir.path()).unwrap();
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        // The console's certificate comes from belay's own CA, which this profile does
        // not trust.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Tests run as root, and Chromium refuses to sandbox as root.
                    "--no-sandbox",
                    "--disable-gpu",
                    // /dev/shm is small in containers; Chromium crashes tabs without this.
                    "--disable-dev-shm-usage",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                    // Nothing in a test should reach the network beyond loopback.
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--metrics-recording-only",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "chromedriver could not start Chromium: {err}\n{}",
                    self.log_text()
                )
            });
        Session {
            client,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's /shutdown quits every Chromium it started, cleanly and reaped;
        // a SIGKILL alone would orphan them (zombies until init gets to them).
        let port = self.url.rsplit(':').next().unwrap_or_default();
        if let Ok(mut stream) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            use std::io::Write as _;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
        }
        let pid = self.driver.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !exited_unreaped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group goes now. chromedriver is not reaped yet (at
        // most a zombie), so its pid, the group's id, cannot belong to anyone else.
        // SAFETY: kill(2) with a negative pid signals the process group chromedriver
        // leads (spawned with process_group(0)); it touches no memory of ours.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// Whether child `pid` has exited, leaving it to be reaped by `Child::wait`.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data, all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which lives across the call; WNOWAIT
    // leaves the child for Child::wait to reap.
    let found = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: reading si_pid of the siginfo waitid filled in (0 when nothing exited).
    found == 0 && unsafe { info.si_pid() } != 0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One browser window with its own profile. Helpers panic with what the page showed
/// (and save a screenshot) instead of returning errors: a test reads top to bottom.
pub struct Session {
    client: Client,
    _profile: tempfile::TempDir,
}

impl Session {
    /// The underlying WebDriver client, for anything the helpers lack.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Waits until the page's URL starts with `prefix` (after redirects, say) and
    /// returns it.
    pub async fn wait_for_url(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await;
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() >= deadline {
                return self
                    .fail(&format!(
                        "the page is at {url}, not {prefix}... after {timeout:?}"
                    ))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css`, once there is one.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element;
            }
            if Instant::now() >= deadline {
                return self
                    .fail(&format!("no element matches {css:?} after {timeout:?}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css` whose text contains `text`, once there is one.
    pub async fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for element in self
                .client
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default()
            {
                // The element may be replaced between find and text: look again.
                let Ok(shown) = element.text().await else {
                    continue;
                };
                if shown.contains(text) {
                    return element;
                }
                seen.push(shown);
            }
            if Instant::now() >= deadline {
                return self.fail(&format!(
                    "no element matching {css:?} shows {text:?} after {timeout:?}; they show {seen:?}"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the first element matching `css` (waiting up to `WAIT` for it).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css, WAIT).await.text().await.unwrap()
    }

    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css, WAIT).await;
        if let Err(err) = element.click().await {
            return self.fail(&format!("cannot click {css:?}: {err}")).await;
        }
    }

    /// Replaces the value of the input matching `css` with `text`, typed key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css, WAIT).await;
        element.clear().await.unwrap();
        if let Err(err) = element.send_keys(text).await {
            return self.fail(&format!("cannot type into {css:?}: {err}")).await;
        }
    }

    /// Runs `body` as the body of a function in the page (`return` gives the value) and
    /// returns what it returned, as JSON.
    pub async fn eval(&self, body: &str) -> Value {
        self.eval_with(body, Vec::new()).await
    }

    /// `eval` with `arguments[0..]` set to `args`.
    pub async fn eval_with(&self, body: &str, args: Vec<Value>) -> Value {
        match self.client.execute(body, args).await {
            Ok(value) => value,
            Err(err) => self.fail(&format!("script failed: {err}\n{body}")).await,
        }
    }

    /// The cookies the browser would send to the current page, HttpOnly ones included,
    /// with the attributes they were stored with.
    pub async fn cookies(&self) -> Vec<BrowserCookie> {
        self.client
            .get_all_cookies()
            .await
            .unwrap()
            .iter()
            .map(|c| BrowserCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                path: c.path().map(str::to_owned),
                domain: c.domain().map(str::to_owned),
                secure: c.secure().unwrap_or(false),
                http_only: c.http_only().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                expires: c.expires_datetime().map(|t| t.unix_timestamp()),
            })
            .collect()
    }

    pub async fn cookie(&self, name: &str) -> Option<BrowserCookie> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Saves what the window shows as `<target>/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = target_dir().join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.png", file_name(name)));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// From the page the window shows now (navigate to a `StaticSite` of another
    /// origin first), POSTs `body` to `url` with the browser's cookies
    /// (`credentials: 'include'`) as a page of that origin can without asking the
    /// target: a CORS "simple" request (text/plain, no custom headers, so no preflight)
    /// in `no-cors` mode. Returns what the page could see, `{"type": "opaque", ...}` or
    /// `{"error": ...}`; whether the POST changed anything must be checked on the server.
    pub async fn post_from_page(&self, url: &str, body: &str) -> Value {
        const SCRIPT: &str = r#"
            const [url, body, done] = arguments;
            fetch(url, {
                method: "POST",
                mode: "no-cors",
                credentials: "include",
                headers: {"Content-Type": "text/plain"},
                body,
            }).then(
                (r) => done({type: r.type, status: r.status}),
                (e) => done({error: String(e)}),
            );
        "#;
        match self
            .client
            .execute_async(SCRIPT, vec![json!(url), json!(body)])
            .await
        {
            Ok(value) => value,
            Err(err) => self.fail(&format!("fetch to {url} failed: {err}")).await,
        }
    }

    /// From the page the window shows now, submits an HTML form with `fields` to `url`
    /// (a top-level POST navigation: the classic cross-site request forgery).
    pub async fn submit_form_from_page(&self, url: &str, fields: &[(&str, &str)]) {
        let fields: Value = fields.iter().map(|(k, v)| json!([k, v])).collect();
        self.eval_with(
            r#"
            const [url, fields] = arguments;
            const form = document.createElement("form");
            form.method = "POST";
            form.action = url;
            for (const [name, value] of fields) {
                const input = document.createElement("input");
                input.type = "hidden";
                input.name = name;
                input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
            "#,
            vec![json!(url), fields],
        )
        .await;
    }

    /// Ends the WebDriver session (Chromium exits). Dropping the session does too, but
    /// in the background.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    /// Panics with `problem`, the page's URL and a screenshot's path.
    async fn fail<T>(&self, problem: &str) -> T {
        let url = self.current_url().await;
        let thread = std::thread::current();
        let name = format!("failed-{}", thread.name().unwrap_or("test"));
        let screenshot = match self.client.screenshot().await {
            Ok(png) => {
                let dir = target_dir().join("console-screenshots");
                let path = dir.join(format!("{}.png", file_name(&name)));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(&path, png);
                path.display().to_string()
            }
            Err(err) => format!("(no screenshot: {err})"),
        };
        panic!("{problem}\n  page: {url}\n  screenshot: {screenshot}");
    }
}

/// A cookie as the browser stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    /// `None` for a host-only cookie (as `__Host-` cookies must be).
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    /// "Strict", "Lax" or "None", as the browser reports it.
    pub same_site: Option<String>,
    /// Unix seconds; `None` for a session cookie.
    pub expires: Option<i64>,
}

/// `$CARGO_TARGET_DIR`, else the target directory this test binary was built into
/// (the nearest ancestor with cargo's CACHEDIR.TAG), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").exists())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A loopback web site that serves one HTML page at every path and records what it was
/// asked: the page of another origin in cross-origin tests, a redirect target, a page
/// to click on. `http` sites are another *site* than an `https://127.0.0.1` console
/// (SameSite cookies stay home); `https` ones on another port are the same site but
/// another *origin*, so SameSite=Strict cookies do go along and only the console's own
/// Origin and CSRF checks stand in the way.
pub struct StaticSite {
    pub addr: SocketAddr,
    url: String,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A request a `StaticSite` answered.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StaticSite {
    pub async fn http(html: &str) -> Self {
        Self::start(html, &[], None).await
    }

    /// Over TLS with a self-signed certificate for 127.0.0.1 (sessions accept it).
    pub async fn https(html: &str) -> Self {
        Self::https_with_headers(html, &[]).await
    }

    /// `https`, every response also carrying `headers` (a `set-cookie`, say).
    pub async fn https_with_headers(html: &str, headers: &[(&str, &str)]) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start(html, headers, Some(tls)).await
    }

    async fn start(
        html: &str,
        headers: &[(&str, &str)],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let response: Arc<str> = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
             content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n{extra}\r\n{html}",
            html.len()
        )
        .into();
        let task = tokio::spawn({
            let requests = Arc::clone(&requests);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (requests, response, tls) =
                        (Arc::clone(&requests), response.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    let _ = answer(stream, &response, &requests).await;
                                }
                            }
                            None => {
                                let _ = answer(stream, &response, &requests).await;
                            }
                        }
                    });
                }
            }
        });
        Self {
            addr,
            url: format!("{scheme}://{addr}"),
            requests,
            task,
        }
    }

    /// `http(s)://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    response: &str,
    requests: &Mutex<Vec<SeenRequest>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut line = head.lines().next().unwrap_or("").split_whitespace();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    requests.lock().unwrap().push(SeenRequest {
        method: line.next().unwrap_or("").to_owned(),
        target: line.next().unwrap_or("").to_owned(),
        headers,
        body: String::from_utf8_lossy(&buf[header_end..]).into_owned(),
    });
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
