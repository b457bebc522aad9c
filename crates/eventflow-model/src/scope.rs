//! API key scopes: what a key may do (README, "Keys and scopes").
//!
//! A scope names a family of routes and `read` or `write`: `patients:read`,
//! `endpoints:write`, … `records:read` and `records:write` stand for the ten
//! collections at once, and `*` for everything. `x:write` implies `x:read`.
//! A set of scopes is held as bits, so a check is a mask, not a lookup.

use crate::event::{OPERATIONAL_TYPES, TypeFilter};
use crate::resource::ResourceType;

/// Bits of the per-collection read scopes (bit `i` for `ResourceType::ALL[i]`).
const RECORD_READ: u64 = (1 << 10) - 1;
/// Bits of the per-collection write scopes (bit `10 + i`).
const RECORD_WRITE: u64 = RECORD_READ << 10;
const EVENTS_READ: u64 = 1 << 20;
const ENDPOINTS_READ: u64 = 1 << 21;
const ENDPOINTS_WRITE: u64 = 1 << 22;
const WORKFLOWS_READ: u64 = 1 << 23;
const WORKFLOWS_WRITE: u64 = 1 << 24;
const AUDIT_READ: u64 = 1 << 25;
const KEYS_MANAGE: u64 = 1 << 26;
const CLINICS_MANAGE: u64 = 1 << 27;
/// `*`: every bit, those of scopes added later included.
const ALL: u64 = u64::MAX;

/// One scope a route needs: its name (for the error) and its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub name: &'static str,
    bits: u64,
}

impl Scope {
    pub const EVENTS_READ: Scope = Scope::new("events:read", EVENTS_READ);
    pub const ENDPOINTS_READ: Scope = Scope::new("endpoints:read", ENDPOINTS_READ);
    pub const ENDPOINTS_WRITE: Scope =
        Scope::new("endpoints:write", ENDPOINTS_WRITE | ENDPOINTS_READ);
    pub const WORKFLOWS_READ: Scope = Scope::new("workflows:read", WORKFLOWS_READ);
    pub const WORKFLOWS_WRITE: Scope =
        Scope::new("workflows:write", WORKFLOWS_WRITE | WORKFLOWS_READ);
    pub const AUDIT_READ: Scope = Scope::new("audit:read", AUDIT_READ);
    pub const KEYS_MANAGE: Scope = Scope::new("keys:manage", KEYS_MANAGE);
    pub const CLINICS_MANAGE: Scope = Scope::new("clinics:manage", CLINICS_MANAGE);
    pub const RECORDS_READ: Scope = Scope::new("records:read", RECORD_READ);
    pub const RECORDS_WRITE: Scope = Scope::new("records:write", RECORD_WRITE | RECORD_READ);
    pub const ALL: Scope = Scope::new("*", ALL);

    const fn new(name: &'static str, bits: u64) -> Scope {
        Scope { name, bits }
    }

    /// `patients:read`, …
    pub fn read(rt: ResourceType) -> Scope {
        Scope::new(record_scope_names(rt).0, 1 << index(rt))
    }

    /// `patients:write`, … (which implies `patients:read`).
    pub fn write(rt: ResourceType) -> Scope {
        let read = 1 << index(rt);
        Scope::new(record_scope_names(rt).1, (read << 10) | read)
    }

    /// Every scope name a key may be given, in the order the README lists them.
    pub fn all() -> Vec<Scope> {
        let mut v = vec![Scope::ALL, Scope::RECORDS_READ, Scope::RECORDS_WRITE];
        for rt in ResourceType::ALL {
            v.push(Scope::read(rt));
            v.push(Scope::write(rt));
        }
        v.extend([
            Scope::EVENTS_READ,
            Scope::ENDPOINTS_READ,
            Scope::ENDPOINTS_WRITE,
            Scope::WORKFLOWS_READ,
            Scope::WORKFLOWS_WRITE,
            Scope::AUDIT_READ,
            Scope::KEYS_MANAGE,
            Scope::CLINICS_MANAGE,
        ]);
        v
    }

    /// A scope by its name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::all().into_iter().find(|s| s.name == name)
    }
}

fn index(rt: ResourceType) -> u32 {
    ResourceType::ALL
        .iter()
        .position(|r| *r == rt)
        .expect("every record type is in ALL") as u32
}

/// The names of a collection's read and write scopes.
fn record_scope_names(rt: ResourceType) -> (&'static str, &'static str) {
    match rt {
        ResourceType::Patient => ("patients:read", "patients:write"),
        ResourceType::Practitioner => ("practitioners:read", "practitioners:write"),
        ResourceType::Appointment => ("appointments:read", "appointments:write"),
        ResourceType::Encounter => ("encounters:read", "encounters:write"),
        ResourceType::Observation => ("observations:read", "observations:write"),
        ResourceType::Prescription => ("prescriptions:read", "prescriptions:write"),
        ResourceType::Consent => ("consents:read", "consents:write"),
        ResourceType::Intake => ("intakes:read", "intakes:write"),
        ResourceType::Note => ("notes:read", "notes:write"),
        ResourceType::Lab => ("labs:read", "labs:write"),
    }
}

/// The scopes of one key: their names as given (deduplicated, in order)
/// and the union of their bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes {
    names: Vec<String>,
    bits: u64,
}

/// Most scopes one key may list.
pub const MAX_SCOPES: usize = 64;

impl Scopes {
    /// Every scope: the bootstrap key and keys made by `eventflow tenants create`.
    pub fn everything() -> Scopes {
        Scopes {
            names: vec!["*".into()],
            bits: ALL,
        }
    }

    /// Parses a key's list of scope names; `Err` names the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut out = Scopes {
            names: Vec::new(),
            bits: 0,
        };
        for name in names {
            let scope = Scope::parse(name).ok_or_else(|| {
                let shown: String = name.chars().take(60).collect();
                format!("{shown:?} is not a scope; see the README's \"Keys and scopes\"")
            })?;
            if !out.names.iter().any(|n| n == name) {
                out.names.push(name.to_string());
                out.bits |= scope.bits;
            }
            if out.names.len() > MAX_SCOPES {
                return Err(format!("must hold at most {MAX_SCOPES} scopes"));
            }
        }
        Ok(out)
    }

    /// The names as given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the key holds `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        scope.bits & !self.bits == 0
    }

    /// `Err` with the first scope of `other` these do not cover: a key may
    /// hand on only what it holds.
    pub fn covers(&self, other: &Scopes) -> Result<(), String> {
        if other.bits & !self.bits == 0 {
            return Ok(());
        }
        Err(other
            .names
            .iter()
            .find(|n| Scope::parse(n).is_some_and(|s| !self.allows(s)))
            .cloned()
            .unwrap_or_else(|| "*".into()))
    }

    /// Whether the key may read records of `rt` (and so see their events).
    pub fn reads(&self, rt: ResourceType) -> bool {
        self.allows(Scope::read(rt))
    }

    /// Whether the key may see events of this type: a record event when it
    /// may read the record type, an operational one with `endpoints:read`.
    pub fn sees(&self, event_type: &str) -> bool {
        if self.bits == ALL {
            return true;
        }
        match event_type
            .split_once('.')
            .and_then(|(r, _)| r.parse::<ResourceType>().ok())
        {
            Some(rt) => self.reads(rt),
            None => self.allows(Scope::ENDPOINTS_READ),
        }
    }

    /// The event types the key may see as a filter: `None` when it sees
    /// every type.
    pub fn visible_types(&self) -> Option<TypeFilter> {
        let all_records = ResourceType::ALL.iter().all(|rt| self.reads(*rt));
        let operational = self.allows(Scope::ENDPOINTS_READ);
        if all_records && operational {
            return None;
        }
        let mut patterns: Vec<String> = ResourceType::ALL
            .iter()
            .filter(|rt| self.reads(**rt))
            .map(|rt| format!("{}.", rt.name()))
            .collect();
        if operational {
            patterns.extend(OPERATIONAL_TYPES.iter().map(|(t, _)| t.to_string()));
        }
        if patterns.is_empty() {
            // Sees nothing: a pattern no type matches.
            patterns.push("none.".into());
        }
        let globs: Vec<String> = patterns
            .into_iter()
            .map(|p| if p.ends_with('.') { format!("{p}*") } else { p })
            .collect();
        Some(TypeFilter::parse_list(globs.iter().map(String::as_str)).expect("valid patterns"))
    }

    /// `Err` with a type or topic a filter would match that the key may
    /// not see (a topic is seen with its record type).
    pub fn may_subscribe(&self, filter: &TypeFilter) -> Result<(), String> {
        crate::event::all_types()
            .map(|(t, _)| t)
            .chain(crate::topics::TOPICS.iter().map(|t| t.name.to_string()))
            .find(|t| filter.matches(t) && !self.sees(t))
            .map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(names: &[&str]) -> Scopes {
        Scopes::parse(names.iter().copied()).unwrap()
    }

    #[test]
    fn a_topic_is_subscribed_to_with_its_record_type() {
        let f = TypeFilter::parse_list(["appointment.cancelled"]).unwrap();
        assert_eq!(
            scopes(&["patients:read"]).may_subscribe(&f),
            Err("appointment.cancelled".to_string())
        );
        assert_eq!(scopes(&["appointments:read"]).may_subscribe(&f), Ok(()));
    }

    #[test]
    fn write_implies_read_and_records_means_every_collection() {
        let s = scopes(&["appointments:write"]);
        assert!(s.allows(Scope::read(ResourceType::Appointment)));
        assert!(s.allows(Scope::write(ResourceType::Appointment)));
        assert!(!s.allows(Scope::read(ResourceType::Patient)));
        let r = scopes(&["records:read"]);
        assert!(ResourceType::ALL.iter().all(|rt| r.reads(*rt)));
        assert!(!r.allows(Scope::write(ResourceType::Lab)));
        assert!(scopes(&["endpoints:write"]).allows(Scope::ENDPOINTS_READ));
        assert!(!scopes(&["endpoints:read"]).allows(Scope::ENDPOINTS_WRITE));
        let all = Scopes::everything();
        assert!(Scope::all().into_iter().all(|sc| all.allows(sc)));
    }

    #[test]
    fn an_unknown_scope_is_named() {
        let e = Scopes::parse(["patients:read", "patients:delete"]).unwrap_err();
        assert!(e.contains("patients:delete"), "{e}");
        assert!(Scopes::parse(["*"]).is_ok());
    }

    #[test]
    fn a_key_covers_only_what_it_holds() {
        let holder = scopes(&["records:write", "keys:manage"]);
        assert!(holder.covers(&scopes(&["patients:read"])).is_ok());
        assert_eq!(
            holder.covers(&scopes(&["patients:read", "endpoints:read"])),
            Err("endpoints:read".into())
        );
        assert_eq!(holder.covers(&Scopes::everything()), Err("*".into()));
        assert!(Scopes::everything().covers(&holder).is_ok());
    }

    #[test]
    fn events_are_visible_by_record_type_and_operational_ones_with_endpoints_read() {
        let s = scopes(&["appointments:read", "events:read"]);
        assert!(s.sees("appointment.created"));
        assert!(!s.sees("patient.created"));
        assert!(!s.sees("delivery.failed"));
        let f = s.visible_types().unwrap();
        assert!(f.matches("appointment.deleted"));
        assert!(!f.matches("endpoint.disabled"));
        assert!(Scopes::everything().visible_types().is_none());
        let none = scopes(&["events:read"]).visible_types().unwrap();
        assert!(crate::EventType::all().all(|t| !none.matches(&t.name())));
        let ops = scopes(&["endpoints:read"]);
        assert!(ops.sees("delivery.failed"));
    }

    #[test]
    fn a_subscription_must_lie_within_the_visible_types() {
        let s = scopes(&["appointments:read", "endpoints:write"]);
        let ok = TypeFilter::parse_list(["appointment.*", "delivery.failed"]).unwrap();
        assert!(s.may_subscribe(&ok).is_ok());
        let wide = TypeFilter::parse_list(["*"]).unwrap();
        assert!(s.may_subscribe(&wide).is_err());
        let other = TypeFilter::parse_list(["patient.created"]).unwrap();
        assert_eq!(s.may_subscribe(&other), Err("patient.created".into()));
    }
}
