//! API keys: generation, hashing, and the `Authorization: Bearer` extractor.
//! Only the SHA-256 of a key is stored; a key is never logged.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventflow_store::Principal;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// 32 random bytes, base64url: a secret nobody can guess.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new API key: `efk_` and a [`random_token`].
pub fn generate_key() -> String {
    format!("efk_{}", random_token())
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keys already seen, by hash, so a request costs no database read.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, Principal>>,
}

/// A principal set on an in-process request by the portal, which has
/// authenticated the session itself. Only code of this crate can attach a
/// request extension: nothing from the network can.
#[derive(Debug, Clone)]
pub(crate) struct Internal(pub Principal);

/// The caller, authenticated by its API key.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    pub fn tenant(&self) -> &str {
        &self.0.tenant_id
    }
    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Internal(p)) = parts.extensions.get::<Internal>() {
            return Ok(Auth(p.clone()));
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .ok_or_else(ApiError::unauthorized)?;
        let hash = hash_key(key);
        if let Some(p) = state
            .keys
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            return Ok(Auth(p.clone()));
        }
        let principal = state
            .store
            .authenticate(&hash)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        state
            .keys
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, principal.clone());
        Ok(Auth(principal))
    }
}
