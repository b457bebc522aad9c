//! `http`: a request to a URL with the rendered `method` (POST when none),
//! `headers` and JSON `body`, optionally signed like a webhook (`sign`).
//! The URL passes the outbound guard first; the answer counts by its
//! status: a 2xx is done, a 429 or 5xx (or no answer) is tried again, any
//! other status fails the step. Every attempt carries the same
//! `idempotency-key`. An empty URL (a `vars` entry left unset) puts the
//! request in the outbox, like a message with no provider.

use serde_json::{Map, Value};

use super::{At, Done, Tools, delivered, send};

/// `http`: `url`, and optionally `method`, `headers`, `body`, `sign`.
pub(in crate::engine) async fn request(
    config: &Map<String, Value>,
    at: &At<'_>,
    tools: &Tools<'_>,
) -> Done {
    let url = config.get("url").and_then(Value::as_str).unwrap_or("");
    let method = config
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    if url.is_empty() {
        let body = config.get("body").map(Value::to_string).unwrap_or_default();
        return delivered(at.note("http", String::new(), Some(method.to_string()), body, None));
    }
    // The guard, before anything is sent: the literal address, the
    // scheme; the client checks every address a name resolves to.
    let url = match tools.settings.url_policy.check(url) {
        Ok(url) => url,
        Err(e) => return Done::Fail(format!("url: {e}")),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let bytes = config
        .get("body")
        .filter(|_| method != reqwest::Method::GET)
        .map(|b| serde_json::to_vec(b).unwrap_or_default());
    let delivery_id = at.idempotency_key();
    let mut request = tools
        .http
        .request(method, url)
        .timeout(tools.timeout)
        .header("idempotency-key", delivery_id.as_str());
    if let Some(headers) = config.get("headers").and_then(Value::as_object) {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(&v),
            ) else {
                return Done::Fail(format!("headers.{k}: not a valid header name or value"));
            };
            request = request.header(name, value);
        }
    }
    if let Some(secret) = config
        .get("sign")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let Ok(secret) = eventflow_webhook::HmacSecret::parse(secret) else {
            return Done::Fail("sign: must be a signing secret (whsec_…)".into());
        };
        let signed = eventflow_webhook::sign_headers(
            &[eventflow_webhook::Signer::Hmac(secret)],
            &delivery_id,
            at.now.as_second(),
            bytes.as_deref().unwrap_or(b""),
        );
        for (k, v) in signed.pairs() {
            request = request.header(k, v);
        }
    }
    if let Some(b) = bytes {
        request = request.header("content-type", "application/json").body(b);
    }
    send(request, "the server").await
}
