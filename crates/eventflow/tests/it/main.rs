//! The behaviour suite: each test starts the real server on a random port
//! with a temporary data directory and speaks HTTP to it. Every behaviour
//! test is declared with `backend_tests!`, so it runs on SQLite and, when
//! `EVENTFLOW_TEST_DATABASE_URL` is set, on PostgreSQL. What the files share
//! is in `helpers` (or on the testkit's `Api`); a behaviour file exports
//! nothing to another.

// Test code throughout: clippy.toml allows unwrap() in #[test] functions
// only, and the bodies `backend_tests!` wraps and the helpers are not those.
#![allow(clippy::unwrap_used)]

mod access;
mod audit_ops;
mod automations;
mod bench;
mod budgets;
mod catalogue;
mod cli;
mod cli_client;
mod concurrency;
mod connections;
mod contract;
mod crash;
mod envelopes;
mod events;
mod fhir;
mod helpers;
mod idempotency_batch;
mod isolation;
mod keys;
mod layout;
mod logs;
mod multinode;
mod networks;
mod patient_data;
mod portal;
mod records;
mod retention;
mod smoke;
mod startup;
mod stream;
mod topics;
mod typescript_sdk;
mod validation;
mod verification;
mod webhooks;
mod webhooks_limits;
mod webhooks_metrics;
mod webhooks_outbound_guard;
mod webhooks_reference_verifier;
mod webhooks_restart;
