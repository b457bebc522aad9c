//! Signing and verifying Event Flow webhooks — the one place the server's
//! delivery, `eventflow listen` and a receiver sign and check with.
//!
//! Two schemes, both on every HMAC delivery (docs/design.md §3.4):
//! - **Standard Webhooks**: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//!   (or `v1a,<base64 Ed25519 signature>` for an Ed25519 endpoint); several
//!   space-separated signatures while a secret rotates.
//! - **`x-clinikapi-signature`**: `t=<timestamp>,v1=<hex HMAC-SHA256(key, "{timestamp}.{body}")>`,
//!   self-contained, one `v1=` per active secret.
//!
//! ```
//! use eventflow_webhook::{HmacSecret, Signer, Verifier, sign_headers};
//!
//! let secret = HmacSecret::generate();
//! let body = br#"{"type":"appointment.created"}"#;
//! let headers = sign_headers(&[Signer::Hmac(secret.clone())], "evt_1", 1_700_000_000, body);
//! let verifier = Verifier::new().with_secret(secret);
//! verifier.verify(&headers.pairs(), body, 1_700_000_030).unwrap();
//! ```
//!
//! # Layout
//! - [`typed`]: the body parsed into a [`typed::WebhookEvent`], an enum over
//!   the event types carrying the record structs.
//! - `extract` (feature `axum`): an axum extractor that verifies and parses.
//! - [`HmacSecret`], [`Ed25519Key`], [`Ed25519PublicKey`]: keys, parsed from
//!   and printed as `whsec_…`, `whsk_…`, `whpk_…`; `Debug` never shows one.
//! - [`sign_headers`]: the headers of one attempt.
//! - [`Verifier`]: checks a request, in constant time, within a tolerance.
//! - [`challenge_answer`]: the answer to an endpoint verification challenge.
//!
//! # Verification challenges
//!
//! Before a new endpoint (or one whose URL changed) gets patient data, the
//! server posts it a challenge, signed like any delivery:
//! `{"type": "endpoint.verification", "endpointId": "ep_…", "challenge": "…"}`.
//! Answer it `200` with `{"challenge": "<the same>"}` (what
//! [`challenge_answer`] returns): deliveries then go. The axum extractor
//! answers it by itself.
//!
//! ```
//! let body = br#"{"type":"endpoint.verification","endpointId":"ep_1","challenge":"c4f1"}"#;
//! assert_eq!(
//!     eventflow_webhook::challenge_answer(body).as_deref(),
//!     Some(r#"{"challenge":"c4f1"}"#)
//! );
//! assert_eq!(eventflow_webhook::challenge_answer(br#"{"type":"patient.created"}"#), None);
//! ```

use std::fmt;

/// The `type` of a verification challenge's body.
pub const CHALLENGE_TYPE: &str = "endpoint.verification";

/// When `body` (whose signature you checked) is a verification challenge,
/// the body to answer it with, `200`: `{"challenge": "…"}`. `None` for
/// anything else (an event).
pub fn challenge_answer(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Challenge<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        challenge: &'a str,
    }
    let c: Challenge<'_> = serde_json::from_slice(body).ok()?;
    (c.kind == CHALLENGE_TYPE).then(|| serde_json::json!({ "challenge": c.challenge }).to_string())
}

#[cfg(feature = "axum")]
pub mod extract;
pub mod typed;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a timestamp may be from now, in seconds (5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// A key that could not be parsed; says which form was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(&'static str);

/// An HMAC secret: `whsec_` and the base64 of its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        HmacSecret(bytes)
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let b64 = s
            .strip_prefix("whsec_")
            .ok_or(KeyError("a webhook secret starts with whsec_"))?;
        let bytes = B64
            .decode(b64)
            .map_err(|_| KeyError("a webhook secret is whsec_ and base64"))?;
        if bytes.is_empty() || bytes.len() > 64 {
            return Err(KeyError("a webhook secret holds 1 to 64 bytes"));
        }
        Ok(HmacSecret(bytes))
    }

    /// `whsec_…`: the form users copy. Handle with care.
    pub fn expose(&self) -> String {
        format!("whsec_{}", B64.encode(&self.0))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        // Any key length is valid for HMAC.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for p in parts {
            mac.update(p);
        }
        mac
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSecret([redacted])")
    }
}

/// An Ed25519 signing key: `whsk_` and the base64 of its 32-byte seed.
#[derive(Clone)]
pub struct Ed25519Key(SigningKey);

impl Ed25519Key {
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Ed25519Key(SigningKey::from_bytes(&seed))
    }

    /// Parses `whsk_<base64 of 32 bytes>`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let b64 = s
            .strip_prefix("whsk_")
            .ok_or(KeyError("an Ed25519 signing key starts with whsk_"))?;
        let seed: [u8; 32] =
            B64.decode(b64)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(KeyError(
                    "an Ed25519 signing key is whsk_ and the base64 of 32 bytes",
                ))?;
        Ok(Ed25519Key(SigningKey::from_bytes(&seed)))
    }

    pub fn expose(&self) -> String {
        format!("whsk_{}", B64.encode(self.0.to_bytes()))
    }

    /// The public key receivers verify with.
    pub fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey(self.0.verifying_key())
    }
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Key([redacted])")
    }
}

/// An Ed25519 public key: `whpk_` and the base64 of its 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519PublicKey(VerifyingKey);

impl Ed25519PublicKey {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let b64 = s
            .strip_prefix("whpk_")
            .ok_or(KeyError("an Ed25519 public key starts with whpk_"))?;
        let bytes: [u8; 32] =
            B64.decode(b64)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(KeyError(
                    "an Ed25519 public key is whpk_ and the base64 of 32 bytes",
                ))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Ed25519PublicKey)
            .map_err(|_| KeyError("not a valid Ed25519 public key"))
    }
}

impl fmt::Display for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "whpk_{}", B64.encode(self.0.to_bytes()))
    }
}

/// What signs an attempt: one of an endpoint's active keys.
#[derive(Clone, Debug)]
pub enum Signer {
    Hmac(HmacSecret),
    Ed25519(Ed25519Key),
}

/// The signing headers of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub webhook_signature: String,
    /// `t=…,v1=…`: present when an HMAC secret signs.
    pub clinikapi_signature: Option<String>,
}

impl SignedHeaders {
    /// As `(name, value)` pairs, lowercase names.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("webhook-id".to_string(), self.webhook_id.clone()),
            (
                "webhook-timestamp".to_string(),
                self.webhook_timestamp.clone(),
            ),
            (
                "webhook-signature".to_string(),
                self.webhook_signature.clone(),
            ),
        ];
        if let Some(c) = &self.clinikapi_signature {
            v.push(("x-clinikapi-signature".to_string(), c.clone()));
        }
        v
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign_v1(secret: &HmacSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = secret.mac(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// `v1a,<base64 Ed25519 signature of "{id}.{timestamp}.{body}">`.
pub fn sign_v1a(key: &Ed25519Key, id: &str, timestamp: i64, body: &[u8]) -> String {
    let msg = signed_content(id, timestamp, body);
    format!("v1a,{}", B64.encode(key.0.sign(&msg).to_bytes()))
}

/// The hex HMAC-SHA256 of `"{timestamp}.{body}"`.
fn clinikapi_v1(secret: &HmacSecret, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = secret.mac(&[ts.as_bytes(), b".", body]);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

/// The headers of one attempt, signed by every active key (during a
/// rotation, the new and the old).
pub fn sign_headers(signers: &[Signer], id: &str, timestamp: i64, body: &[u8]) -> SignedHeaders {
    let signatures: Vec<String> = signers
        .iter()
        .map(|s| match s {
            Signer::Hmac(secret) => sign_v1(secret, id, timestamp, body),
            Signer::Ed25519(key) => sign_v1a(key, id, timestamp, body),
        })
        .collect();
    let hmac: Vec<String> = signers
        .iter()
        .filter_map(|s| match s {
            Signer::Hmac(secret) => Some(format!("v1={}", clinikapi_v1(secret, timestamp, body))),
            Signer::Ed25519(_) => None,
        })
        .collect();
    SignedHeaders {
        webhook_id: id.to_string(),
        webhook_timestamp: timestamp.to_string(),
        webhook_signature: signatures.join(" "),
        clinikapi_signature: (!hmac.is_empty())
            .then(|| format!("t={timestamp},{}", hmac.join(","))),
    }
}

/// Why a request was not accepted as ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "no signature headers: expected webhook-id, webhook-timestamp and webhook-signature, or x-clinikapi-signature"
    )]
    MissingHeaders,
    #[error("the timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance (replayed or clock skew)")]
    OutsideTolerance,
    #[error("no signature matches a key of this endpoint")]
    NoMatch,
}

/// Checks requests against an endpoint's keys.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: Vec<HmacSecret>,
    public_keys: Vec<Ed25519PublicKey>,
    tolerance_secs: i64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// No keys yet; a 5-minute tolerance.
    pub fn new() -> Self {
        Verifier {
            secrets: Vec::new(),
            public_keys: Vec::new(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }

    /// Accepts signatures by this secret (add both during a rotation).
    pub fn with_secret(mut self, secret: HmacSecret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Accepts `v1a` signatures by this public key.
    pub fn with_public_key(mut self, key: Ed25519PublicKey) -> Self {
        self.public_keys.push(key);
        self
    }

    pub fn with_tolerance_secs(mut self, secs: i64) -> Self {
        self.tolerance_secs = secs.max(0);
        self
    }

    /// Checks the request's headers (any case) and raw body at `now`
    /// (Unix seconds). Standard Webhooks headers are checked first; without
    /// them, `x-clinikapi-signature`. Comparisons are constant-time.
    pub fn verify(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        if let (Some(id), Some(ts), Some(sigs)) = (
            get("webhook-id"),
            get("webhook-timestamp"),
            get("webhook-signature"),
        ) {
            let ts = self.timestamp(ts, now)?;
            let msg = signed_content(id, ts, body);
            for sig in sigs.split(' ').filter(|s| !s.is_empty()) {
                let Some((version, b64)) = sig.split_once(',') else {
                    continue;
                };
                let Ok(raw) = B64.decode(b64) else { continue };
                let ok = match version {
                    "v1" => self
                        .secrets
                        .iter()
                        .any(|s| s.mac(&[&msg]).verify_slice(&raw).is_ok()),
                    "v1a" => match ed25519_dalek::Signature::from_slice(&raw) {
                        Ok(signature) => self
                            .public_keys
                            .iter()
                            .any(|k| k.0.verify_strict(&msg, &signature).is_ok()),
                        Err(_) => false,
                    },
                    _ => false,
                };
                if ok {
                    return Ok(());
                }
            }
            return Err(VerifyError::NoMatch);
        }
        if let Some(header) = get("x-clinikapi-signature") {
            let mut ts = None;
            let mut sigs = Vec::new();
            for part in header.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => ts = Some(v),
                    Some(("v1", v)) => sigs.push(v),
                    _ => {}
                }
            }
            let ts = self.timestamp(ts.ok_or(VerifyError::MissingHeaders)?, now)?;
            let tsb = ts.to_string();
            for sig in sigs {
                let Some(raw) = decode_hex(sig) else { continue };
                if self.secrets.iter().any(|s| {
                    s.mac(&[tsb.as_bytes(), b".", body])
                        .verify_slice(&raw)
                        .is_ok()
                }) {
                    return Ok(());
                }
            }
            return Err(VerifyError::NoMatch);
        }
        Err(VerifyError::MissingHeaders)
    }

    fn timestamp(&self, s: &str, now: i64) -> Result<i64, VerifyError> {
        let ts: i64 = s.parse().map_err(|_| VerifyError::BadTimestamp)?;
        if now.abs_diff(ts) > self.tolerance_secs.unsigned_abs() {
            return Err(VerifyError::OutsideTolerance);
        }
        Ok(ts)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example.
    #[test]
    fn the_standard_webhooks_test_vector() {
        let secret = HmacSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign_v1(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let headers = vec![
            (
                "Webhook-Id".to_string(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string(),
            ),
            ("Webhook-Timestamp".to_string(), "1614265330".to_string()),
            ("Webhook-Signature".to_string(), sig),
        ];
        Verifier::new()
            .with_secret(secret)
            .verify(&headers, body, 1614265330 + 10)
            .unwrap();
    }

    #[test]
    fn both_schemes_verify_and_a_changed_body_does_not() {
        let secret = HmacSecret::generate();
        let body = b"{\"a\":1}";
        let h = sign_headers(&[Signer::Hmac(secret.clone())], "evt_1", 1000, body);
        let v = Verifier::new().with_secret(secret);
        v.verify(&h.pairs(), body, 1000).unwrap();
        let only_clinik = vec![(
            "x-clinikapi-signature".to_string(),
            h.clinikapi_signature.clone().unwrap(),
        )];
        v.verify(&only_clinik, body, 1000).unwrap();
        assert_eq!(
            v.verify(&h.pairs(), b"{\"a\":2}", 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            v.verify(&only_clinik, b"{\"a\":2}", 1000),
            Err(VerifyError::NoMatch)
        );
        assert!(h.clinikapi_signature.unwrap().starts_with("t=1000,v1="));
    }

    #[test]
    fn timestamps_outside_five_minutes_are_refused() {
        let secret = HmacSecret::generate();
        let h = sign_headers(&[Signer::Hmac(secret.clone())], "evt_1", 1000, b"x");
        let v = Verifier::new().with_secret(secret);
        assert!(v.verify(&h.pairs(), b"x", 1300).is_ok());
        assert_eq!(
            v.verify(&h.pairs(), b"x", 1301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            v.verify(&h.pairs(), b"x", 699),
            Err(VerifyError::OutsideTolerance)
        );
    }

    #[test]
    fn during_rotation_either_secret_verifies() {
        let old = HmacSecret::generate();
        let new = HmacSecret::generate();
        let h = sign_headers(
            &[Signer::Hmac(new.clone()), Signer::Hmac(old.clone())],
            "evt_1",
            1000,
            b"x",
        );
        assert_eq!(h.webhook_signature.split(' ').count(), 2);
        assert_eq!(
            h.clinikapi_signature
                .as_ref()
                .unwrap()
                .matches("v1=")
                .count(),
            2
        );
        Verifier::new()
            .with_secret(old)
            .verify(&h.pairs(), b"x", 1000)
            .unwrap();
        Verifier::new()
            .with_secret(new)
            .verify(&h.pairs(), b"x", 1000)
            .unwrap();
        assert_eq!(
            Verifier::new()
                .with_secret(HmacSecret::generate())
                .verify(&h.pairs(), b"x", 1000),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn ed25519_signs_v1a_without_a_clinikapi_header() {
        let key = Ed25519Key::generate();
        let public = Ed25519PublicKey::parse(&key.public_key().to_string()).unwrap();
        let h = sign_headers(&[Signer::Ed25519(key.clone())], "evt_1", 1000, b"x");
        assert!(h.webhook_signature.starts_with("v1a,"));
        assert_eq!(h.clinikapi_signature, None);
        Verifier::new()
            .with_public_key(public)
            .verify(&h.pairs(), b"x", 1000)
            .unwrap();
        let again = Ed25519Key::parse(&key.expose()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn keys_round_trip_and_never_print() {
        let s = HmacSecret::generate();
        assert_eq!(HmacSecret::parse(&s.expose()).unwrap(), s);
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
        assert!(HmacSecret::parse("sec_abc").is_err());
        assert!(HmacSecret::parse("whsec_!!!").is_err());
        assert!(Ed25519PublicKey::parse("whpk_AAAA").is_err());
    }

    #[test]
    fn garbage_headers_are_errors_not_panics() {
        let v = Verifier::new().with_secret(HmacSecret::generate());
        let cases: Vec<Vec<(String, String)>> = vec![
            vec![],
            vec![("x-clinikapi-signature".into(), "garbage".into())],
            vec![("x-clinikapi-signature".into(), "t=1000,v1=zz".into())],
            vec![("x-clinikapi-signature".into(), "t=abc,v1=00".into())],
            vec![
                ("webhook-id".into(), "e".into()),
                ("webhook-timestamp".into(), "1000".into()),
                ("webhook-signature".into(), "v1,not base64 v2,abc ,".into()),
            ],
            vec![
                ("webhook-id".into(), "e".into()),
                ("webhook-timestamp".into(), "99999999999999999999".into()),
                ("webhook-signature".into(), "v1,AAAA".into()),
            ],
            vec![
                ("webhook-id".into(), "e".into()),
                ("webhook-timestamp".into(), i64::MIN.to_string()),
                ("webhook-signature".into(), "v1,AAAA".into()),
            ],
        ];
        for headers in cases {
            assert!(v.verify(&headers, b"x", 1000).is_err());
        }
    }
}
