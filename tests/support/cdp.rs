//! Headless Chromium driven through the DevTools protocol (CDP) over a websocket: enough
//! to open a page, evaluate JavaScript in it, collect its console errors and take
//! screenshots. The browser is Debian's `chromium`, which `scripts/setup.sh` installs.
//!
//! One websocket to the browser; the page is a target attached in flat mode, so every
//! command to it carries its `sessionId`, and events arrive on the same socket.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a single protocol reply may take (a 12 MB page's load included) before the
/// test fails instead of hanging.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running headless Chromium; killed when dropped.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// Starts Chromium, or returns `None` when it is absent and `CALIB_SKIP_BROWSER=1`.
/// Absent otherwise, the test fails saying how to install it.
pub fn launch() -> Option<Browser> {
    if !Path::new(CHROMIUM).exists() {
        if std::env::var("CALIB_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("CALIB_SKIP_BROWSER=1 and no {CHROMIUM}: browser test skipped");
            return None;
        }
        panic!(
            "{CHROMIUM} not found: the report's browser tests need Debian's chromium. Run \
             `bash scripts/setup.sh` (it installs it), or set CALIB_SKIP_BROWSER=1 to skip them."
        );
    }
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // Chromium prints its endpoint on stderr; keep draining stderr afterwards so the
    // pipe never fills.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            panic!("chromium printed no `DevTools listening on ws://...` line within 60 s");
        }
    };
    let address = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("ws://host:port/...")
        .to_string();
    let stream = TcpStream::connect(&address).expect("connecting to chromium's DevTools port");
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
    Some(Browser {
        child,
        ws,
        next_id: 0,
        events: vec![],
        _profile: profile,
    })
}

impl Browser {
    /// Sends `method` (to the page `session`, or the browser) and returns its result;
    /// a protocol error fails the test.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        loop {
            let reply = self.receive(method);
            if reply["id"] == json!(id) {
                if let Some(err) = reply.get("error") {
                    panic!("{method} failed: {err}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// The next message; events are kept in `events`.
    fn receive(&mut self, waiting_for: &str) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("no reply from chromium to {waiting_for}: {e}"));
            if let Message::Text(text) = msg {
                let value: Value = serde_json::from_str(&text).expect("CDP messages are JSON");
                if value.get("method").is_some() {
                    self.events.push(value.clone());
                }
                return value;
            }
            assert!(Instant::now() < deadline, "no reply to {waiting_for}");
        }
    }

    /// Waits until an event `method` has arrived (returns it).
    pub fn wait_event(&mut self, method: &str) -> Value {
        loop {
            if let Some(e) = self.events.iter().find(|e| e["method"] == method) {
                return e.clone();
            }
            self.receive(method);
        }
    }

    /// A new page of `width` x `height` CSS pixels with the runtime, log and page
    /// domains on, so console errors and exceptions are recorded from the start.
    pub fn page(&mut self, width: u32, height: u32) -> Page<'_> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(Some(&session), domain, json!({}));
        }
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        Page {
            browser: self,
            session,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a mut Browser,
    session: String,
}

impl Page<'_> {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params)
    }

    /// Opens `path` and waits for its load event.
    pub fn open(&mut self, path: &Path) {
        let url = format!(
            "file://{}",
            path.canonicalize().expect("the page exists").display()
        );
        self.browser
            .events
            .retain(|e| e["method"] != "Page.loadEventFired");
        let nav = self.call("Page.navigate", json!({ "url": url }));
        assert!(nav.get("errorText").is_none(), "navigating to {url}: {nav}");
        self.browser.wait_event("Page.loadEventFired");
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`; fails the test after `seconds`.
    pub fn wait_for(&mut self, expression: &str, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.eval(expression) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "`{expression}` never became true"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Console errors, uncaught exceptions and log entries at level error so far.
    pub fn errors(&self) -> Vec<String> {
        self.browser
            .events
            .iter()
            .filter(|e| e["sessionId"] == json!(self.session))
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled" if p["type"] == "error" => {
                        Some(format!("console.error: {}", p["args"]))
                    }
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(format!("log: {}", p["entry"]))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Saves a PNG of the viewport, or of the element matched by `selector` (scrolled
    /// into view first), to `path`.
    pub fn screenshot(&mut self, selector: Option<&str>, path: &Path) {
        let mut params = json!({ "format": "png" });
        if let Some(sel) = selector {
            let rect = self.eval(&format!(
                "(() => {{ const e = document.querySelector({sel:?}); e.scrollIntoView(); \
                 const r = e.getBoundingClientRect(); \
                 return [r.x + scrollX, r.y + scrollY, r.width, r.height]; }})()"
            ));
            let r: Vec<f64> = serde_json::from_value(rect).expect("a rectangle");
            params["clip"] =
                json!({ "x": r[0], "y": r[1], "width": r[2], "height": r[3], "scale": 1 });
            params["captureBeyondViewport"] = json!(true);
        }
        let shot = self.call("Page.captureScreenshot", params);
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

/// Standard base64 (CDP's screenshots) to bytes.
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    } as u32;
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for quad in s.as_bytes().chunks(4) {
        let digits: Vec<u32> = quad
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0, |n, (i, d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}
