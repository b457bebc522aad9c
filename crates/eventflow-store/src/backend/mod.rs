//! The two backends. Each keeps a pool for reads and hands one dedicated
//! connection to the group-commit writer; each invokes every feature's SQL
//! macros (`records::sql`, `keys::sql`, `delivery::sql`, `automation::sql`,
//! `writer::sql`) for its connection and store types.
//!
//! - `sqlite`: the embedded default (one process per database file);
//! - `postgres`: PostgreSQL, for several nodes on one database.

pub mod postgres;
pub mod sqlite;
