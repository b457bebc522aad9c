//! Our signatures, checked by a verifier we did not write: the Standard
//! Webhooks reference library for Python (PyPI `standardwebhooks`). `.ci/run`
//! installs it; without it this test says it was skipped.

use std::io::Write;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use eventflow_webhook::{HmacSecret, Signer, sign_headers};

const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, body, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
Webhook(secret).verify(body, headers)
print("verified")
"#;

fn reference_library_available() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn the_reference_library_verifies_our_signatures() {
    if !reference_library_available() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_reference_library_verifies_our_signatures: python3 with PyPI standardwebhooks is not installed (pip install standardwebhooks)"
        );
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = HmacSecret::generate();
    let new = HmacSecret::generate();
    let body =
        r#"{"id":"evt_1","type":"appointment.created","data":{"start":"2026-12-01T09:00:00Z"}}"#;
    // Signed by two secrets, as during a rotation: the library must accept
    // either secret, and refuse a third.
    let headers = sign_headers(
        &[Signer::Hmac(new.clone()), Signer::Hmac(old.clone())],
        "evt_1",
        now,
        body.as_bytes(),
    );
    let headers_json = serde_json_like(&headers.pairs());
    for (secret, should_pass) in [
        (new.expose(), true),
        (old.expose(), true),
        (HmacSecret::generate().expose(), false),
    ] {
        let out = Command::new("python3")
            .args(["-c", VERIFY, &secret, body, &headers_json])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            should_pass,
            "stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A changed body is refused.
    let out = Command::new("python3")
        .args(["-c", VERIFY, &new.expose(), "{}", &headers_json])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A JSON object of the header pairs (this crate keeps no JSON dependency).
fn serde_json_like(pairs: &[(String, String)]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let members: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("\"{}\": \"{}\"", esc(k), esc(v)))
        .collect();
    format!("{{{}}}", members.join(", "))
}
