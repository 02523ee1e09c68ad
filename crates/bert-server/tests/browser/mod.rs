//! A headless Chromium driven over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`:
//! JSON messages ended by a NUL byte, commands on the browser's fd 3, answers and events on its fd
//! 4), so that the playground test types, clicks and reads the page as a person would, with no
//! WebDriver or websocket library.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A browser with one page open.
pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    events: BufReader<std::io::PipeReader>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

/// The Chromium executable: `$CHROMIUM`, else the first of the usual names on PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts `executable` headless with one blank page.
    pub fn start(executable: &Path) -> Browser {
        let profile = std::env::temp_dir().join(format!("bert-chromium-{}", std::process::id()));
        let (browser_reads, commands) = std::io::pipe().expect("a pipe");
        let (events, browser_writes) = std::io::pipe().expect("a pipe");
        let (read_fd, write_fd) = (OwnedFd::from(browser_reads), OwnedFd::from(browser_writes));
        let (r, w) = (read_fd.as_raw_fd(), write_fd.as_raw_fd());
        let mut command = Command::new(executable);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (dup2) are made.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting chromium");
        drop((read_fd, write_fd));
        let mut browser = Browser {
            child,
            commands,
            events: BufReader::new(events),
            next_id: 0,
            session: String::new(),
            _profile: TempDir(profile),
        };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("a target").to_string();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .expect("writing to chromium");
        loop {
            let mut buffer = Vec::new();
            let n = self
                .events
                .read_until(0, &mut buffer)
                .expect("reading from chromium");
            assert!(n > 0, "chromium closed the pipe during {method}");
            buffer.pop();
            let reply: Value = serde_json::from_slice(&buffer).expect("a JSON message");
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (awaited if it is a promise).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true, failing after `timeout` with `what`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration, what: &str) {
        let started = Instant::now();
        while self.eval(expression) != json!(true) {
            assert!(started.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The viewport: `width` CSS pixels wide, a phone's if `mobile`.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Clicks the middle of the element with `id`, as a mouse does.
    pub fn click(&mut self, id: &str) {
        let expression = format!(
            "(() => {{ const e = document.getElementById('{id}'); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        );
        let point = self.eval(&expression);
        let (x, y) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Replaces the text of the field with `id` by typing `text` into it.
    pub fn type_into(&mut self, id: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById('{id}'); e.focus(); e.select(); }})()"
        ));
        self.press("Delete", "Delete", 46);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A key press on the focused element.
    pub fn press(&mut self, key: &str, code: &str, key_code: u32) {
        for kind in ["keyDown", "keyUp"] {
            let mut event =
                json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code});
            if key == "Enter" && kind == "keyDown" {
                event["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", event);
        }
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = crate::common::base64_bytes(shot["data"].as_str().expect("image data"));
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
