//! Templates: Jinja syntax (minijinja), strict about undefined names, so a
//! missing `vars` entry or a misspelt field is an error in the run record
//! rather than an empty SMS. Filters for the times records carry:
//! `{{ data.start | datetime }}` → `Tue 1 Dec 2026, 09:00 UTC`,
//! `| time` → `09:00`, `| date` → `Tue 1 Dec 2026`.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior, Value};

fn format_time(value: &str, pattern: &str) -> Result<String, minijinja::Error> {
    let ts: jiff::Timestamp = value.parse().map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "expects an RFC 3339 time such as 2026-12-01T09:00:00Z",
        )
    })?;
    Ok(ts.strftime(pattern).to_string())
}

fn datetime(value: String) -> Result<String, minijinja::Error> {
    format_time(&value, "%a %-d %b %Y, %H:%M UTC")
}

fn time(value: String) -> Result<String, minijinja::Error> {
    format_time(&value, "%H:%M")
}

fn date(value: String) -> Result<String, minijinja::Error> {
    format_time(&value, "%a %-d %b %Y")
}

/// The one environment every workflow template renders in.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("datetime", datetime);
        env.add_filter("time", time);
        env.add_filter("date", date);
        env
    })
}

/// Checks that a template compiles; the error is minijinja's, one line.
pub fn check(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid template")
                .to_string()
        })
}

/// Renders a template against a context (the event envelope and `vars`).
/// Something undefined is named: `vars.pharmacy_url is not defined`.
pub fn render(source: &str, context: &serde_json::Value) -> Result<String, String> {
    let env = environment();
    env.render_str(source, Value::from(minijinja::value::Serde(context)))
        .map_err(|e| {
            if e.kind() == minijinja::ErrorKind::UndefinedError
                && let Some(missing) = missing_paths(env, source, context)
            {
                return missing;
            }
            e.to_string()
                .lines()
                .next()
                .unwrap_or("could not render")
                .to_string()
        })
}

/// The variables (`data.x`, `vars.y`) a template names that the context
/// does not have, as one sentence.
fn missing_paths(
    env: &Environment<'static>,
    source: &str,
    context: &serde_json::Value,
) -> Option<String> {
    let template = env.template_from_str(source).ok()?;
    let mut missing: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut here = context;
            for part in path.split('.') {
                match here.get(part) {
                    Some(next) => here = next,
                    None => return true,
                }
            }
            false
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    missing.sort();
    let verb = if missing.len() == 1 { "is" } else { "are" };
    Some(format!("{} {verb} not defined", missing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_with_filters_and_refuses_what_is_undefined() {
        let ctx =
            json!({"data": {"start": "2026-12-01T09:00:00Z", "patientPhone": "+15551234567"}});
        assert_eq!(
            render("Confirmed for {{ data.start | datetime }}.", &ctx).unwrap(),
            "Confirmed for Tue 1 Dec 2026, 09:00 UTC."
        );
        assert_eq!(render("{{ data.start | time }}", &ctx).unwrap(), "09:00");
        assert_eq!(
            render("{{ vars.pharmacy_url }}", &ctx).unwrap_err(),
            "vars.pharmacy_url is not defined"
        );
        assert!(check("{{ data.start | datetime ").is_err());
        assert!(check("{{ data.start }}").is_ok());
    }
}
