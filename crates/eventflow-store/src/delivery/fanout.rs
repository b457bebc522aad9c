//! Fan-out: which endpoints an event goes to, decided inside the writing
//! transaction, so an event and its deliveries commit together.
//!
//! The writer keeps each tenant's live endpoints compiled (type globs, CEL
//! filter). The list is tagged with the tenant's `endpoints_version`, which
//! every endpoint change bumps under the tenant's lock; a writer reads the
//! version when it takes that lock and reloads on a mismatch, so another
//! node's change is seen by the very next write.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use eventflow_model::filter::{Bound, Filter, Outcome};
use eventflow_model::{Event, TypeFilter};
use tokio::sync::mpsc;

use crate::delivery::{EndpointRow, FilterError, FreshDelivery, Ordering};

/// An endpoint ready to match events.
#[derive(Debug)]
pub struct Matcher {
    pub row: Arc<EndpointRow>,
    types: TypeFilter,
    filter: Option<Filter>,
    /// Set once this list has recorded that the filter ran out of budget,
    /// so a filter that always does costs one write, not one per event.
    over_budget_recorded: AtomicBool,
}

impl Matcher {
    pub fn new(row: EndpointRow) -> Matcher {
        let types = TypeFilter::parse_list(row.config.event_types.iter().map(String::as_str))
            .unwrap_or_else(|_| {
                // Checked when saved; a stored list that no longer parses
                // matches nothing rather than everything.
                TypeFilter::parse_list(["no.such.type"]).unwrap_or_default()
            });
        // Checked (with a dry run) when saved: loading runs nothing.
        let filter = row.config.filter.as_deref().map(Filter::load);
        let filter = match filter {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                tracing::warn!(endpoint = %row.id, "stored filter no longer compiles; the endpoint matches nothing");
                Filter::load("false").ok()
            }
        };
        Matcher {
            row: Arc::new(row),
            types,
            filter,
            over_budget_recorded: AtomicBool::new(false),
        }
    }

    /// Whether the event passes the types and the filter, and the units the
    /// filter spent.
    fn matches(&self, event: &Event, bound: &mut Option<Bound>, cost_limit: u64) -> (Outcome, u64) {
        if !event.matches(&self.types) {
            return (Outcome::NoMatch, 0);
        }
        match &self.filter {
            None => (Outcome::Match, 0),
            Some(f) => {
                f.evaluate_counted(bound.get_or_insert_with(|| Bound::new(event)), cost_limit)
            }
        }
    }

    /// Whether the event passes the endpoint's types and filter, and the
    /// units the filter spent.
    pub fn matches_event_counted(&self, event: &Event, cost_limit: u64) -> (Outcome, u64) {
        self.matches(event, &mut None, cost_limit)
    }

    /// The error to record for a filter that ran out of budget on `event`,
    /// the first time only.
    pub fn over_budget(&self, event: &Event, message: String, now: &str) -> Option<FilterError> {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::warn!(endpoint = %self.row.id, event = %event.id, "filter ran out of its cost budget; no match");
        metrics::counter!("eventflow_filter_over_budget_total").increment(1);
        (!self.over_budget_recorded.swap(true, Relaxed)).then(|| FilterError {
            message,
            event_id: event.id.clone(),
            at: now.to_string(),
        })
    }

    pub fn ordered(&self) -> bool {
        self.row.config.ordering == Ordering::Resource
    }
}

/// The writer's fan-out state.
#[derive(Debug)]
pub struct Fanout {
    /// This node's name, written as the lease owner of fresh deliveries.
    pub node: String,
    tenants: HashMap<String, (i64, Arc<Vec<Matcher>>)>,
    /// The group's timestamp and lease end, formatted.
    pub now: String,
    pub lease_until: String,
    fresh: Vec<FreshDelivery>,
    /// The events the group wrote: tenant, sequence, type bit.
    noted: Vec<(String, i64, u64)>,
    feed: Option<mpsc::Sender<Vec<FreshDelivery>>>,
    /// The budget of one filter evaluation, in cost units.
    pub cel_cost: u64,
    /// The largest record stored, in bytes of JSON.
    pub max_record_bytes: usize,
    /// What is left of the budget of all filter evaluations of the request
    /// being written ([`REQUEST_BUDGET`] evaluations' worth), so that no one
    /// request — a batch, an event many endpoints filter — holds the shared
    /// writer for long.
    request_left: u64,
    /// The same budget for the filters of the organisation's endpoints,
    /// so a clinic's filters cannot spend what its network's need (nor the
    /// other way).
    network_left: u64,
    /// Set when the group made deliveries due that were not handed to this
    /// node's dispatcher (not leased, retried, replayed, resumed, drained):
    /// at commit the dispatcher is told to look at the table.
    pub wake_dispatcher: bool,
    /// The tenants the group's transaction has locked, with their
    /// endpoints checked current: a later write of the group for the same
    /// tenant need not lock and check again (no other writer can change
    /// them while the lock holds; this one's changes forget the tenant).
    locked: std::collections::HashSet<String>,
    /// The group's audit entries, written together before it commits
    /// (nothing in a group reads them back).
    audits: Vec<crate::records::AuditEntry>,
}

/// Why a filter that spent its own budget did not match.
pub fn own_budget_spent(cel_cost: u64) -> String {
    format!("ran out of its cost budget ({cel_cost} units); the event did not match")
}

/// The filter evaluations' worth of cost units that all the filters run for
/// one request may spend together.
pub const REQUEST_BUDGET: u64 = 10;

/// How long a node holds a delivery it took before others may take it over.
pub const LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

impl Fanout {
    pub fn new(
        node: String,
        feed: Option<mpsc::Sender<Vec<FreshDelivery>>>,
        cel_cost: u64,
        max_record_bytes: usize,
    ) -> Fanout {
        Fanout {
            cel_cost,
            max_record_bytes,
            request_left: cel_cost.saturating_mul(REQUEST_BUDGET),
            network_left: cel_cost.saturating_mul(REQUEST_BUDGET),
            node,
            tenants: HashMap::new(),
            now: String::new(),
            lease_until: String::new(),
            fresh: Vec::new(),
            noted: Vec::new(),
            feed,
            wake_dispatcher: false,
            locked: std::collections::HashSet::new(),
            audits: Vec::new(),
        }
    }

    /// Keeps an audit entry for the group's one insert of them.
    pub fn defer_audit(&mut self, entry: crate::records::AuditEntry) {
        self.audits.push(entry);
    }

    pub fn audits_len(&self) -> usize {
        self.audits.len()
    }

    /// A savepoint was rolled back: the entries written since go with it.
    pub fn truncate_audits(&mut self, len: usize) {
        self.audits.truncate(len);
    }

    /// The group's audit entries, to insert.
    pub fn take_audits(&mut self) -> Vec<crate::records::AuditEntry> {
        std::mem::take(&mut self.audits)
    }

    /// Whether the group has locked `tenant` and checked its endpoints.
    pub fn holds_lock(&self, tenant: &str) -> bool {
        self.locked.contains(tenant)
    }

    /// The group has locked `tenant` and checked its endpoints.
    pub fn note_lock(&mut self, tenant: &str) {
        self.locked.insert(tenant.to_string());
    }

    /// A savepoint was rolled back, and with it the locks taken since
    /// (PostgreSQL releases them): every tenant is locked again when next
    /// written.
    pub fn forget_locks(&mut self) {
        self.locked.clear();
    }

    /// `tenant`'s endpoints changed in the group: the next write checks
    /// them again.
    pub fn endpoints_changed(&mut self, tenant: &str) {
        self.locked.remove(tenant);
    }

    pub fn start_group(&mut self, now: jiff::Timestamp) {
        self.now = eventflow_model::time::format(now);
        self.lease_until = eventflow_model::time::format(now + LEASE);
        self.fresh.clear();
        self.noted.clear();
        self.locked.clear();
        self.audits.clear();
        self.wake_dispatcher = false;
    }

    /// Notes an event the group wrote, for the wake-ups at commit.
    pub fn note_event(&mut self, tenant: &str, sequence: i64, event_type: &str) {
        self.noted.push((
            tenant.to_string(),
            sequence,
            eventflow_model::event::type_bit(event_type),
        ));
    }

    /// Per organisation, the last number the group wrote so far in its
    /// network's log (none in a group of no network's events).
    pub fn noted_networks(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for (log, seq, _) in &self.noted {
            if !eventflow_model::id::is_organisation_id(log) {
                continue;
            }
            match out.iter_mut().find(|(org, _)| org == log) {
                Some((_, last)) => *last = (*last).max(*seq),
                None => out.push((log.clone(), *seq)),
            }
        }
        out
    }

    pub fn noted_len(&self) -> usize {
        self.noted.len()
    }

    pub fn truncate_noted(&mut self, len: usize) {
        self.noted.truncate(len);
    }

    /// Per tenant, the first and last sequence the group wrote and the type
    /// bits of its events; empties the list.
    pub fn take_noted(&mut self) -> HashMap<String, (i64, i64, u64)> {
        let mut out: HashMap<String, (i64, i64, u64)> = HashMap::new();
        for (tenant, seq, bit) in self.noted.drain(..) {
            let e = out.entry(tenant).or_insert((seq, seq, 0));
            e.0 = e.0.min(seq);
            e.1 = e.1.max(seq);
            e.2 |= bit;
        }
        out
    }

    /// Starts the filter budget of the next request.
    pub fn start_request(&mut self) {
        self.request_left = self.cel_cost.saturating_mul(REQUEST_BUDGET);
        self.network_left = self.request_left;
    }

    /// The cached endpoints of a tenant, if current for `version`.
    pub fn current(&self, tenant: &str, version: i64) -> bool {
        self.tenants.get(tenant).is_some_and(|(v, _)| *v == version)
    }

    pub fn load(&mut self, tenant: &str, version: i64, rows: Vec<EndpointRow>) {
        let list = rows.into_iter().map(Matcher::new).collect();
        self.tenants
            .insert(tenant.to_string(), (version, Arc::new(list)));
    }

    /// Forgets every cached list (after a rollback).
    pub fn invalidate(&mut self) {
        self.tenants.clear();
        self.fresh.clear();
        self.noted.clear();
        self.locked.clear();
        self.audits.clear();
    }

    /// The endpoints of `owner` (the event's tenant, or its organisation)
    /// the event goes to, and the filter errors to record (endpoint id,
    /// error) for filters that ran out of budget.
    pub fn matching(
        &mut self,
        owner: &str,
        event: &Event,
    ) -> (Vec<Arc<EndpointRow>>, Vec<(String, FilterError)>) {
        let mut targets = Vec::new();
        let mut errors = Vec::new();
        let Some((_, list)) = self.tenants.get(owner) else {
            return (targets, errors);
        };
        let mut bound = None;
        for m in list.iter().filter(|m| !m.row.disabled) {
            let left = if owner == event.tenant_id {
                &mut self.request_left
            } else {
                &mut self.network_left
            };
            let limit = self.cel_cost.min(*left);
            let (outcome, used) = m.matches(event, &mut bound, limit);
            *left -= used.min(*left);
            match outcome {
                Outcome::Match => targets.push(m.row.clone()),
                Outcome::NoMatch => {}
                Outcome::OverBudget => {
                    let message = if limit < self.cel_cost {
                        format!(
                            "the filters of one write together ran out of their budget ({} units); the event did not match",
                            self.cel_cost.saturating_mul(REQUEST_BUDGET)
                        )
                    } else {
                        own_budget_spent(self.cel_cost)
                    };
                    if let Some(e) = m.over_budget(event, message, &self.now) {
                        errors.push((m.row.id.clone(), e));
                    }
                }
            }
        }
        (targets, errors)
    }

    /// Whether a new delivery should be leased to this node and handed to
    /// its dispatcher at commit: not when no dispatcher listens, when its
    /// queue is full, or when the endpoint orders per resource (those are
    /// taken in order by the dispatcher's claim).
    pub fn hand_over(&mut self, endpoint: &EndpointRow) -> bool {
        let room = self.feed.as_ref().is_some_and(|f| f.capacity() > 64);
        let ok = room && endpoint.config.ordering == Ordering::None;
        if !ok {
            self.wake_dispatcher = true;
        }
        ok
    }

    pub fn push_fresh(&mut self, d: FreshDelivery) {
        self.fresh.push(d);
    }

    pub fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    pub fn truncate_fresh(&mut self, len: usize) {
        self.fresh.truncate(len);
    }

    /// After commit: hands the group's fresh deliveries to the dispatcher.
    /// Returns whether the dispatcher should also look at the table (some
    /// deliveries were not handed over).
    pub fn committed(&mut self) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        let mut look = std::mem::take(&mut self.wake_dispatcher);
        if !fresh.is_empty() {
            match &self.feed {
                Some(feed) => {
                    if feed.try_send(fresh).is_err() {
                        // Leased to us but not handed over: they wait for the
                        // lease to pass, then any node takes them.
                        look = true;
                    }
                }
                None => look = true,
            }
        }
        look
    }
}
