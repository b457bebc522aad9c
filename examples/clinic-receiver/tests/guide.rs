//! Runs every `sh` block of docs/guide.md, in order, as one bash script in an
//! empty directory — with `cargo run --release -- …` standing for this
//! build's `eventflow` binary and `cargo run -p eventflow-example-receiver`
//! for the example's — so the guide cannot go stale.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap_or_default()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_guide_works() {
    let receiver = PathBuf::from(env!("CARGO_BIN_EXE_clinic-receiver"));
    let eventflow = receiver.parent().unwrap().join("eventflow");
    if !eventflow.exists() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED every_command_of_the_guide_works: build the eventflow binary first (cargo test --workspace does)"
        );
        return;
    }
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md"))
            .unwrap();
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() >= 6, "the guide has its steps: {blocks:#?}");
    let script = format!(
        "exec > guide.out 2>&1\n\
         set -euo pipefail\n\
         cargo() {{\n\
           if [ \"$1 $2 $3\" = 'run --release --' ]; then shift 3; {eventflow:?} \"$@\";\n\
           elif [ \"$1 $2 $3\" = 'run -p eventflow-example-receiver' ]; then {receiver:?};\n\
           else echo \"the guide runs an unexpected cargo $*\" >&2; return 1; fi\n\
         }}\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
         {}",
        blocks.join("\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(dir.path());
    for (name, _) in std::env::vars() {
        if name.starts_with("EVENTFLOW_") || name == "WEBHOOK_SECRET" {
            cmd.env_remove(name);
        }
    }
    // A process group of its own: whatever the guide starts in the
    // background is killed with it, whatever happens.
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id().unwrap_or_default();
    struct KillGroup(u32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{}", self.0)])
                .status();
        }
    }
    let _guard = KillGroup(group);
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait()).await;
    let output = std::fs::read_to_string(dir.path().join("guide.out")).unwrap_or_default();
    let logs: String = [
        "server.log",
        "listen.log",
        "listen.err",
        "receiver.err",
        "actions.log",
    ]
    .iter()
    .map(|f| {
        format!(
            "--- {f}\n{}\n",
            std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()
        )
    })
    .collect();
    let ok = matches!(&status, Ok(Ok(s)) if s.success());
    assert!(ok, "the guide failed ({status:?}):\n{output}\n{logs}");
    let actions = std::fs::read_to_string(dir.path().join("actions.log")).unwrap();
    assert!(actions.contains("\"action\":\"sms\""), "{actions}");
    assert!(actions.contains("schedule_reminder"), "{actions}");
    let forwarded = std::fs::read_to_string(dir.path().join("listen.log")).unwrap();
    assert!(
        forwarded.contains("appointment.created") && forwarded.contains("→ 200"),
        "{forwarded}"
    );
    // Step 6: the built-in workflow sent the confirmation and set the timer.
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(f)).unwrap()).unwrap()
    };
    assert_eq!(read("workflow.json")["status"], "loaded");
    let outbox = read("outbox.json");
    let sms = &outbox["data"][0];
    assert_eq!(sms["channel"], "sms", "{outbox}");
    assert_eq!(sms["workflow"], "appointment-reminders");
    assert!(
        sms["body"].as_str().unwrap().contains("is confirmed for"),
        "{sms}"
    );
    let timers = read("timers.json");
    assert!(
        timers["data"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("reminder:appt_"),
        "{timers}"
    );
    // Step 7: the network's log holds both clinics' patients, numbered.
    let network = read("network.json");
    let events = network["data"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{network}");
    let clinics: Vec<&str> = events
        .iter()
        .map(|e| e["tenantId"].as_str().unwrap())
        .collect();
    assert_ne!(clinics[0], clinics[1], "{network}");
    assert_eq!(events[0]["networkSequence"], 1);
    assert_eq!(events[1]["networkSequence"], 2);
    let endpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("endpoint.json")).unwrap())
            .unwrap();
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
}
