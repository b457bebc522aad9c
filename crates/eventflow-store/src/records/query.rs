//! The read queries, written once for every backend with sqlx's
//! `QueryBuilder` (which supplies each backend's placeholders).

use eventflow_model::ResourceType;
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::records::{AuditQuery, EventQuery, ListQuery};

/// `SELECT id, data, tenant_id FROM records …` for one page of a list (one
/// row more than `limit`, to know whether another page follows). For an
/// organisation, the records of every member clinic (ids sort by creation
/// across clinics, so the cursor works the same).
pub(crate) fn list_records<DB>(tenant: &str, rt: ResourceType, q: &ListQuery) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    let mut qb = QueryBuilder::<DB>::new("SELECT id, data, tenant_id FROM records WHERE ");
    matching(&mut qb, tenant, rt, q);
    if let Some(c) = &q.cursor {
        qb.push(" AND id > ").push_bind(c.as_str());
    }
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    qb
}

/// `SELECT COUNT(*) …`: how many records a list matches (its cursor and
/// page size aside), counting at most `cap`.
pub(crate) fn count_records<DB>(
    tenant: &str,
    rt: ResourceType,
    q: &ListQuery,
    cap: u32,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    let mut qb = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE ");
    matching(&mut qb, tenant, rt, q);
    qb.push(" LIMIT ")
        .push_bind(i64::from(cap))
        .push(") AS matched");
    qb
}

/// The conditions of a list: the tenant (or an organisation's clinics),
/// the type, and the list's filters.
fn matching<DB>(qb: &mut QueryBuilder<DB>, tenant: &str, rt: ResourceType, q: &ListQuery)
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    if eventflow_model::id::is_organisation_id(tenant) {
        qb.push("tenant_id IN (SELECT id FROM tenants WHERE org_id = ")
            .push_bind(tenant)
            .push(" AND kind = 'clinic')");
    } else {
        qb.push("tenant_id = ").push_bind(tenant);
    }
    qb.push(" AND resource_type = ").push_bind(rt.name());
    if let Some(p) = &q.patient_id {
        qb.push(" AND patient_id = ").push_bind(p.as_str());
    }
    if let Some(s) = &q.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(m) = &q.mrn {
        qb.push(" AND mrn = ").push_bind(m.as_str());
    }
    if let Some(u) = &q.updated_since {
        qb.push(" AND updated_at >= ").push_bind(u.as_str());
    }
    // The SQL of `DateCondition::holds`: `date_at` is the start,
    // `date_end` the end (NULL: open).
    for d in &q.dates {
        use crate::records::DatePrefix as P;
        let (lo, hi) = (d.lo.as_str(), d.hi.as_str());
        qb.push(" AND date_at IS NOT NULL AND ");
        match d.prefix {
            P::Eq => {
                qb.push("date_at >= ").push_bind(lo);
                qb.push(" AND date_end < ").push_bind(hi);
            }
            P::Gt => {
                qb.push("(date_end IS NULL OR date_end >= ")
                    .push_bind(hi)
                    .push(")");
            }
            P::Ge => {
                qb.push("(date_end IS NULL OR date_end >= ")
                    .push_bind(lo)
                    .push(")");
            }
            P::Lt => {
                qb.push("date_at < ").push_bind(lo);
            }
            P::Le => {
                qb.push("date_at < ").push_bind(hi);
            }
            P::Sa => {
                qb.push("date_at >= ").push_bind(hi);
            }
            P::Eb => {
                qb.push("date_end < ").push_bind(lo);
            }
        }
    }
}

/// The column of an indexed reference field.
pub(crate) fn reference_column(field: &str) -> Option<&'static str> {
    match field {
        "patientId" => Some("patient_id"),
        "practitionerId" => Some("practitioner_id"),
        "encounterId" => Some("encounter_id"),
        "appointmentId" => Some("appointment_id"),
        _ => None,
    }
}

/// `SELECT data FROM records …` whose `column` names `id`.
pub(crate) fn records_referencing<DB>(
    tenant: &str,
    rt: ResourceType,
    column: &'static str,
    id: &str,
    limit: u32,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    let mut qb = QueryBuilder::<DB>::new("SELECT data FROM records WHERE tenant_id = ");
    qb.push_bind(tenant);
    qb.push(" AND resource_type = ").push_bind(rt.name());
    qb.push(" AND ").push(column).push(" = ").push_bind(id);
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
    qb
}

/// The smallest string greater than every string starting with `prefix`
/// (bytewise), so a prefix match is a range an index can serve.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `SELECT body, written_by FROM events …` in sequence order: the tenant's
/// log, or for an organisation its network's, in `network_sequence` order.
pub(crate) fn events<DB>(tenant: &str, q: &EventQuery) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    let (owner, number) = log_columns(tenant);
    let mut qb = QueryBuilder::<DB>::new("SELECT body, written_by FROM events WHERE ");
    qb.push(owner).push(" = ").push_bind(tenant);
    qb.push(" AND ").push(number).push(" > ").push_bind(q.after);
    if let Some(rt) = q.resource_type {
        qb.push(" AND resource_type = ").push_bind(rt.name());
    }
    if let Some(id) = &q.resource_id {
        qb.push(" AND resource_id = ").push_bind(id.clone());
    }
    push_types(&mut qb, &q.types);
    if let Some(visible) = &q.visible {
        push_types(&mut qb, visible);
    }
    qb.push(" ORDER BY ")
        .push(number)
        .push(" LIMIT ")
        .push_bind(i64::from(q.limit));
    qb
}

/// The columns of `events` that hold the log `tenant` reads, and number
/// it: a tenant's own (`tenant_id`, `sequence`), or for an organisation its
/// network's (`org_id`, `network_sequence`).
pub(crate) fn log_columns(tenant: &str) -> (&'static str, &'static str) {
    if eventflow_model::id::is_organisation_id(tenant) {
        ("org_id", "network_sequence")
    } else {
        ("tenant_id", "sequence")
    }
}

/// How an event's topics are stored: `,a,b,` (empty when none), so that
/// `LIKE '%,a,%'` finds a topic and `LIKE '%,a%'` a topic glob.
pub(crate) fn topics_column(topics: &[String]) -> String {
    if topics.is_empty() {
        return String::new();
    }
    format!(",{},", topics.join(","))
}

/// ` AND (the type, or one of the event's topics, matches one of the
/// filter's patterns)`.
fn push_types<DB>(qb: &mut QueryBuilder<DB>, types: &eventflow_model::TypeFilter)
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    if types.is_all() {
        return;
    }
    let (exact, prefixes) = types.split();
    qb.push(" AND (1 = 0");
    for t in exact {
        qb.push(" OR type = ").push_bind(t.to_string());
        if eventflow_model::topics::is_topic(t) {
            // A topic is matched where types are: an event carries it in
            // its `topics` column, as `,topic,`.
            qb.push(" OR topics LIKE ").push_bind(format!("%,{t},%"));
        }
    }
    for p in &prefixes {
        if eventflow_model::topics::TOPICS
            .iter()
            .any(|t| t.name.starts_with(*p))
        {
            qb.push(" OR topics LIKE ").push_bind(format!("%,{p}%"));
        }
    }
    for p in prefixes {
        qb.push(" OR (type >= ").push_bind(p.to_string());
        match prefix_upper_bound(p) {
            Some(upper) => qb.push(" AND type < ").push_bind(upper).push(")"),
            None => qb.push(")"),
        };
    }
    qb.push(")");
}

/// `SELECT id, at, key_id, action, resource_type, resource_id FROM audit_log …`,
/// newest first, one row more than `limit`.
pub(crate) fn audit_log<DB>(tenant: &str, q: &AuditQuery) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments: Default,
{
    let mut qb = QueryBuilder::<DB>::new(
        "SELECT id, at, key_id, action, resource_type, resource_id FROM audit_log WHERE tenant_id = ",
    );
    qb.push_bind(tenant);
    if let Some(t) = &q.resource_type {
        qb.push(" AND resource_type = ").push_bind(t.as_str());
    }
    if let Some(r) = &q.resource_id {
        qb.push(" AND resource_id = ").push_bind(r.as_str());
    }
    if let Some(c) = &q.cursor {
        qb.push(" AND id < ").push_bind(c.as_str());
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    qb
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_bounds() {
        assert_eq!(
            super::prefix_upper_bound("appointment.").as_deref(),
            Some("appointment/")
        );
        assert_eq!(super::prefix_upper_bound("a").as_deref(), Some("b"));
    }
}
