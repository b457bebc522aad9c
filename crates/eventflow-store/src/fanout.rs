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

use eventflow_model::filter::{Bound, Filter};
use eventflow_model::{Event, TypeFilter};
use tokio::sync::mpsc;

use crate::delivery::{EndpointRow, FreshDelivery, Ordering};

/// An endpoint ready to match events.
#[derive(Debug)]
pub struct Matcher {
    pub row: Arc<EndpointRow>,
    types: TypeFilter,
    filter: Option<Filter>,
}

impl Matcher {
    pub fn new(row: EndpointRow) -> Matcher {
        let types = TypeFilter::parse_list(row.config.event_types.iter().map(String::as_str))
            .unwrap_or_else(|_| {
                // Checked when saved; a stored list that no longer parses
                // matches nothing rather than everything.
                TypeFilter::parse_list(["no.such.type"]).unwrap_or_default()
            });
        let filter = row.config.filter.as_deref().map(Filter::compile);
        let filter = match filter {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                tracing::warn!(endpoint = %row.id, "stored filter no longer compiles; the endpoint matches nothing");
                Filter::compile("false").ok()
            }
        };
        Matcher {
            row: Arc::new(row),
            types,
            filter,
        }
    }

    fn matches(&self, event: &Event, bound: &mut Option<Bound>) -> bool {
        if !self.types.matches(&event.event_type) {
            return false;
        }
        match &self.filter {
            None => true,
            Some(f) => f.matches(bound.get_or_insert_with(|| Bound::new(event))),
        }
    }

    /// Whether the event passes the endpoint's types and filter.
    pub fn matches_event(&self, event: &Event) -> bool {
        self.matches(event, &mut None)
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
    feed: Option<mpsc::Sender<Vec<FreshDelivery>>>,
    /// Set when the group made deliveries due that were not handed to this
    /// node's dispatcher (not leased, retried, replayed, resumed, drained):
    /// at commit the dispatcher is told to look at the table.
    pub wake_dispatcher: bool,
}

/// How long a node holds a delivery it took before others may take it over.
pub const LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

impl Fanout {
    pub fn new(node: String, feed: Option<mpsc::Sender<Vec<FreshDelivery>>>) -> Fanout {
        Fanout {
            node,
            tenants: HashMap::new(),
            now: String::new(),
            lease_until: String::new(),
            fresh: Vec::new(),
            feed,
            wake_dispatcher: false,
        }
    }

    pub fn start_group(&mut self, now: jiff::Timestamp) {
        self.now = eventflow_model::time::format(now);
        self.lease_until = eventflow_model::time::format(now + LEASE);
        self.fresh.clear();
        self.wake_dispatcher = false;
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
    }

    /// The endpoints the event goes to.
    pub fn matching(&self, event: &Event) -> Vec<Arc<EndpointRow>> {
        let Some((_, list)) = self.tenants.get(&event.tenant_id) else {
            return Vec::new();
        };
        let mut bound = None;
        list.iter()
            .filter(|m| !m.row.disabled && m.matches(event, &mut bound))
            .map(|m| m.row.clone())
            .collect()
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
