//! Templates: Jinja syntax (minijinja), strict about undefined names, so a
//! missing `vars` entry or a misspelt field is an error in the run record
//! rather than an empty SMS. Filters for the times records carry:
//! `{{ data.start | datetime }}` → `Tue 1 Dec 2026, 09:00 UTC`,
//! `| time` → `09:00`, `| date` → `Tue 1 Dec 2026`.
//!
//! A render is bounded: it has `limits.template_fuel` (minijinja's fuel: an
//! instruction or 64 bytes of data each), and its output at most
//! `limits.template_output_bytes`. A template past either fails its step.

use std::sync::{Arc, Mutex, OnceLock};

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

/// How much one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// minijinja fuel per render.
    pub fuel: u64,
    /// The largest output of one render, in bytes.
    pub output_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            fuel: 200_000,
            output_bytes: 64 * 1024,
        }
    }
}

fn build(fuel: Option<u64>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(fuel);
    env.add_filter("datetime", datetime);
    env.add_filter("time", time);
    env.add_filter("date", date);
    env
}

/// The environment templates are checked in (nothing renders in it).
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| build(None))
}

/// The environment templates render in, with the fuel of `bounds` (one per
/// fuel setting: a server has one).
fn rendering(fuel: u64) -> Arc<Environment<'static>> {
    static ENVS: Mutex<Vec<(u64, Arc<Environment<'static>>)>> = Mutex::new(Vec::new());
    let mut envs = ENVS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, env)) = envs.iter().find(|(f, _)| *f == fuel) {
        return env.clone();
    }
    let env = Arc::new(build(Some(fuel)));
    if envs.len() >= 8 {
        envs.remove(0);
    }
    envs.push((fuel, env.clone()));
    env
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
/// Something undefined is named: `vars.pharmacy_url is not defined`. A
/// render past its bounds is "out of fuel" or "output larger than N bytes".
/// It can take as long as its fuel allows: call it off the async workers.
pub fn render(source: &str, context: &serde_json::Value, bounds: Bounds) -> Result<String, String> {
    let env = rendering(bounds.fuel);
    let out = env
        .render_str(source, Value::from(minijinja::value::Serde(context)))
        .map_err(|e| {
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                return format!(
                    "out of fuel: the template does more than limits.template_fuel ({}) allows",
                    bounds.fuel
                );
            }
            if e.kind() == minijinja::ErrorKind::UndefinedError
                && let Some(missing) = missing_paths(&env, source, context)
            {
                return missing;
            }
            e.to_string()
                .lines()
                .next()
                .unwrap_or("could not render")
                .to_string()
        })?;
    if out.len() > bounds.output_bytes {
        return Err(format!(
            "output larger than {} bytes (limits.template_output_bytes)",
            bounds.output_bytes
        ));
    }
    Ok(out)
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

    fn render(source: &str, ctx: &serde_json::Value) -> Result<String, String> {
        super::render(source, ctx, Bounds::default())
    }

    #[test]
    fn a_render_past_its_fuel_or_output_bound_fails_with_the_reason() {
        let ctx = json!({});
        let nested =
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        let tight = Bounds {
            fuel: 10_000,
            output_bytes: 1 << 20,
        };
        let e = super::render(nested, &ctx, tight).unwrap_err();
        assert!(e.starts_with("out of fuel"), "{e}");
        let big = "{% for a in range(200) %}0123456789{% endfor %}";
        assert_eq!(render(big, &ctx).unwrap().len(), 2000);
        let small = Bounds {
            fuel: 200_000,
            output_bytes: 1000,
        };
        let e = super::render(big, &ctx, small).unwrap_err();
        assert_eq!(
            e,
            "output larger than 1000 bytes (limits.template_output_bytes)"
        );
    }

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
