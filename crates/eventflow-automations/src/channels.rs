//! The channel providers of docs/design.md §6: Twilio's REST API for SMS, SMTP
//! (lettre) for email, Slack incoming webhooks. Each send says whether a
//! failure is worth another try ([`Failure::Retry`]) or not
//! ([`Failure::Permanent`]: a bad number, a refused address).
//!
//! Error texts never carry a message body; they may carry a provider's own
//! explanation (which can name the recipient), so they go to the run record,
//! which is the tenant's, and never to the log.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};

/// Twilio's settings (`[providers.twilio]`). `Debug` hides the token.
#[derive(Clone)]
pub struct Twilio {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    /// `https://api.twilio.com`, or a local server speaking its API.
    pub base_url: String,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

/// SMTP settings (`[providers.smtp]`). `Debug` hides the password.
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub from: String,
    pub tls: SmtpTls,
    /// PEM of an extra certificate authority to trust.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("from", &self.from)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("from", &self.from)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another try (network, 5xx, 429); with the provider's
    /// `Retry-After` when it gave one.
    Retry(String, Option<Duration>),
    /// Another try would fail the same way.
    Permanent(String),
}

/// What a provider said about a message it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The provider's id for the message (Twilio's `SM…` SID).
    pub id: Option<String>,
    /// The provider's status (`queued`, `sent`, `250 OK`, …).
    pub status: String,
}

/// Classifies a response status: 429 and 5xx are retried, other 4xx not.
fn http_failure(
    status: reqwest::StatusCode,
    detail: String,
    retry_after: Option<Duration>,
) -> Failure {
    if status.as_u16() == 429 || status.is_server_error() {
        Failure::Retry(detail, retry_after)
    } else {
        Failure::Permanent(detail)
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| eventflow_delivery::policy::parse_retry_after(v, jiff::Timestamp::now()))
}

/// A network error, without the URL (it may carry credentials); `who`
/// names the other end.
fn network(e: &reqwest::Error, who: &str) -> Failure {
    // The SSRF guard refused every address of the host: nothing was sent,
    // and another try would be refused the same way.
    if let Some(why) = eventflow_delivery::http::refusal(e) {
        return Failure::Permanent(why.to_string());
    }
    let what = if e.is_timeout() {
        format!("{who} did not answer in time")
    } else if e.is_connect() {
        format!("could not connect to {who}")
    } else {
        format!("the request to {who} failed")
    };
    Failure::Retry(what, None)
}

/// Sends a request whose answer matters only by its status (an `http`
/// step, a claim): the status of a 2xx, else why it failed.
pub async fn send(request: reqwest::RequestBuilder, who: &str) -> Result<u16, Failure> {
    let response = request.send().await.map_err(|e| network(&e, who))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    Err(http_failure(
        status,
        format!("{who} answered {status}"),
        retry_after(&response),
    ))
}

/// Sends an SMS through Twilio's Messages API: a form POST to
/// `{base_url}/2010-04-01/Accounts/{sid}/Messages.json` with basic auth.
pub async fn twilio_sms(
    http: &reqwest::Client,
    timeout: Duration,
    t: &Twilio,
    to: &str,
    body: &str,
) -> Result<Sent, Failure> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        t.base_url.trim_end_matches('/'),
        t.account_sid
    );
    let response = http
        .post(url)
        .timeout(timeout)
        .basic_auth(&t.account_sid, Some(&t.auth_token))
        .form(&[("To", to), ("From", t.from.as_str()), ("Body", body)])
        .send()
        .await
        .map_err(|e| network(&e, "Twilio"))?;
    let status = response.status();
    let wait = retry_after(&response);
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // Twilio's error body: {"code": 21211, "message": "…", "status": 400}.
        let code = answer.get("code").and_then(Value::as_i64);
        let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
        let detail = match code {
            Some(c) => format!("Twilio answered {status}: error {c}: {message}"),
            None => format!("Twilio answered {status}"),
        };
        return Err(http_failure(status, detail, wait));
    }
    Ok(Sent {
        id: answer
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_string),
        status: answer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("queued")
            .to_string(),
    })
}

/// Posts a message to a Slack incoming webhook.
pub async fn slack(
    http: &reqwest::Client,
    timeout: Duration,
    webhook_url: &str,
    text: &str,
    channel: Option<&str>,
) -> Result<Sent, Failure> {
    let mut body = json!({ "text": text });
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    let response = http
        .post(webhook_url)
        .timeout(timeout)
        .json(&body)
        .send()
        .await
        .map_err(|e| network(&e, "Slack"))?;
    let status = response.status();
    let wait = retry_after(&response);
    let answer = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let answer: String = answer.chars().take(100).collect();
        return Err(http_failure(
            status,
            format!("Slack answered {status}: {answer}"),
            wait,
        ));
    }
    Ok(Sent {
        id: None,
        status: if answer.is_empty() {
            "ok".into()
        } else {
            answer.chars().take(100).collect()
        },
    })
}

/// An SMTP client for the settings (connections are pooled).
pub fn mailer(s: &Smtp, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let tls = |s: &Smtp| -> Result<TlsParameters, String> {
        let mut params = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|_| "providers.smtp.ca_file: not a PEM certificate".to_string())?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| format!("providers.smtp: {e}"))
    };
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host);
    let builder = match s.tls {
        SmtpTls::None => builder.tls(Tls::None),
        SmtpTls::Starttls => builder.tls(Tls::Required(tls(s)?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(s)?)),
    };
    let mut builder = builder.port(s.port).timeout(Some(timeout));
    if !s.username.is_empty() {
        builder = builder.credentials(Credentials::new(s.username.clone(), s.password.clone()));
    }
    Ok(builder.build())
}

/// Sends a plain-text email.
pub async fn email(
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<Sent, Failure> {
    let from = from
        .parse()
        .map_err(|_| Failure::Permanent("providers.smtp.from: not an email address".into()))?;
    let to = to
        .parse()
        .map_err(|_| Failure::Permanent("to: not an email address".into()))?;
    let message = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| Failure::Permanent(format!("the message could not be built: {e}")))?;
    match mailer.send(message).await {
        Ok(response) => Ok(Sent {
            id: None,
            status: format!(
                "{} {}",
                response.code(),
                response
                    .message()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(100)
                    .collect::<String>()
            )
            .trim()
            .to_string(),
        }),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(format!(
            "the SMTP server refused the message: {}",
            short(&e)
        ))),
        // lettre's text says what went wrong (a refused certificate, a
        // closed connection, the server's reply); it goes to the run
        // record only, never to the log.
        Err(e) => Err(Failure::Retry(
            match e.status() {
                Some(code) => format!("the SMTP server answered {code}: {}", short(&e)),
                None if e.is_timeout() => "the SMTP server timed out".into(),
                None => format!("could not talk to the SMTP server: {}", short(&e)),
            },
            None,
        )),
    }
}

/// An error's text (lettre's includes its cause), cut to 300 characters.
fn short(e: &lettre::transport::smtp::Error) -> String {
    e.to_string().chars().take(300).collect()
}
