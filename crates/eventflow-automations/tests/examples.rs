//! The workflows shipped in `examples/workflows/` all load.

use std::path::Path;

#[test]
fn every_example_workflow_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let loaded = eventflow_automations::load_dir(&dir);
    let mut names = Vec::new();
    for l in &loaded {
        match &l.result {
            Ok(w) => names.push(w.name.clone()),
            Err(e) => panic!("{e}"),
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "appointment-cancelled",
            "appointment-changes",
            "appointment-reminders",
            "billing-claim",
            "care-team-alert",
            "intake-completed",
            "patient-onboarding",
            "pharmacy-alert",
        ]
    );
}
