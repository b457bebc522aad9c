//! `sms`, `email` and `slack`: a message through the configured provider
//! (Twilio, SMTP, a Slack incoming webhook), recorded as a notification; with
//! no provider configured, the message goes to the outbox only. A tenant's
//! own workflow takes a unit of its daily quota before each send.

use serde_json::{Map, Value};

use super::{At, Done, Tools, delivered, take_quota, text};
use crate::channels;
use crate::workflow::StepKind;

/// `sms`: `to`, `body`.
pub(in crate::engine) async fn sms(
    config: &Map<String, Value>,
    at: &At<'_>,
    tools: &Tools<'_>,
) -> Done {
    let (to, body) = (text(config, "to"), text(config, "body"));
    if to.is_empty() {
        return Done::Fail("to: is empty (the record has no phone number?)".into());
    }
    let Some(twilio) = &tools.settings.twilio else {
        return delivered(at.note("sms", to, None, body, None));
    };
    if let Some(no) = take_quota(StepKind::Sms, at, tools).await {
        return no;
    }
    match channels::twilio_sms(tools.http, tools.timeout, twilio, &to, &body).await {
        Ok(sent) => delivered(at.note("sms", to, None, body, Some(("twilio", sent)))),
        Err(f) => f.into(),
    }
}

/// `email`: `to`, `subject`, `body` (plain text).
pub(in crate::engine) async fn email(
    config: &Map<String, Value>,
    at: &At<'_>,
    tools: &Tools<'_>,
) -> Done {
    let (to, subject, body) = (
        text(config, "to"),
        text(config, "subject"),
        text(config, "body"),
    );
    if to.is_empty() {
        return Done::Fail("to: is empty".into());
    }
    let (Some(mailer), Some(smtp)) = (tools.mailer, &tools.settings.smtp) else {
        return delivered(at.note("email", to, Some(subject), body, None));
    };
    if let Some(no) = take_quota(StepKind::Email, at, tools).await {
        return no;
    }
    match channels::email(mailer, &smtp.from, &to, &subject, &body).await {
        Ok(sent) => delivered(at.note("email", to, Some(subject), body, Some(("smtp", sent)))),
        Err(f) => f.into(),
    }
}

/// `slack`: `text`, and an optional `channel` (else the webhook's own).
pub(in crate::engine) async fn slack(
    config: &Map<String, Value>,
    at: &At<'_>,
    tools: &Tools<'_>,
) -> Done {
    let message = text(config, "text");
    let channel = config
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_string);
    let to = channel.clone().unwrap_or_else(|| "slack".into());
    let Some(url) = &tools.settings.slack_webhook_url else {
        return delivered(at.note("slack", to, None, message, None));
    };
    if let Some(no) = take_quota(StepKind::Slack, at, tools).await {
        return no;
    }
    match channels::slack(tools.http, tools.timeout, url, &message, channel.as_deref()).await {
        Ok(sent) => delivered(at.note("slack", to, None, message, Some(("slack", sent)))),
        Err(f) => f.into(),
    }
}
