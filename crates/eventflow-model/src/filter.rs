//! An endpoint's `filter`: a CEL expression over the event envelope
//! (docs/design.md §3.3), e.g. `data.status == 'finished' && has(previous.status)`.
//!
//! The expression sees the envelope's top-level fields as variables: `id`,
//! `type`, `sequence`, `createdAt`, `tenantId`, `resource`, `data` and
//! `previous` (`{}` when the event has none, so `has(previous.x)` is simply
//! false). An expression that does not parse, or names a variable that does
//! not exist, is refused when the endpoint is saved. At delivery time an
//! expression that errors (a missing key, a type mismatch) or yields anything
//! but `true` does not match.
//!
//! # Cost
//!
//! Every evaluation has a budget of cost units. When the program is compiled,
//! each operand of every function or operator call, and the range of every
//! comprehension (`all`, `exists`, `map`, …), is wrapped in an internal
//! `@cost(…)` call that charges the operand's size — one unit, plus a unit per
//! 16 bytes of a string, plus the sizes of a list's or map's members (and a
//! comprehension 50 units and its loop's nodes per element) — before the
//! operation sees it. What a CEL operation costs is at most linear in the size
//! of its operands, and a comprehension's iterations are charged with its
//! range, so the units bound the work done. The walk that weighs a value
//! stops as soon as the budget is spent, so weighing costs no more than the
//! budget either. An evaluation that runs out stops at the next charge and is
//! [`Outcome::OverBudget`]: no match, with the reason for the caller to record.
//! A filter that runs out against an empty envelope can never fit, and is
//! refused when saved.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::{CelBytes, CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Value};

use crate::Event;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// The default budget of one evaluation, in cost units.
pub const DEFAULT_COST_LIMIT: u64 = 100_000;

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

/// The internal function that charges an operand; `@` names cannot be
/// written in CEL source.
const COST: &str = "@cost";
/// Bytes of a string that cost one unit (string operations are linear scans
/// and copies, far cheaper per byte than an interpreter step).
const BYTES_PER_UNIT: u64 = 16;
/// What one iteration of a comprehension costs besides its nodes (binding
/// the loop variables), in units.
const ITERATION: u64 = 50;
/// `matches`, with the text's scan charged a unit a byte, and the pattern
/// compiled once per thread within [`REGEX_SIZE_LIMIT`].
const MATCHES: &str = "@matches";
/// The largest compiled pattern `matches` takes, in bytes.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Compiled patterns kept per thread.
const REGEX_CACHE: usize = 64;
/// Charges a comprehension's range, and its loop per element.
const COST_RANGE: &str = "@cost_range";

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_overload(COST, "cost_dyn", vec![cel::common::types::DYN_TYPE], charge)
            .expect("@cost is declared once");
        env.add_overload(
            COST_RANGE,
            "cost_range_dyn_int",
            vec![cel::common::types::DYN_TYPE, cel::common::types::INT_TYPE],
            charge_range,
        )
        .expect("@cost_range is declared once");
        env.add_overload(
            MATCHES,
            "matches_string_string",
            vec![
                cel::common::types::STRING_TYPE,
                cel::common::types::STRING_TYPE,
            ],
            matches,
        )
        .expect("@matches is declared once");
        Arc::new(env)
    })
    .clone()
}

thread_local! {
    /// Units left to the evaluation running on this thread.
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Set when the running evaluation ran out.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// `@cost(x)`: charges the size of `x` and returns it unchanged.
fn charge<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(value) = args.pop() else {
        return Err(ExecutionError::invalid_argument_count(1, 0));
    };
    let mut left = LEFT.get();
    let fits = weigh(value.as_ref(), &mut left);
    LEFT.set(left);
    if fits {
        Ok(value)
    } else {
        SPENT.set(true);
        Err(ExecutionError::function_error(
            "filter",
            "cost limit reached",
        ))
    }
}

thread_local! {
    static REGEXES: std::cell::RefCell<Vec<(String, Result<regex::Regex, String>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Compiles a pattern as `matches` takes it.
fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                format!(
                    "a pattern of matches is too large (at most {REGEX_SIZE_LIMIT} bytes compiled)"
                )
            }
            _ => "a pattern of matches is not a valid regular expression".to_string(),
        })
}

/// `@matches(text, pattern)`: whether the pattern matches the text.
fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [text, pattern] = args.as_slice() else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    let (Some(text), Some(pattern)) = (
        text.downcast_ref::<CelString>(),
        pattern.downcast_ref::<CelString>(),
    ) else {
        return Err(ExecutionError::function_error(
            "matches",
            "takes two strings",
        ));
    };
    // A match scans the text, a step per byte at worst for each state of
    // the pattern that is live: a unit a byte.
    let left = LEFT.get();
    let cost = text.inner().len() as u64 + 1;
    if cost > left {
        LEFT.set(0);
        SPENT.set(true);
        return Err(ExecutionError::function_error(
            "filter",
            "cost limit reached",
        ));
    }
    LEFT.set(left - cost);
    let found = REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let at = match cache.iter().position(|(p, _)| p == pattern.inner()) {
            Some(at) => at,
            None => {
                if cache.len() == REGEX_CACHE {
                    drop(cache.remove(0));
                }
                let compiled = compile_regex(pattern.inner());
                cache.push((pattern.inner().to_string(), compiled));
                cache.len() - 1
            }
        };
        match &cache[at].1 {
            Ok(re) => Ok(re.is_match(text.inner())),
            Err(e) => Err(e.clone()),
        }
    });
    match found {
        Ok(b) => Ok(CowVal::owned(cel::common::types::CelBool::from(b))),
        Err(e) => Err(ExecutionError::function_error("matches", e)),
    }
}

/// `@cost_range(range, k)`: charges the size of a comprehension's range plus
/// `k` units (the nodes of its loop) and [`ITERATION`] per element, and
/// returns the range.
fn charge_range<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let per_item = args
        .pop()
        .and_then(|k| {
            k.downcast_ref::<cel::common::types::CelInt>()
                .map(|k| *k.inner())
        })
        .unwrap_or(1)
        .max(1) as u64;
    let Some(range) = args.pop() else {
        return Err(ExecutionError::invalid_argument_count(2, 0));
    };
    let items = range
        .as_sizer()
        .map(|s| (*s.size().inner()).max(0) as u64)
        .unwrap_or(1);
    let mut left = LEFT.get();
    let fits = match left.checked_sub(items.saturating_mul(per_item + ITERATION)) {
        Some(rest) => {
            left = rest;
            weigh(range.as_ref(), &mut left)
        }
        None => {
            left = 0;
            false
        }
    };
    LEFT.set(left);
    if fits {
        Ok(range)
    } else {
        SPENT.set(true);
        Err(ExecutionError::function_error(
            "filter",
            "cost limit reached",
        ))
    }
}

/// Subtracts the size of `value` from `left`; false once it would go below
/// zero (the walk stops there).
fn weigh(value: &dyn Val, left: &mut u64) -> bool {
    fn take(left: &mut u64, n: u64) -> bool {
        match left.checked_sub(n) {
            Some(rest) => {
                *left = rest;
                true
            }
            None => {
                *left = 0;
                false
            }
        }
    }
    if !take(left, 1) {
        return false;
    }
    if let Some(s) = value.downcast_ref::<CelString>() {
        return take(left, s.inner().len() as u64 / BYTES_PER_UNIT);
    }
    if let Some(b) = value.downcast_ref::<CelBytes>() {
        return take(left, b.inner().len() as u64 / BYTES_PER_UNIT);
    }
    if let Some(list) = value.downcast_ref::<CelList>() {
        return list.inner().iter().all(|v| weigh(v.as_ref(), left));
    }
    if let Some(optional) = value.downcast_ref::<cel::common::types::CelOptional>() {
        return optional.inner().is_none_or(|v| weigh(v, left));
    }
    if let Some(map) = value.downcast_ref::<CelMap>() {
        return map.inner().iter().all(|(k, v)| {
            let key = match k {
                cel::common::types::CelMapKey::String(s) => s.inner().len() as u64 / BYTES_PER_UNIT,
                _ => 1,
            };
            take(left, key) && weigh(v.as_ref(), left)
        });
    }
    true
}

/// Wraps every operand of every call, and every comprehension's range, in
/// `@cost(…)`. Accumulators (`@result`) are left alone, and so is the shape
/// of a `map`/`filter` step (`@result + [x]`, which the interpreter appends in
/// place): there the appended element is charged instead.
fn instrument(expr: &mut IdedExpr, next_id: &mut u64) -> Result<(), String> {
    fn wrap(expr: &mut IdedExpr, next_id: &mut u64) {
        let inner = std::mem::take(expr);
        *next_id += 1;
        *expr = IdedExpr {
            id: *next_id,
            expr: Expr::Call(CallExpr {
                func_name: COST.to_string(),
                target: None,
                args: vec![inner],
            }),
        };
    }
    fn is_accumulator(expr: &IdedExpr) -> bool {
        matches!(&expr.expr, Expr::Ident(name) if name.starts_with('@'))
    }
    /// `@result + [x]`, the step of `map` and `filter` the interpreter
    /// appends in place.
    fn is_append_call(call: &CallExpr) -> bool {
        call.args.len() == 2
            && is_accumulator(&call.args[0])
            && matches!(call.args[1].expr, Expr::List(_))
    }
    fn is_append(expr: &IdedExpr) -> bool {
        matches!(&expr.expr, Expr::Call(call) if is_append_call(call))
    }
    match &mut expr.expr {
        Expr::Call(call) if call.func_name == "matches" => {
            // `s.matches(p)` or `matches(s, p)`: our own, charged and with
            // a bounded pattern; a literal pattern is checked now.
            let mut args: Vec<IdedExpr> = call.target.take().map(|t| *t).into_iter().collect();
            args.append(&mut call.args);
            if args.len() != 2 {
                return Err("matches takes a string and a pattern".into());
            }
            if let Expr::Literal(cel::common::ast::LiteralValue::String(p)) = &args[1].expr {
                compile_regex(p.inner())?;
            }
            for arg in &mut args {
                instrument(arg, next_id)?;
                wrap(arg, next_id);
            }
            call.func_name = MATCHES.to_string();
            call.args = args;
        }
        Expr::Call(call) => {
            let append = is_append_call(call);
            if let Some(target) = call.target.as_deref_mut() {
                instrument(target, next_id)?;
                // A bare name is a variable (charged where it is used) or a
                // namespace (`optional.of`), which must stay a name.
                if !is_accumulator(target) && !matches!(target.expr, Expr::Ident(_)) {
                    wrap(target, next_id);
                }
            }
            for arg in &mut call.args {
                instrument(arg, next_id)?;
                if append {
                    if let Expr::List(list) = &mut arg.expr {
                        for element in &mut list.elements {
                            wrap(element, next_id);
                        }
                    }
                } else if !is_accumulator(arg) && !is_append(arg) {
                    wrap(arg, next_id);
                }
            }
        }
        Expr::Comprehension(c) => {
            let per_item = nodes(&c.loop_cond) + nodes(&c.loop_step);
            instrument(&mut c.iter_range, next_id)?;
            let range = std::mem::take(&mut c.iter_range);
            *next_id += 2;
            c.iter_range = IdedExpr {
                id: *next_id,
                expr: Expr::Call(CallExpr {
                    func_name: COST_RANGE.to_string(),
                    target: None,
                    args: vec![
                        range,
                        IdedExpr {
                            id: *next_id - 1,
                            expr: Expr::Literal(cel::common::ast::LiteralValue::Int(
                                (per_item as i64).into(),
                            )),
                        },
                    ],
                }),
            };
            instrument(&mut c.accu_init, next_id)?;
            instrument(&mut c.loop_cond, next_id)?;
            instrument(&mut c.loop_step, next_id)?;
            instrument(&mut c.result, next_id)?;
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                instrument(element, next_id)?;
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    instrument(&mut e.key, next_id)?;
                    instrument(&mut e.value, next_id)?;
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    instrument(&mut f.value, next_id)?;
                }
            }
        }
        Expr::Select(select) => instrument(&mut select.operand, next_id)?,
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    Ok(())
}

/// The nodes of an expression, not counting the loops of comprehensions
/// inside it (they charge their own).
fn nodes(expr: &IdedExpr) -> u64 {
    fold(expr, 1, &|total, e| match &e.expr {
        Expr::Comprehension(c) => total + nodes(&c.iter_range) + nodes(&c.accu_init) + 1,
        _ => total + nodes(e),
    })
}

fn max_id(expr: &IdedExpr) -> u64 {
    fold(expr, expr.id, &|max, e| max.max(max_id(e)))
}

/// Folds `f` over the direct children of `expr`.
fn fold(expr: &IdedExpr, init: u64, f: &dyn Fn(u64, &IdedExpr) -> u64) -> u64 {
    let mut acc = init;
    let mut visit = |e: &IdedExpr| acc = f(acc, e);
    match &expr.expr {
        Expr::Call(call) => {
            call.target.as_deref().into_iter().for_each(&mut visit);
            call.args.iter().for_each(&mut visit);
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(e);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(&mut visit),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    visit(&e.key);
                    visit(&e.value);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    visit(&f.value);
                }
            }
        }
        Expr::Select(select) => visit(&select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    acc
}

/// What one evaluation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The expression is `true`.
    Match,
    /// Anything else: `false`, another value, or an error.
    NoMatch,
    /// The evaluation ran out of cost units and was stopped: no match.
    OverBudget,
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    /// The program with its operands charged.
    expression: IdedExpr,
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
    /// Compiles an expression for a save: parses and checks it, then runs it
    /// against an empty envelope within `cost_limit`. The error is the
    /// parser's message, names the unknown variable, or says that the
    /// expression cannot fit the budget.
    pub fn compile(source: &str, cost_limit: u64) -> Result<Filter, String> {
        let filter = Filter::load(source)?;
        // A dry run against an empty envelope finds names that can never
        // resolve (`dta.status`), which the parser alone accepts, and
        // expressions whose cost does not depend on the event at all.
        let sample = Event {
            id: "evt_sample".into(),
            event_type: "patient.created".into(),
            sequence: 1,
            network_sequence: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            tenant_id: "ten_sample".into(),
            resource: crate::ResourceRef {
                resource_type: "patient".into(),
                id: "pat_sample".into(),
                version: 1,
            },
            data: crate::Object::new(),
            previous: None,
            patient_id: None,
            topics: Vec::new(),
            changed_fields: None,
        };
        match filter.run(&Bound::new(&sample), cost_limit) {
            (_, true, _) => Err(format!(
                "costs more than the limit of {cost_limit} units even on an empty event"
            )),
            (Err(ExecutionError::UndeclaredReference(name)), _, _) => Err(format!(
                "names {name}, which is not a field of the event envelope (use one of {})",
                VARIABLES.join(", ")
            )),
            _ => Ok(filter),
        }
    }

    /// Parses a stored expression, checked when it was saved: no dry run.
    pub fn load(source: &str) -> Result<Filter, String> {
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
        let program = std::panic::catch_unwind(|| env().compile(source))
            .map_err(|_| "is not a valid CEL expression".to_string())?
            .map_err(|e| format!("is not a valid CEL expression: {e}"))?;
        let mut expression = program.expression().clone();
        let mut next_id = max_id(&expression);
        instrument(&mut expression, &mut next_id)?;
        Ok(Filter { expression })
    }

    /// Evaluates within `cost_limit` units: the result, whether it ran out,
    /// and the units it spent.
    fn run(&self, bound: &Bound, cost_limit: u64) -> (Result<Value, ExecutionError>, bool, u64) {
        LEFT.set(cost_limit);
        SPENT.set(false);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Value::resolve(&self.expression, &bound.context)
        }))
        .unwrap_or_else(|_| Err(ExecutionError::function_error("filter", "panicked")));
        let spent = SPENT.get();
        let used = cost_limit - LEFT.get().min(cost_limit);
        LEFT.set(u64::MAX);
        SPENT.set(false);
        (result, spent, used)
    }

    /// Whether the event passes (only a `true` result does), within
    /// `cost_limit` units.
    pub fn evaluate(&self, bound: &Bound, cost_limit: u64) -> Outcome {
        self.evaluate_counted(bound, cost_limit).0
    }

    /// [`evaluate`](Self::evaluate), with the units spent.
    pub fn evaluate_counted(&self, bound: &Bound, cost_limit: u64) -> (Outcome, u64) {
        let (result, spent, used) = self.run(bound, cost_limit);
        let outcome = match (result, spent) {
            (_, true) => Outcome::OverBudget,
            (Ok(Value::Bool(true)), false) => Outcome::Match,
            _ => Outcome::NoMatch,
        };
        (outcome, used)
    }

    /// [`evaluate`](Self::evaluate) with the default budget, as a yes or no.
    pub fn matches(&self, bound: &Bound) -> bool {
        self.evaluate(bound, DEFAULT_COST_LIMIT) == Outcome::Match
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
            network_sequence: None,
            created_at: "2026-11-29T17:00:00.000Z".into(),
            tenant_id: "ten_1".into(),
            resource: crate::ResourceRef {
                resource_type: "encounter".into(),
                id: "enc_1".into(),
                version: 2,
            },
            data: data.as_object().unwrap().clone(),
            previous: previous.map(|p| p.as_object().unwrap().clone()),
            patient_id: None,
            topics: Vec::new(),
            changed_fields: None,
        }
    }

    impl Filter {
        fn compile_default(source: &str) -> Result<Filter, String> {
            Filter::compile(source, DEFAULT_COST_LIMIT)
        }
    }

    fn nested(depth: usize) -> String {
        let list = "[0,1,2,3,4,5,6,7,8,9]";
        let mut s = "true".to_string();
        for d in 0..depth {
            s = format!("{list}.all(v{d}, {s})");
        }
        s
    }

    #[test]
    fn nested_comprehensions_that_cannot_fit_are_refused_when_saved() {
        // 10^3 iterations fit; 10^7 never can, whatever the event.
        Filter::compile_default(&nested(3)).unwrap();
        let e = Filter::compile_default(&nested(7)).unwrap_err();
        assert!(e.contains("costs more than the limit"), "{e}");
        // Stored before a limit was lowered: loads, and stops at run time.
        let f = Filter::load(&nested(8)).unwrap();
        let bound = Bound::new(&event(json!({}), None));
        assert_eq!(f.evaluate(&bound, 100_000), Outcome::OverBudget);
    }

    #[test]
    fn a_cost_that_depends_on_the_event_stops_at_run_time() {
        let f = Filter::compile_default("data.items.all(a, data.items.all(b, a != b || a == b))")
            .unwrap();
        let small = event(json!({"items": [1, 2, 3]}), None);
        assert_eq!(f.evaluate(&Bound::new(&small), 10_000), Outcome::Match);
        let items: Vec<i64> = (0..2_000).collect();
        let big = event(json!({ "items": items }), None);
        assert_eq!(f.evaluate(&Bound::new(&big), 10_000), Outcome::OverBudget);
        // The budget is per evaluation: the next one starts afresh.
        assert_eq!(f.evaluate(&Bound::new(&small), 10_000), Outcome::Match);
    }

    #[test]
    fn the_units_spent_are_counted() {
        let f = Filter::compile_default("data.l.exists(x, x == 'c')").unwrap();
        let e = event(json!({"l": ["a", "b", "c"]}), None);
        let (outcome, used) = f.evaluate_counted(&Bound::new(&e), 10_000);
        assert_eq!(outcome, Outcome::Match);
        assert!(used > 150 && used < 1_000, "{used}");
        let (outcome, used) = f.evaluate_counted(&Bound::new(&e), 100);
        assert_eq!((outcome, used), (Outcome::OverBudget, 100));
    }

    #[test]
    fn growing_values_are_charged_by_their_size() {
        // Each element of the outer list is a copy of the whole list, and
        // each `+` copies two of them: charged by their size, not per call.
        let f = Filter::load("size(data.l.map(x, data.l).map(y, y + y)) > 0").unwrap();
        let l: Vec<i64> = (0..3_000).collect();
        let e = event(json!({ "l": l }), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 1_000_000), Outcome::OverBudget);
        let e = event(json!({"l": [1, 2, 3]}), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 1_000_000), Outcome::Match);
        let f = Filter::load("data.s.contains('a') && data.l.exists(x, x == 'b')").unwrap();
        let long = "z".repeat(50_000);
        let e = event(json!({"s": long, "l": ["a", "b"]}), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 1_000), Outcome::OverBudget);
        assert_eq!(f.evaluate(&Bound::new(&e), 1_000_000), Outcome::NoMatch);
        let e = event(json!({"s": "abc", "l": ["a", "b"]}), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 1_000), Outcome::Match);
    }

    #[test]
    fn map_and_filter_results_are_unchanged_by_the_charges() {
        let f = Filter::compile_default(
            "data.l.map(x, x + 'a').filter(y, y != 'ba') == ['aa', 'ca'] && data.l.exists_one(z, z == 'b')",
        )
        .unwrap();
        let e = event(json!({"l": ["a", "b", "c"]}), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 10_000), Outcome::Match);
        // An error absorbed by `||` still matches, as CEL says.
        let f = Filter::compile_default("data.l.exists(x, x.missing == 1 || x == 'c')").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 10_000), Outcome::Match);
        let f = Filter::compile_default("data.l.exists(x, x == 'c')").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 10_000), Outcome::Match);
    }

    #[test]
    fn filter_and_map_over_a_thousand_items_fit_and_keep_their_results() {
        let items: Vec<serde_json::Value> = (0..1000)
            .map(|i| json!({"code": format!("c{i}"), "abnormal": i % 2 == 0}))
            .collect();
        let e = event(json!({ "obs": items }), None);
        let f = Filter::compile_default("data.obs.filter(o, o.abnormal).size() == 500").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 100_000), Outcome::Match);
        let f =
            Filter::compile_default("data.obs.map(o, o.abnormal, o.code).size() == 500").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 100_000), Outcome::Match);
    }

    #[test]
    fn optional_values_are_charged_by_what_they_hold() {
        let l: Vec<i64> = (0..50_000).collect();
        let r: Vec<i64> = (0..700).collect();
        let e = event(json!({ "l": l, "r": r }), None);
        let f = Filter::load("[data.?l].all(o, data.r.all(y, o == o))").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 100_000), Outcome::OverBudget);
        // Namespaced functions stay names.
        let f = Filter::compile_default("optional.of(data.r).hasValue()").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&e), 100_000), Outcome::Match);
    }

    #[test]
    fn matches_is_charged_and_its_patterns_are_bounded() {
        let f =
            Filter::compile_default("data.s.matches('^a+b$') && matches(data.s, 'b$')").unwrap();
        assert!(f.matches(&Bound::new(&event(json!({"s": "aaab"}), None))));
        assert!(!f.matches(&Bound::new(&event(json!({"s": "aaac"}), None))));
        let e = Filter::compile_default("data.s.matches('((a{100}){100}){100}')").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = Filter::compile_default("data.s.matches('(')").unwrap_err();
        assert!(e.contains("not a valid regular expression"), "{e}");
        // A pattern from the event is bounded the same way at run time.
        let f = Filter::compile_default("data.r.exists(x, data.s.matches(x))").unwrap();
        let e = event(json!({"s": "x", "r": ["((a{100}){100}){100}"]}), None);
        assert_eq!(f.evaluate(&Bound::new(&e), 100_000), Outcome::NoMatch);
        // The scan is charged a unit a byte.
        let long = event(json!({"s": "a".repeat(50_000), "r": ["b"]}), None);
        let f = Filter::load("data.s.matches('b') || data.s.matches('c')").unwrap();
        assert_eq!(f.evaluate(&Bound::new(&long), 60_000), Outcome::OverBudget);
    }

    #[test]
    fn the_design_examples_match_as_documented() {
        let f =
            Filter::compile_default("data.status == 'finished' && has(previous.status)").unwrap();
        let finished = event(
            json!({"status": "finished"}),
            Some(json!({"status": "in-progress"})),
        );
        assert!(f.matches(&Bound::new(&finished)));
        let untouched = event(json!({"status": "finished"}), Some(json!({"notes": "x"})));
        assert!(!f.matches(&Bound::new(&untouched)));
        let created = event(json!({"status": "finished"}), None);
        assert!(!f.matches(&Bound::new(&created)));

        let f = Filter::compile_default("data.flag in ['high', 'critical']").unwrap();
        assert!(f.matches(&Bound::new(&event(json!({"flag": "critical"}), None))));
        assert!(!f.matches(&Bound::new(&event(json!({"flag": "normal"}), None))));
        // A missing key is no match, not an error.
        assert!(!f.matches(&Bound::new(&event(json!({}), None))));

        let f = Filter::compile_default("type.startsWith('encounter.') && resource.version > 1")
            .unwrap();
        assert!(f.matches(&Bound::new(&event(json!({}), None))));
        let f = Filter::compile_default("sequence").unwrap();
        assert!(
            !f.matches(&Bound::new(&event(json!({}), None))),
            "only true matches"
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        let e = Filter::compile_default("data.status ==").unwrap_err();
        assert!(e.contains("not a valid CEL expression"), "{e}");
        let e = Filter::compile_default("dta.status == 'x'").unwrap_err();
        assert!(e.contains("dta"), "{e}");
        assert!(Filter::compile_default("").is_err());
        assert!(Filter::compile_default(&"(".repeat(100)).is_err());
        assert!(Filter::compile_default(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
        // Comprehension variables are not envelope fields, and are fine.
        Filter::compile_default("data.items.exists(i, i.code == 'x')").unwrap();
    }
}

/// How long a whole budget takes to spend, printed (no assertion on time):
/// `cargo test --release -p eventflow-model --lib filter::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    use super::*;
    use serde_json::json;

    #[test]
    #[ignore = "prints timings; run by hand in a release build"]
    fn a_whole_budget_is_spent_in_about_a_millisecond() {
        let items: Vec<String> = (0..5000).map(|i| format!("item{i}")).collect();
        let event = Event {
            id: "evt_1".into(),
            event_type: "note.created".into(),
            sequence: 1,
            network_sequence: None,
            created_at: "2026-11-29T17:00:00.000Z".into(),
            tenant_id: "ten_1".into(),
            resource: crate::ResourceRef {
                resource_type: "note".into(),
                id: "note_1".into(),
                version: 1,
            },
            data: json!({"l": items, "s": "y".repeat(200_000), "status": "booked"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            previous: None,
            patient_id: None,
            topics: Vec::new(),
            changed_fields: None,
        };
        let bound = Bound::new(&event);
        let mut nested = "true".to_string();
        for d in 0..7 {
            nested = format!("[0,1,2,3,4,5,6,7,8,9].all(v{d}, {nested})");
        }
        for source in [
            nested.as_str(),
            "data.l.all(a, data.l.all(b, a != b || a == b))",
            "data.s.contains('zz') && data.l.exists(x, data.s.contains(x))",
            "data.status == 'booked'",
        ] {
            let f = Filter::load(source).expect("compiles");
            let start = std::time::Instant::now();
            let (outcome, used) = f.evaluate_counted(&bound, DEFAULT_COST_LIMIT);
            println!(
                "{:>10.3} ms {outcome:?} {used:>7} units  {}",
                start.elapsed().as_secs_f64() * 1000.0,
                &source[..source.len().min(48)]
            );
        }
    }
}
