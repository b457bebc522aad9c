//! An endpoint's `filter`: a CEL expression over the event envelope
//! (DESIGN.md §3.3), e.g. `data.status == 'finished' && has(previous.status)`.
//!
//! The expression sees the envelope's top-level fields as variables: `id`,
//! `type`, `sequence`, `createdAt`, `tenantId`, `resource`, `data` and
//! `previous` (`{}` when the event has none, so `has(previous.x)` is simply
//! false). An expression that does not parse, or names a variable that does
//! not exist, is refused when the endpoint is saved. At delivery time an
//! expression that errors (a missing key, a type mismatch) or yields anything
//! but `true` does not match.

use std::sync::{Arc, OnceLock};

use cel::{Context, Env, ExecutionError, Program, Value};

use crate::Event;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// The variables an expression may name.
pub const VARIABLES: &[&str] = &[
    "id",
    "type",
    "sequence",
    "createdAt",
    "tenantId",
    "resource",
    "data",
    "previous",
];

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    program: Program,
}

/// The event bound as CEL variables, built once and shared by every
/// endpoint's filter.
pub struct Bound {
    context: Context<'static, 'static>,
}

impl Bound {
    pub fn new(event: &Event) -> Bound {
        let mut context = Context::with_env(env());
        let object = |v: Option<&crate::Object>| -> Value {
            v.and_then(|o| cel::to_value(o).ok())
                .unwrap_or_else(|| cel::to_value(crate::Object::new()).unwrap_or(Value::Null))
        };
        context.add_variable_from_value("id", event.id.as_str());
        context.add_variable_from_value("type", event.event_type.as_str());
        context.add_variable_from_value("sequence", event.sequence);
        context.add_variable_from_value("createdAt", event.created_at.as_str());
        context.add_variable_from_value("tenantId", event.tenant_id.as_str());
        context.add_variable_from_value(
            "resource",
            cel::to_value(&event.resource).unwrap_or(Value::Null),
        );
        context.add_variable_from_value("data", object(Some(&event.data)));
        context.add_variable_from_value("previous", object(event.previous.as_ref()));
        Bound { context }
    }
}

impl Filter {
    /// Compiles an expression; the error is the parser's message, or names
    /// the unknown variable.
    pub fn compile(source: &str) -> Result<Filter, String> {
        if source.trim().is_empty() {
            return Err("must not be empty (leave it out to match every event)".into());
        }
        if source.len() > MAX_FILTER_LEN {
            return Err(format!("must be at most {MAX_FILTER_LEN} bytes"));
        }
        // The parser is recursive; keep a hostile nesting from the stack.
        let depth = source
            .bytes()
            .scan(0i32, |d, b| {
                match b {
                    b'(' | b'[' | b'{' => *d += 1,
                    b')' | b']' | b'}' => *d -= 1,
                    _ => {}
                }
                Some(*d)
            })
            .max()
            .unwrap_or(0);
        if depth > 32 {
            return Err("nests too deeply (at most 32 levels)".into());
        }
        let program = std::panic::catch_unwind(|| Program::compile(source))
            .map_err(|_| "is not a valid CEL expression".to_string())?
            .map_err(|e| format!("is not a valid CEL expression: {e}"))?;
        let filter = Filter { program };
        // A dry run against an empty envelope finds names that can never
        // resolve (`dta.status`), which the parser alone accepts.
        let sample = Event {
            id: "evt_sample".into(),
            event_type: "patient.created".into(),
            sequence: 1,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            tenant_id: "ten_sample".into(),
            resource: crate::ResourceRef {
                resource_type: "patient".into(),
                id: "pat_sample".into(),
                version: 1,
            },
            data: crate::Object::new(),
            previous: None,
        };
        if let Err(ExecutionError::UndeclaredReference(name)) =
            filter.evaluate(&Bound::new(&sample))
        {
            return Err(format!(
                "names {name}, which is not a field of the event envelope (use one of {})",
                VARIABLES.join(", ")
            ));
        }
        Ok(filter)
    }

    fn evaluate(&self, bound: &Bound) -> Result<Value, ExecutionError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.program.execute(&bound.context)
        }))
        .unwrap_or_else(|_| Err(ExecutionError::function_error("filter", "panicked")))
    }

    /// Whether the event passes: only a `true` result does.
    pub fn matches(&self, bound: &Bound) -> bool {
        matches!(self.evaluate(bound), Ok(Value::Bool(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: serde_json::Value, previous: Option<serde_json::Value>) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "encounter.updated".into(),
            sequence: 7,
            created_at: "2026-11-29T17:00:00.000Z".into(),
            tenant_id: "ten_1".into(),
            resource: crate::ResourceRef {
                resource_type: "encounter".into(),
                id: "enc_1".into(),
                version: 2,
            },
            data: data.as_object().unwrap().clone(),
            previous: previous.map(|p| p.as_object().unwrap().clone()),
        }
    }

    #[test]
    fn the_design_examples_match_as_documented() {
        let f = Filter::compile("data.status == 'finished' && has(previous.status)").unwrap();
        let finished = event(
            json!({"status": "finished"}),
            Some(json!({"status": "in-progress"})),
        );
        assert!(f.matches(&Bound::new(&finished)));
        let untouched = event(json!({"status": "finished"}), Some(json!({"notes": "x"})));
        assert!(!f.matches(&Bound::new(&untouched)));
        let created = event(json!({"status": "finished"}), None);
        assert!(!f.matches(&Bound::new(&created)));

        let f = Filter::compile("data.flag in ['high', 'critical']").unwrap();
        assert!(f.matches(&Bound::new(&event(json!({"flag": "critical"}), None))));
        assert!(!f.matches(&Bound::new(&event(json!({"flag": "normal"}), None))));
        // A missing key is no match, not an error.
        assert!(!f.matches(&Bound::new(&event(json!({}), None))));

        let f = Filter::compile("type.startsWith('encounter.') && resource.version > 1").unwrap();
        assert!(f.matches(&Bound::new(&event(json!({}), None))));
        let f = Filter::compile("sequence").unwrap();
        assert!(
            !f.matches(&Bound::new(&event(json!({}), None))),
            "only true matches"
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        let e = Filter::compile("data.status ==").unwrap_err();
        assert!(e.contains("not a valid CEL expression"), "{e}");
        let e = Filter::compile("dta.status == 'x'").unwrap_err();
        assert!(e.contains("dta"), "{e}");
        assert!(Filter::compile("").is_err());
        assert!(Filter::compile(&"(".repeat(100)).is_err());
        assert!(Filter::compile(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
        // Comprehension variables are not envelope fields, and are fine.
        Filter::compile("data.items.exists(i, i.code == 'x')").unwrap();
    }
}
