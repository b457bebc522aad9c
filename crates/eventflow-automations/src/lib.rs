//! Automations (docs/design.md §4): workflow files, checked when they load,
//! and the engine that runs them.
//!
//! A workflow is a YAML file: `name`, `on` (event types or globs), an
//! optional CEL `if`, and `steps`. Every template (`{{ data.patientPhone }}`)
//! and every condition is compiled at load, so a broken file is refused
//! with its file name, the step and the reason, and the others keep running.
//!
//! # Layout
//! - [`workflow`]: the file format, parsed and checked into a [`Workflow`].
//! - [`template`]: the Jinja-style template environment (minijinja) and its
//!   filters (`datetime`, `time`, `date`), with bounded fuel and output.
//! - [`duration`]: `24h`, `-24h`, `30m`, `2d` offsets.
//! - [`registry`]: the loaded workflows, reloaded when the directory changes.
//! - [`engine`]: the [`Engine`], driven by the event log: starts runs from
//!   each tenant's new events (`engine/ingest.rs`), fires durable timers and
//!   takes due runs (`engine/due.rs`), executes runs step by step
//!   (`engine/run.rs`), with one module per kind of step under
//!   `engine/steps/`: `messages` (sms, email, slack), `http`, `records`
//!   (create, update), `timers` (schedule, cancel), `claim`.
//! - [`error`]: [`RunError`], why a run's step could not be performed
//!   (its workflow or step gone, a template that did not render).
//! - [`channels`]: the providers: Twilio (SMS), SMTP (email), Slack; each
//!   failure classed as worth a retry or permanent.
//! - [`claim`]: the FHIR R4 `Claim` built from an encounter for the `claim` step.

pub mod channels;
pub mod claim;
pub mod duration;
pub mod engine;
pub mod error;
pub mod registry;
pub mod template;
pub mod workflow;

pub use engine::{Engine, ProviderQuotas, ProviderTenants, Settings};
pub use error::RunError;
pub use registry::{Registry, Snapshot};
pub use workflow::{Checks, LoadError, Loaded, Step, StepKind, Workflow, load_dir, parse};
