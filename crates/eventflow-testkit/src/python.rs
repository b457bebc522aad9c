//! Outside tools the tests run: Python libraries (an SMTP server, Twilio's
//! and FHIR's reference libraries) and `openssl` for a test certificate.
//! `.ci/run` installs them; without them a test prints a `SKIPPED` line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Whether `python3` can import every module named.
pub fn python_has(modules: &[&str]) -> bool {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints the `SKIPPED` line `.ci/run` looks for: straight to the stderr
/// handle (the test harness captures `eprintln!`, and a skip must be
/// visible), in one write, so that the lines of tests running beside it
/// cannot break into it.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Runs a Python script with arguments; returns standard output, or panics
/// with standard error.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A self-signed server certificate for 127.0.0.1 and localhost (cert, key), made
/// with `openssl`; `None` without it.
pub fn self_signed_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            // A server certificate, not a CA's: rustls refuses a CA
            // certificate as a server's.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some((cert, key))
}

/// An SMTP server (Python's aiosmtpd) that records each message it accepts.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
    _child: tokio::process::Child,
}

/// How the sink's connections are secured.
pub enum SmtpMode<'a> {
    None,
    /// STARTTLS required, with this certificate and key.
    Starttls(&'a Path, &'a Path),
    /// TLS from the first byte.
    Tls(&'a Path, &'a Path),
}

impl SmtpSink {
    /// Starts the server; `None` when python3 with aiosmtpd is missing.
    /// With `auth`, it requires that user name and password.
    pub async fn start(mode: SmtpMode<'_>, auth: Option<(&str, &str)>) -> Option<SmtpSink> {
        if !python_has(&["aiosmtpd"]) {
            return None;
        }
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg("-c").arg(include_str!("../support/smtp_sink.py"));
        match mode {
            SmtpMode::None => {
                cmd.arg("none");
            }
            SmtpMode::Starttls(c, k) => {
                cmd.arg("starttls").arg(c).arg(k);
            }
            SmtpMode::Tls(c, k) => {
                cmd.arg("tls").arg(c).arg(k);
            }
        }
        if let Some((u, p)) = auth {
            cmd.env("SMTP_SINK_USER", u).env("SMTP_SINK_PASSWORD", p);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP sink starts within 20 s")
            .expect("read")
            .expect("a first line");
        let port = serde_json::from_str::<Value>(&first).expect("json")["port"]
            .as_u64()
            .expect("port") as u16;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    crate::locked(&sink).push(v);
                }
            }
        });
        Some(SmtpSink {
            port,
            messages,
            _child: child,
        })
    }

    pub fn messages(&self) -> Vec<Value> {
        crate::locked(&self.messages).clone()
    }

    /// Waits until `n` messages arrived (at most `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        crate::wait_for(timeout, &format!("{n} emails"), || async {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}
