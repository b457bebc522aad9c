//! Text codecs at the bottom of the store: JSON in and out of the TEXT
//! columns both backends use for bodies, with a clear error when a stored
//! body does not parse.

use crate::error::{Result, StoreError};

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::corrupt("json"))
}

pub(crate) fn parse_object(text: &str) -> Result<eventflow_model::Object> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("record body"))
}

pub(crate) fn parse_event(text: &str) -> Result<eventflow_model::Event> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("event body"))
}
