//! Versioned schema migrations, embedded in the binary. Each backend has its
//! own SQL; the versions advance together.

use std::borrow::Cow;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};

use crate::error::StoreError;

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "records and events",
        include_str!("../migrations/sqlite/0001_records_and_events.sql"),
    ),
    (
        2,
        "endpoints and deliveries",
        include_str!("../migrations/sqlite/0002_endpoints_and_deliveries.sql"),
    ),
    (
        3,
        "automations",
        include_str!("../migrations/sqlite/0003_automations.sql"),
    ),
    (
        4,
        "filter errors",
        include_str!("../migrations/sqlite/0004_filter_errors.sql"),
    ),
    (
        5,
        "replays",
        include_str!("../migrations/sqlite/0005_replays.sql"),
    ),
    (
        6,
        "workflow chain depth",
        include_str!("../migrations/sqlite/0006_workflow_chain_depth.sql"),
    ),
    (
        7,
        "provider quotas and condition errors",
        include_str!("../migrations/sqlite/0007_quotas_and_condition_errors.sql"),
    ),
    (
        8,
        "timer chain depth",
        include_str!("../migrations/sqlite/0008_timer_chain_depth.sql"),
    ),
    (
        9,
        "key scopes",
        include_str!("../migrations/sqlite/0009_key_scopes.sql"),
    ),
    (
        10,
        "event topics",
        include_str!("../migrations/sqlite/0010_event_topics.sql"),
    ),
    (
        11,
        "clinic networks",
        include_str!("../migrations/sqlite/0011_clinic_networks.sql"),
    ),
    (
        12,
        "disclosure records",
        include_str!("../migrations/sqlite/0012_disclosures.sql"),
    ),
    (
        13,
        "retention",
        include_str!("../migrations/sqlite/0013_retention.sql"),
    ),
    (
        14,
        "tenant settings",
        include_str!("../migrations/sqlite/0014_tenant_settings.sql"),
    ),
    (
        15,
        "endpoint verification",
        include_str!("../migrations/sqlite/0015_endpoint_verification.sql"),
    ),
    (
        16,
        "portal links",
        include_str!("../migrations/sqlite/0016_portal_links.sql"),
    ),
    (
        17,
        "disclosure indexes",
        include_str!("../migrations/sqlite/0017_disclosure_indexes.sql"),
    ),
    (
        18,
        "FHIR heartbeats",
        include_str!("../migrations/sqlite/0018_fhir_heartbeats.sql"),
    ),
    (
        19,
        "record dates",
        include_str!("../migrations/sqlite/0019_record_dates.sql"),
    ),
    (
        20,
        "disclosures by clinic",
        include_str!("../migrations/sqlite/0020_disclosures_by_clinic.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "records and events",
        include_str!("../migrations/postgres/0001_records_and_events.sql"),
    ),
    (
        2,
        "endpoints and deliveries",
        include_str!("../migrations/postgres/0002_endpoints_and_deliveries.sql"),
    ),
    (
        3,
        "automations",
        include_str!("../migrations/postgres/0003_automations.sql"),
    ),
    (
        4,
        "filter errors",
        include_str!("../migrations/postgres/0004_filter_errors.sql"),
    ),
    (
        5,
        "replays",
        include_str!("../migrations/postgres/0005_replays.sql"),
    ),
    (
        6,
        "workflow chain depth",
        include_str!("../migrations/postgres/0006_workflow_chain_depth.sql"),
    ),
    (
        7,
        "provider quotas and condition errors",
        include_str!("../migrations/postgres/0007_quotas_and_condition_errors.sql"),
    ),
    (
        8,
        "timer chain depth",
        include_str!("../migrations/postgres/0008_timer_chain_depth.sql"),
    ),
    (
        9,
        "key scopes",
        include_str!("../migrations/postgres/0009_key_scopes.sql"),
    ),
    (
        10,
        "event topics",
        include_str!("../migrations/postgres/0010_event_topics.sql"),
    ),
    (
        11,
        "clinic networks",
        include_str!("../migrations/postgres/0011_clinic_networks.sql"),
    ),
    (
        12,
        "disclosure records",
        include_str!("../migrations/postgres/0012_disclosures.sql"),
    ),
    (
        13,
        "retention",
        include_str!("../migrations/postgres/0013_retention.sql"),
    ),
    (
        14,
        "tenant settings",
        include_str!("../migrations/postgres/0014_tenant_settings.sql"),
    ),
    (
        15,
        "endpoint verification",
        include_str!("../migrations/postgres/0015_endpoint_verification.sql"),
    ),
    (
        16,
        "portal links",
        include_str!("../migrations/postgres/0016_portal_links.sql"),
    ),
    (
        17,
        "disclosure indexes",
        include_str!("../migrations/postgres/0017_disclosure_indexes.sql"),
    ),
    (
        18,
        "FHIR heartbeats",
        include_str!("../migrations/postgres/0018_fhir_heartbeats.sql"),
    ),
    (
        19,
        "record dates",
        include_str!("../migrations/postgres/0019_record_dates.sql"),
    ),
    (
        20,
        "disclosures by clinic",
        include_str!("../migrations/postgres/0020_disclosures_by_clinic.sql"),
    ),
];

fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// The SQLite migrations.
pub fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// The PostgreSQL migrations.
pub fn postgres() -> Migrator {
    migrator(POSTGRES)
}

/// The SQLite or PostgreSQL migrations up to and including `version`: a
/// database as an older build left it, to test an upgrade from.
pub fn up_to(postgres: bool, version: i64) -> Migrator {
    let list = if postgres { POSTGRES } else { SQLITE };
    let end = list.iter().take_while(|m| m.0 <= version).count();
    migrator(&list[..end])
}

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    SQLITE.iter().map(|m| m.0).max().unwrap_or(0)
}

/// Turns a migration failure into a message an operator can act on.
pub fn explain(e: MigrateError) -> StoreError {
    match e {
        MigrateError::VersionMissing(v) => StoreError::Migration(format!(
            "the database schema is at version {v}, newer than this build of eventflow knows \
             (up to {}); upgrade eventflow or use another database",
            latest_version()
        )),
        other => StoreError::Migration(format!("database migration failed: {other}")),
    }
}
