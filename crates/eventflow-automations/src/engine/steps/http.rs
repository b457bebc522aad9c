//! `http`: a request to a URL with the rendered `method` (POST when none),
//! `headers` and JSON `body`, optionally signed like a webhook (`sign`).
//! The URL passes the outbound guard first; the answer counts by its
//! status: a 2xx is done, a 429 or 5xx (or no answer) is tried again, any
//! other status fails the step. Every attempt carries the same
//! `idempotency-key`. An empty URL (a `vars` entry left unset) puts the
//! request in the outbox, like a message with no provider.

use eventflow_store::Channel;
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
        return delivered(at.note(
            Channel::Http,
            String::new(),
            Some(method.to_string()),
            body,
            None,
        ));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use eventflow_store::{Channel, Effect};
    use serde_json::json;

    use super::request;
    use crate::engine::steps::Done;
    use crate::engine::steps::testing::{Kit, Server, at, config};

    #[tokio::test]
    async fn a_2xx_is_done_and_the_server_gets_the_rendered_method_headers_and_body() {
        let kit = Kit::new().await;
        let server = Server::answering(201, "{}").await;
        let run = kit.run(json!({}));
        let step = config(json!({
            "url": format!("{}/hooks/intake?clinic=north", server.url),
            "method": "PUT",
            "headers": {"x-clinic": "north", "x-count": 3},
            "body": {"patientId": "pat_1", "answers": [1, 2]},
        }));
        let done = request(&step, &at(&run), &kit.tools()).await;
        let Done::Ok { detail, effects } = done else {
            panic!("not done: {done:?}");
        };
        assert_eq!(detail, Some(json!({"statusCode": 201})));
        assert!(effects.is_empty());
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let got = &seen[0];
        assert_eq!(got.method, "PUT");
        assert_eq!(got.path, "/hooks/intake");
        assert_eq!(got.header("x-clinic"), "north");
        assert_eq!(got.header("x-count"), "3");
        assert_eq!(got.header("content-type"), "application/json");
        // The same key on every attempt of this step of this run.
        assert_eq!(got.header("idempotency-key"), "run_test1:1");
        assert_eq!(got.json(), json!({"patientId": "pat_1", "answers": [1, 2]}));
        assert!(got.header("webhook-signature").is_empty(), "signed unasked");
    }

    #[tokio::test]
    async fn a_get_sends_no_body_and_no_method_means_post() {
        let kit = Kit::new().await;
        let server = Server::answering(200, "{}").await;
        let run = kit.run(json!({}));
        let get = config(json!({"url": server.url, "method": "GET", "body": {"a": 1}}));
        let post = config(json!({"url": server.url, "body": {"a": 1}}));
        assert!(matches!(
            request(&get, &at(&run), &kit.tools()).await,
            Done::Ok { .. }
        ));
        assert!(matches!(
            request(&post, &at(&run), &kit.tools()).await,
            Done::Ok { .. }
        ));
        let seen = server.seen();
        assert_eq!(seen[0].method, "GET");
        assert!(seen[0].body.is_empty());
        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].json(), json!({"a": 1}));
    }

    #[tokio::test]
    async fn a_5xx_or_429_is_tried_again_and_another_4xx_fails_the_step() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        for (status, retried) in [
            (500, true),
            (503, true),
            (429, true),
            (400, false),
            (404, false),
        ] {
            let server = Server::answering(status, "{}").await;
            let step = config(json!({"url": server.url}));
            match request(&step, &at(&run), &kit.tools()).await {
                Done::Retry(e, _) => {
                    assert!(retried, "{status} was retried: {e}");
                    assert!(e.contains(&status.to_string()), "{e}");
                }
                Done::Fail(e) => {
                    assert!(!retried, "{status} failed for good: {e}");
                    assert!(e.contains(&status.to_string()), "{e}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_in_time_is_tried_again() {
        let mut kit = Kit::new().await;
        kit.timeout = Duration::from_millis(200);
        let server = Server::silent().await;
        let run = kit.run(json!({}));
        let step = config(json!({"url": server.url}));
        match request(&step, &at(&run), &kit.tools()).await {
            Done::Retry(e, None) => assert_eq!(e, "the server did not answer in time"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_private_address_the_guard_refuses_fails_before_anything_is_sent() {
        let mut kit = Kit::new().await;
        kit.settings.url_policy.allow_private = false;
        let server = Server::answering(200, "{}").await;
        let run = kit.run(json!({}));
        let step = config(json!({"url": server.url}));
        match request(&step, &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert!(e.starts_with("url: "), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn a_signed_request_verifies_with_the_secret() {
        let kit = Kit::new().await;
        let server = Server::answering(204, "").await;
        let run = kit.run(json!({}));
        let secret = eventflow_webhook::HmacSecret::generate();
        let step = config(json!({"url": server.url, "body": {"a": 1}, "sign": secret.expose()}));
        let a = at(&run);
        assert!(matches!(
            request(&step, &a, &kit.tools()).await,
            Done::Ok { .. }
        ));
        let got = &server.seen()[0];
        assert_eq!(got.header("webhook-id"), "run_test1:1");
        let headers: Vec<(String, String)> = got
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        eventflow_webhook::Verifier::new()
            .with_secret(secret)
            .verify(&headers, &got.body, a.now.as_second())
            .expect("the signature verifies");
    }

    #[tokio::test]
    async fn bad_settings_fail_the_step_and_send_nothing() {
        let kit = Kit::new().await;
        let server = Server::answering(200, "{}").await;
        let run = kit.run(json!({}));
        let cases = [
            (
                json!({"url": server.url, "sign": "not-a-secret"}),
                "sign: must be a signing secret (whsec_…)",
            ),
            (
                json!({"url": server.url, "headers": {"bad name": "x"}}),
                "headers.bad name: not a valid header name or value",
            ),
            (
                json!({"url": server.url, "headers": {"x-a": "line\nbreak"}}),
                "headers.x-a: not a valid header name or value",
            ),
        ];
        for (step, want) in cases {
            match request(&config(step), &at(&run), &kit.tools()).await {
                Done::Fail(e) => assert_eq!(e, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn an_empty_url_puts_the_request_in_the_outbox() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        let step = config(json!({"url": "", "method": "PATCH", "body": {"a": 1}}));
        let Done::Ok { detail, effects } = request(&step, &at(&run), &kit.tools()).await else {
            panic!("not done");
        };
        assert_eq!(
            detail.as_ref().map(|d| &d["provider"]),
            Some(&json!("outbox"))
        );
        let [Effect::Notify(n)] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        assert_eq!(n.channel, Channel::Http);
        assert_eq!(n.subject.as_deref(), Some("PATCH"));
        assert_eq!(n.body, r#"{"a":1}"#);
        assert_eq!(n.step.as_deref(), Some("1"));
        assert_eq!(n.run_id.as_deref(), Some("run_test1"));
    }
}
