//! The workflow file (docs/design.md §4), parsed and checked.
//!
//! ```yaml
//! name: appointment-reminders
//! on: appointment.created            # one type, a list, or a glob
//! if: data.status == 'booked'        # CEL, optional
//! steps:
//!   - sms: {to: "{{ data.patientPhone }}", body: "Confirmed for {{ data.start | datetime }}."}
//!   - schedule:
//!       key: "reminder:{{ data.id }}"
//!       at: "{{ data.start }}"
//!       offset: -24h
//!       steps:
//!         - sms: {to: "{{ data.patientPhone }}", body: "Tomorrow at {{ data.start | time }}."}
//! ```
//!
//! Every error names the file, the step (`step 2 (schedule) > step 1 (sms)`)
//! and the field, and says what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use eventflow_model::filter::Filter;
use eventflow_model::{EventType, ResourceType, TypeFilter};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{duration, template};

/// A workflow that loaded.
#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    /// The file it came from (its name within the workflows directory).
    pub file: String,
    pub on: TypeFilter,
    pub condition: Option<Filter>,
    /// The condition's source, as written.
    pub condition_source: Option<String>,
    pub steps: Vec<Step>,
}

/// One step: its type and its settings (templates checked, not rendered).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 1-based, as people count.
    pub number: usize,
    pub kind: StepKind,
    pub config: Map<String, Value>,
    /// A `schedule` step's steps, run when its timer fires.
    pub steps: Vec<Step>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Sms,
    Email,
    Slack,
    Http,
    Create,
    Update,
    Schedule,
    Cancel,
    Claim,
}

impl StepKind {
    pub const ALL: [StepKind; 9] = [
        StepKind::Sms,
        StepKind::Email,
        StepKind::Slack,
        StepKind::Http,
        StepKind::Create,
        StepKind::Update,
        StepKind::Schedule,
        StepKind::Cancel,
        StepKind::Claim,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Sms => "sms",
            StepKind::Email => "email",
            StepKind::Slack => "slack",
            StepKind::Http => "http",
            StepKind::Create => "create",
            StepKind::Update => "update",
            StepKind::Schedule => "schedule",
            StepKind::Cancel => "cancel",
            StepKind::Claim => "claim",
        }
    }

    /// Whether the step calls something outside the server (a provider, a
    /// URL): such a step renews its run's lease first.
    pub fn calls_out(self) -> bool {
        matches!(
            self,
            StepKind::Sms | StepKind::Email | StepKind::Slack | StepKind::Http | StepKind::Claim
        )
    }

    /// Required and optional fields.
    fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            StepKind::Sms => (&["to", "body"], &[]),
            StepKind::Email => (&["to", "subject", "body"], &[]),
            StepKind::Slack => (&["text"], &["channel"]),
            StepKind::Http => (&["url"], &["method", "headers", "body", "sign"]),
            StepKind::Create => (&["type", "body"], &["clinic"]),
            StepKind::Update => (&["type", "id", "body"], &["clinic"]),
            StepKind::Schedule => (&["key", "steps"], &["at", "offset", "after"]),
            StepKind::Cancel => (&["key"], &[]),
            StepKind::Claim => (&[], &["encounter"]),
        }
    }
}

/// Why a workflow file was refused: one line naming the file, the step and
/// the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    pub file: String,
    /// Where in the workflow: `name`, `on`, `if`, `steps`, `step 2 (sms)`,
    /// `step 1 (schedule) > step 1 (http)`, or `workflow` for the file as a
    /// whole (not YAML, unreadable).
    pub at: String,
    /// The whole line, starting with `at`.
    pub message: String,
}

/// What is wrong, and where in the workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    at: String,
    detail: String,
}

fn problem(at: &str, detail: impl Into<String>) -> Problem {
    Problem {
        at: at.to_string(),
        detail: detail.into(),
    }
}

/// A file of the workflows directory, loaded or not.
#[derive(Debug)]
pub struct Loaded {
    pub file: String,
    /// `None`: a file of the directory itself, run for every tenant.
    /// `Some(id)`: a file of the tenant's subdirectory (`workflows/ten_…/`,
    /// where `/v1/workflows` writes), run for that tenant only.
    pub tenant: Option<String>,
    pub result: Result<Arc<Workflow>, LoadError>,
}

/// Whether a subdirectory's name is a tenant id (`ten_…`).
pub fn is_tenant_dir(name: &str) -> bool {
    (name.starts_with("ten_") || eventflow_model::id::is_organisation_id(name))
        && eventflow_model::id::is_well_formed(name)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    on: OneOrMany,
    #[serde(rename = "if", default)]
    condition: Option<String>,
    steps: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What a file is checked against besides its own rules: the server's
/// outbound guard and its CEL budget.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// `http` step URLs the file fixes are checked against it (`None`: not).
    pub url_policy: Option<eventflow_delivery::UrlPolicy>,
    /// `limits.cel_cost`: an `if` that cannot fit it even on an empty event
    /// is refused.
    pub cel_cost: u64,
}

impl Default for Checks {
    fn default() -> Checks {
        Checks {
            url_policy: None,
            cel_cost: eventflow_model::filter::DEFAULT_COST_LIMIT,
        }
    }
}

/// Parses and checks one workflow file's text.
pub fn parse(file: &str, text: &str) -> Result<Workflow, LoadError> {
    parse_with(file, text, Checks::default())
}

/// [`parse`], with an `http` step's `url` checked against the server's
/// outbound guard where the file fixes it: a URL written out whole, or
/// the `http://` a template starts with under `--production`. (A URL a
/// template makes is checked when the step runs.) The `if` is compiled
/// within the server's CEL budget.
pub fn parse_with(file: &str, text: &str, checks: Checks) -> Result<Workflow, LoadError> {
    let fail_at = |p: Problem| LoadError {
        file: file.to_string(),
        // A problem of the file as a whole says so itself ("not a workflow").
        message: if p.at == "workflow" {
            p.detail
        } else {
            format!("{}: {}", p.at, p.detail)
        },
        at: p.at,
    };
    let fail = |at: &str, detail: &str| fail_at(problem(at, detail));
    // Anchors and aliases (`&a`, `*a`) are refused: a few hundred bytes of
    // them expand to hundreds of megabytes. A workflow writes each value out.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_aliases: 0,
            max_anchors: 0,
            max_merge_keys: 0,
        },
    };
    let raw: Raw = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        if let serde_saphyr::Error::Budget { breach, .. } = innermost(&e)
            && matches!(
                breach,
                serde_saphyr::budget::BudgetBreach::Aliases { .. }
                    | serde_saphyr::budget::BudgetBreach::Anchors { .. }
                    | serde_saphyr::budget::BudgetBreach::MergeKeys { .. }
            )
        {
            return fail(
                "workflow",
                "not a workflow: YAML anchors and aliases (&name, *name, <<) are not accepted; write each value out",
            );
        }
        fail(
            "workflow",
            &format!(
                "not a workflow: {}",
                e.to_string().lines().next().unwrap_or("invalid YAML")
            ),
        )
    })?;
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 100
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(fail("name", "must be 1 to 100 of a-z, 0-9, - and _"));
    }
    let types: Vec<String> = match raw.on {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(ts) => ts,
    };
    if types.is_empty() {
        return Err(fail("on", "must name at least one event type"));
    }
    let on =
        TypeFilter::parse_list(types.iter().map(String::as_str)).map_err(|e| fail("on", &e))?;
    for t in on.patterns() {
        if !t.ends_with('*')
            && EventType::parse(t).is_none()
            && !eventflow_model::event::is_operational(t)
            && !eventflow_model::topics::is_topic(t)
        {
            return Err(fail(
                "on",
                &format!("{t} is not an event type or topic (GET /v1/event-types lists the types)"),
            ));
        }
    }
    let condition = raw
        .condition
        .as_deref()
        .map(|source| Filter::compile(source, checks.cel_cost))
        .transpose()
        .map_err(|e| fail("if", &e))?;
    if raw.steps.is_empty() {
        return Err(fail("steps", "a workflow needs at least one step"));
    }
    let steps = steps(&raw.steps, "", checks.url_policy).map_err(fail_at)?;
    Ok(Workflow {
        name: raw.name,
        file: file.to_string(),
        on,
        condition,
        condition_source: raw.condition,
        steps,
    })
}

/// The error a parse error wraps (with a snippet, at an alias).
fn innermost(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        e = match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => error,
            other => return other,
        };
    }
}

fn steps(
    list: &[Value],
    path: &str,
    policy: Option<eventflow_delivery::UrlPolicy>,
) -> Result<Vec<Step>, Problem> {
    list.iter()
        .enumerate()
        .map(|(i, v)| step(i + 1, v, path, policy))
        .collect()
}

fn step(
    number: usize,
    v: &Value,
    path: &str,
    policy: Option<eventflow_delivery::UrlPolicy>,
) -> Result<Step, Problem> {
    let here = format!("{path}step {number}");
    let names = StepKind::ALL.map(StepKind::name).join(", ");
    let Some(map) = v.as_object().filter(|m| m.len() == 1) else {
        return Err(problem(
            &here,
            format!("must be one of {names}, e.g. `- sms: {{to: …, body: …}}`"),
        ));
    };
    let (key, body) = map
        .iter()
        .next()
        .ok_or_else(|| problem(&here, "is empty"))?;
    let Some(kind) = StepKind::ALL.into_iter().find(|k| k.name() == key) else {
        return Err(problem(
            &here,
            format!("unknown step {key:?}; steps are {names}"),
        ));
    };
    let here = format!("{here} ({key})");
    let Some(config) = body.as_object() else {
        return Err(problem(&here, "its settings must be a map"));
    };
    let (required, optional) = kind.fields();
    for f in required {
        if !config.contains_key(*f) {
            return Err(problem(&here, format!("{f}: is required")));
        }
    }
    for f in config.keys() {
        if !required.contains(&f.as_str()) && !optional.contains(&f.as_str()) {
            let mut all: Vec<&str> = required.to_vec();
            all.extend_from_slice(optional);
            return Err(problem(
                &here,
                format!("{f}: unknown field; {key} takes {}", all.join(", ")),
            ));
        }
    }
    let mut config = config.clone();
    let nested = match kind {
        StepKind::Schedule => {
            let list = config
                .remove("steps")
                .and_then(|s| s.as_array().cloned())
                .ok_or_else(|| problem(&here, "steps: must be a list of steps"))?;
            if list.is_empty() {
                return Err(problem(&here, "steps: needs at least one step"));
            }
            match (config.contains_key("at"), config.contains_key("after")) {
                (true, false) | (false, true) => {}
                _ => {
                    return Err(problem(
                        &here,
                        "give exactly one of at (a time, with an optional offset) or after (a duration)",
                    ));
                }
            }
            if config.contains_key("offset") && !config.contains_key("at") {
                return Err(problem(&here, "offset: goes with at"));
            }
            for f in ["offset", "after"] {
                if let Some(d) = config.get(f) {
                    let text = d.as_str().ok_or_else(|| {
                        problem(&here, format!("{f}: must be a duration such as 24h"))
                    })?;
                    duration::parse(text).map_err(|e| problem(&here, format!("{f}: {e}")))?;
                }
            }
            steps(&list, &format!("{here} > "), policy)?
        }
        _ => Vec::new(),
    };
    if matches!(kind, StepKind::Create | StepKind::Update) {
        let t = config.get("type").and_then(Value::as_str).unwrap_or("");
        if t.parse::<ResourceType>().is_err() {
            return Err(problem(&here, "type: must be a record type such as intake"));
        }
        if !config.get("body").is_some_and(Value::is_object) {
            return Err(problem(&here, "body: must be a map of the record's fields"));
        }
    }
    if kind == StepKind::Http
        && let Some(m) = config.get("method")
        && !matches!(
            m.as_str(),
            Some("GET" | "POST" | "PUT" | "PATCH" | "DELETE")
        )
    {
        return Err(problem(
            &here,
            "method: must be GET, POST, PUT, PATCH or DELETE",
        ));
    }
    if kind == StepKind::Http
        && let Some(policy) = policy
        && let Some(url) = config.get("url").and_then(Value::as_str)
    {
        let fixed = !url.contains("{{") && !url.contains("{%") && !url.trim().is_empty();
        if fixed {
            policy
                .check(url.trim())
                .map_err(|e| problem(&here, format!("url: {e}")))?;
        } else if policy.https_only
            && url
                .trim_start()
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
        {
            return Err(problem(&here, "url: must use https:// in production"));
        }
    }
    templates(&Value::Object(config.clone()), &here, "")?;
    Ok(Step {
        number,
        kind,
        config,
        steps: nested,
    })
}

/// Checks every string in `v` as a template.
fn templates(v: &Value, here: &str, field: &str) -> Result<(), Problem> {
    match v {
        Value::String(s) => template::check(s).map_err(|e| problem(here, format!("{field}: {e}"))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| templates(item, here, &format!("{field}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, item)| {
            let f = if field.is_empty() {
                k.clone()
            } else {
                format!("{field}.{k}")
            };
            templates(item, here, &f)
        }),
        _ => Ok(()),
    }
}

/// The `*.yaml` and `*.yml` files of a directory (not its subdirectories), in name order.
fn workflow_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    files
}

/// The tenant subdirectories (`ten_…`) of a directory, in name order.
pub(crate) fn tenant_dirs(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            is_tenant_dir(&name).then_some((name, p))
        })
        .collect();
    dirs.sort();
    dirs
}

/// A file's name, size and modification time, and what parsing it gave:
/// a file whose size and time did not change is not parsed again.
pub(crate) type ParseCache =
    HashMap<PathBuf, ((u64, Option<SystemTime>), Result<Arc<Workflow>, LoadError>)>;

fn parse_file(
    path: &Path,
    file: &str,
    cache: &mut ParseCache,
    checks: Checks,
) -> Result<Arc<Workflow>, LoadError> {
    let stamp = std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()));
    if let Some(stamp) = stamp
        && let Some((seen, result)) = cache.get(path)
        && *seen == stamp
    {
        return result.clone();
    }
    let result = match std::fs::read_to_string(path) {
        Err(e) => Err(LoadError {
            file: file.to_string(),
            at: "workflow".into(),
            message: format!("cannot read the file: {e}"),
        }),
        Ok(text) => parse_with(file, &text, checks).map(Arc::new),
    };
    if let Some(stamp) = stamp {
        cache.insert(path.to_path_buf(), (stamp, result.clone()));
    }
    result
}

fn load_files(
    files: Vec<PathBuf>,
    tenant: Option<&str>,
    names: &mut std::collections::HashSet<String>,
    cache: &mut ParseCache,
    checks: Checks,
) -> Vec<Loaded> {
    files
        .into_iter()
        .map(|path| {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = parse_file(&path, &file, cache, checks).and_then(|w| {
                if names.insert(w.name.clone()) {
                    Ok(w)
                } else {
                    Err(LoadError {
                        file: file.clone(),
                        at: "name".into(),
                        message: format!(
                            "name: {} is already the name of another workflow",
                            w.name
                        ),
                    })
                }
            });
            Loaded {
                file,
                tenant: tenant.map(str::to_string),
                result,
            }
        })
        .collect()
}

/// Loads every `*.yaml` and `*.yml` file of a directory (run for every
/// tenant) and of its tenant subdirectories (`ten_…/`, run for that tenant),
/// in name order. A missing directory has none. Two files a tenant sees may
/// not give the same name: the later one is refused.
pub fn load_dir(dir: &Path) -> Vec<Loaded> {
    load_dir_cached(dir, &mut ParseCache::new(), Checks::default())
}

/// [`load_dir`], parsing only the files not in `cache` as they are now;
/// the cache keeps only the files that exist.
pub(crate) fn load_dir_cached(dir: &Path, cache: &mut ParseCache, checks: Checks) -> Vec<Loaded> {
    let mut fresh = ParseCache::new();
    let mut global = std::collections::HashSet::new();
    let mut take = |files: Vec<PathBuf>| {
        for f in &files {
            if let Some(entry) = cache.remove(f) {
                fresh.insert(f.clone(), entry);
            }
        }
        files
    };
    let top = take(workflow_files(dir));
    let subs: Vec<(String, Vec<PathBuf>)> = tenant_dirs(dir)
        .into_iter()
        .map(|(tenant, sub)| (tenant, take(workflow_files(&sub))))
        .collect();
    let mut loaded = load_files(top, None, &mut global, &mut fresh, checks);
    for (tenant, files) in subs {
        let mut names = global.clone();
        loaded.extend(load_files(
            files,
            Some(&tenant),
            &mut names,
            &mut fresh,
            checks,
        ));
    }
    *cache = fresh;
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: appointment-reminders
on: appointment.created
if: data.status == 'booked'
steps:
  - sms:
      to: "{{ data.patientPhone }}"
      body: "Your appointment is confirmed for {{ data.start | datetime }}. Reply C to cancel or R to reschedule."
  - schedule:
      key: "reminder:{{ data.id }}"
      at: "{{ data.start }}"
      offset: -24h
      steps:
        - sms: {to: "{{ data.patientPhone }}", body: "Reminder: you have an appointment tomorrow at {{ data.start | time }}."}
"#;

    #[test]
    fn the_design_example_loads() {
        let w = parse("reminders.yaml", GOOD).unwrap();
        assert_eq!(w.name, "appointment-reminders");
        assert!(w.on.matches("appointment.created"));
        assert_eq!(w.steps.len(), 2);
        assert_eq!(w.steps[1].kind, StepKind::Schedule);
        assert_eq!(w.steps[1].steps[0].kind, StepKind::Sms);
    }

    fn error(text: &str) -> String {
        parse("w.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn an_error_names_where_it_is_apart_from_its_message() {
        let at = |text: &str| parse("w.yaml", text).unwrap_err().at;
        assert_eq!(
            at(&GOOD.replace("| time }}", "| time }")),
            "step 2 (schedule) > step 1 (sms)"
        );
        assert_eq!(at("name: a\non: nothing.here\nsteps: []\n"), "on");
        assert_eq!(at("name: A B\non: patient.created\nsteps: []\n"), "name");
        assert_eq!(at(": not yaml ["), "workflow");
    }

    #[test]
    fn a_broken_file_says_which_step_and_why() {
        let e = error(&GOOD.replace("| time }}", "| time }"));
        assert!(
            e.starts_with("w.yaml: step 2 (schedule) > step 1 (sms): body: "),
            "{e}"
        );
        let e = error(&GOOD.replace("- sms:\n      to", "- text:\n      to"));
        assert!(e.contains("step 1: unknown step \"text\""), "{e}");
        let e = error(&GOOD.replace("data.status == 'booked'", "data.status =="));
        assert!(e.starts_with("w.yaml: if: "), "{e}");
        let e = error(&GOOD.replace("on: appointment.created", "on: appointment.moved"));
        assert!(
            e.contains("on: appointment.moved is not an event type or topic"),
            "{e}"
        );
        let e = error(&GOOD.replace("offset: -24h", "offset: yesterday"));
        assert!(
            e.contains("step 2 (schedule): offset: must be a duration"),
            "{e}"
        );
        let e = error(&GOOD.replace("      body: \"Your", "      bdy: \"Your"));
        assert!(e.contains("step 1 (sms): body: is required"), "{e}");
        let e = error("name: x\non: patient.created\nsteps: []\n");
        assert!(e.contains("at least one step"), "{e}");
        let e =
            error("name: x\non: patient.created\nsteps:\n  - create: {type: unicorn, body: {}}\n");
        assert!(e.contains("type: must be a record type"), "{e}");
        assert!(error(": : :").starts_with("w.yaml: not a workflow"));
        let bomb = "name: x\non: patient.created\nsteps:\n  - cancel: {key: &a [x, x, x, x]}\n  - cancel: {key: [*a, *a, *a, *a]}\n";
        let e = error(bomb);
        assert!(e.contains("anchors and aliases"), "{e}");
        let e = error(&GOOD.replace("on: appointment.created", "on: &t appointment.created"));
        assert!(e.contains("anchors and aliases"), "{e}");
        assert!(
            error("name: X Y\non: patient.created\nsteps: [{cancel: {key: k}}]").contains("name:")
        );
    }

    #[test]
    fn a_condition_is_compiled_within_the_configured_budget() {
        let heavy = "name: x\non: patient.created\n\
            if: '[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, a + b >= 0))'\n\
            steps: [{cancel: {key: k}}]\n";
        assert!(parse("w.yaml", heavy).is_ok());
        let checks = Checks {
            cel_cost: 1_000,
            ..Checks::default()
        };
        let e = parse_with("w.yaml", heavy, checks).unwrap_err().to_string();
        assert!(
            e.starts_with("w.yaml: if: costs more than the limit of 1000 units"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_loads_each_file_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "name: broken\non: nope\nsteps: []",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a workflow").unwrap();
        let loaded = load_dir(dir.path());
        let files: Vec<&str> = loaded.iter().map(|l| l.file.as_str()).collect();
        assert_eq!(files, ["a.yaml", "b.yml", "c.yaml"]);
        assert!(loaded[0].result.is_ok());
        assert!(loaded[1].result.is_err());
        let dup = loaded[2].result.as_ref().unwrap_err().to_string();
        assert!(dup.contains("already the name"), "{dup}");
        assert!(load_dir(&dir.path().join("missing")).is_empty());
    }
}
