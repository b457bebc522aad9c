//! The vocabulary of Event Flow: clinical record types, their validation, the
//! event types and the event envelope. Pure: nothing here does I/O.
//!
//! # Layout
//! - [`resource`]: the ten record types, their fields and the rules of each field.
//! - [`validate`]: checks a record body against its type's fields; computes defaults.
//! - [`patch`]: RFC 7396 JSON merge patch and the `previous` diff of an update.
//! - [`event`]: event types, type globs and the event envelope.
//! - [`filter`]: CEL expressions over the envelope (endpoint filters, workflow
//!   `if`s), with their cost budget.
//! - [`scope`]: API key scopes and the event types a key may see.
//! - [`id`]: prefixed, time-ordered ids (`pat_…`, `evt_…`).
//! - [`time`]: the one timestamp format the API writes.
//! - [`topics`]: clinical topics (`appointment.cancelled`, …) and the
//!   patient of a record, decided when an event is written.
//! - [`fhir`]: a record as its FHIR R4B resource, and FHIR ids.

pub mod event;
pub mod fhir;
pub mod filter;
pub mod id;
pub mod patch;
pub mod resource;
pub mod scope;
pub mod time;
pub mod topics;
pub mod validate;

pub use event::{Event, EventType, ResourceRef, TypeFilter};
pub use resource::{FieldKind, FieldSpec, ResourceType};
pub use validate::ValidationError;

/// A JSON object: the body of a record.
pub type Object = serde_json::Map<String, serde_json::Value>;
