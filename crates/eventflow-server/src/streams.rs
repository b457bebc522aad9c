//! Open event streams and long polls, counted per API key: each holds a
//! connection and a task, so a key may hold at most `limits.streams_per_key`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::error::ApiError;

/// The open streams and long polls of every key.
#[derive(Debug)]
pub struct Streams {
    per_key: Mutex<HashMap<String, usize>>,
    limit: usize,
}

/// One open stream or long poll; counted until dropped.
#[derive(Debug)]
pub struct Held {
    streams: Arc<Streams>,
    key: String,
}

/// How long a client refused for too many streams is told to wait.
pub const RETRY_AFTER_SECS: u64 = 5;

impl Streams {
    pub fn new(limit: usize) -> Arc<Streams> {
        Arc::new(Streams {
            per_key: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// Counts one more for `key`, or a 429 when it holds the limit already.
    pub fn open(self: &Arc<Self>, key: &str) -> Result<Held, ApiError> {
        let mut map = self.per_key.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(key.to_string()).or_insert(0);
        if *open >= self.limit {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                crate::error::ErrorKind::TooManyStreams,
                format!(
                    "this API key holds {} open streams and long polls, the most it may (limits.streams_per_key); close one first",
                    self.limit
                ),
            )
            .retrying_after(RETRY_AFTER_SECS));
        }
        *open += 1;
        Ok(Held {
            streams: self.clone(),
            key: key.to_string(),
        })
    }

    /// Open streams and long polls of `key`.
    pub fn open_for(&self, key: &str) -> usize {
        let map = self.per_key.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self
            .streams
            .per_key
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.key);
            }
        }
    }
}
