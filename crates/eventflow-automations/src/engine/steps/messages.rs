//! `sms`, `email` and `slack`: a message through the configured provider
//! (Twilio, SMTP, a Slack incoming webhook), recorded as a notification; with
//! no provider configured, the message goes to the outbox only. A tenant's
//! own workflow takes a unit of its daily quota before each send.

use eventflow_store::Channel;
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
        return delivered(at.note(Channel::Sms, to, None, body, None));
    };
    if let Some(no) = take_quota(StepKind::Sms, at, tools).await {
        return no;
    }
    match channels::twilio_sms(tools.http, tools.timeout, twilio, &to, &body).await {
        Ok(sent) => delivered(at.note(Channel::Sms, to, None, body, Some(("twilio", sent)))),
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
        return delivered(at.note(Channel::Email, to, Some(subject), body, None));
    };
    if let Some(no) = take_quota(StepKind::Email, at, tools).await {
        return no;
    }
    match channels::email(mailer, &smtp.from, &to, &subject, &body).await {
        Ok(sent) => delivered(at.note(
            Channel::Email,
            to,
            Some(subject),
            body,
            Some(("smtp", sent)),
        )),
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
        return delivered(at.note(Channel::Slack, to, None, message, None));
    };
    if let Some(no) = take_quota(StepKind::Slack, at, tools).await {
        return no;
    }
    match channels::slack(tools.http, tools.timeout, url, &message, channel.as_deref()).await {
        Ok(sent) => delivered(at.note(Channel::Slack, to, None, message, Some(("slack", sent)))),
        Err(f) => f.into(),
    }
}

#[cfg(test)]
mod tests {
    use eventflow_store::{Effect, Notification};
    use serde_json::{Value, json};

    use super::{email, slack, sms};
    use crate::channels::{self, Smtp, SmtpTls, Twilio};
    use crate::engine::steps::Done;
    use crate::engine::steps::testing::{Kit, Server, SmtpSink, TIMEOUT, at, config};

    fn twilio(base_url: &str) -> Twilio {
        Twilio {
            account_sid: "AC0001".into(),
            auth_token: "twilio-token".into(),
            from: "+15550001111".into(),
            base_url: base_url.to_string(),
        }
    }

    /// The message a step sent (or put in the outbox), and its detail.
    fn sent(done: Done) -> (Notification, Value) {
        let Done::Ok { detail, effects } = done else {
            panic!("not done: {done:?}");
        };
        let Some(Effect::Notify(n)) = effects.into_iter().next() else {
            panic!("no notification");
        };
        (n, detail.unwrap_or_default())
    }

    #[tokio::test]
    async fn an_sms_goes_to_twilio_as_rendered_and_is_recorded_with_twilios_id() {
        let mut kit = Kit::new().await;
        let server = Server::answering(201, r#"{"sid": "SM123", "status": "queued"}"#).await;
        kit.settings.twilio = Some(twilio(&server.url));
        let run = kit.run(json!({}));
        let step = config(json!({"to": "+15557654321", "body": "See you at 9:00, Ada"}));
        let (n, detail) = sent(sms(&step, &at(&run), &kit.tools()).await);
        assert_eq!(
            detail,
            json!({"notificationId": n.id, "provider": "twilio", "providerId": "SM123", "providerStatus": "queued"})
        );
        assert_eq!((n.channel.as_str(), n.to.as_str()), ("sms", "+15557654321"));
        assert_eq!(n.body, "See you at 9:00, Ada");
        assert_eq!(n.workflow.as_deref(), Some("reminders"));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/2010-04-01/Accounts/AC0001/Messages.json");
        assert!(seen[0].header("authorization").starts_with("Basic "));
        let form = seen[0].form();
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(field("To"), Some("+15557654321"));
        assert_eq!(field("From"), Some("+15550001111"));
        assert_eq!(field("Body"), Some("See you at 9:00, Ada"));
    }

    #[tokio::test]
    async fn twilio_refusing_a_number_fails_the_step_and_twilio_down_is_tried_again() {
        let mut kit = Kit::new().await;
        let run = kit.run(json!({}));
        let step = config(json!({"to": "+1555", "body": "hi"}));
        let refused = Server::answering(
            400,
            r#"{"code": 21211, "message": "Invalid 'To' Phone Number"}"#,
        )
        .await;
        kit.settings.twilio = Some(twilio(&refused.url));
        match sms(&step, &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert_eq!(
                e,
                "Twilio answered 400 Bad Request: error 21211: Invalid 'To' Phone Number"
            ),
            other => panic!("{other:?}"),
        }
        let down = Server::answering(503, "{}").await;
        kit.settings.twilio = Some(twilio(&down.url));
        assert!(matches!(
            sms(&step, &at(&run), &kit.tools()).await,
            Done::Retry(..)
        ));
    }

    #[tokio::test]
    async fn an_sms_with_no_number_fails_and_without_twilio_goes_to_the_outbox() {
        let mut kit = Kit::new().await;
        let run = kit.run(json!({}));
        let server = Server::answering(201, "{}").await;
        kit.settings.twilio = Some(twilio(&server.url));
        match sms(
            &config(json!({"to": "", "body": "hi"})),
            &at(&run),
            &kit.tools(),
        )
        .await
        {
            Done::Fail(e) => assert_eq!(e, "to: is empty (the record has no phone number?)"),
            other => panic!("{other:?}"),
        }
        assert!(server.seen().is_empty());
        kit.settings.twilio = None;
        let step = config(json!({"to": "+15557654321", "body": "hi"}));
        let (n, detail) = sent(sms(&step, &at(&run), &kit.tools()).await);
        assert_eq!(n.provider, "outbox");
        assert_eq!(detail["provider"], "outbox");
        assert_eq!(n.to, "+15557654321");
    }

    #[tokio::test]
    async fn a_slack_message_posts_the_rendered_text_and_channel() {
        let mut kit = Kit::new().await;
        let server = Server::answering(200, "ok").await;
        kit.settings.slack_webhook_url = Some(format!("{}/services/T0/B0/X", server.url));
        let run = kit.run(json!({}));
        let step = config(json!({"text": "New patient pat_1", "channel": "#front-desk"}));
        let (n, detail) = sent(slack(&step, &at(&run), &kit.tools()).await);
        assert_eq!(detail["provider"], "slack");
        assert_eq!(detail["providerStatus"], "ok");
        assert_eq!(
            (n.channel.as_str(), n.to.as_str()),
            ("slack", "#front-desk")
        );
        let seen = server.seen();
        assert_eq!(seen[0].path, "/services/T0/B0/X");
        assert_eq!(
            seen[0].json(),
            json!({"text": "New patient pat_1", "channel": "#front-desk"})
        );
        // No channel: the webhook's own.
        let step = config(json!({"text": "hello"}));
        let (n, _) = sent(slack(&step, &at(&run), &kit.tools()).await);
        assert_eq!(n.to, "slack");
        assert_eq!(server.seen()[1].json(), json!({"text": "hello"}));
    }

    #[tokio::test]
    async fn slack_refusing_the_message_fails_the_step() {
        let mut kit = Kit::new().await;
        let server = Server::answering(404, "no_service").await;
        kit.settings.slack_webhook_url = Some(server.url.clone());
        let run = kit.run(json!({}));
        match slack(&config(json!({"text": "x"})), &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert_eq!(e, "Slack answered 404 Not Found: no_service"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_email_goes_over_smtp_as_rendered() {
        let mut kit = Kit::new().await;
        let sink = SmtpSink::start().await;
        let smtp = Smtp {
            host: "127.0.0.1".into(),
            port: sink.port,
            username: String::new(),
            password: String::new(),
            from: "clinic@example.com".into(),
            tls: SmtpTls::None,
            ca_pem: None,
        };
        kit.mailer = Some(channels::mailer(&smtp, TIMEOUT).expect("a mailer"));
        kit.settings.smtp = Some(smtp);
        let run = kit.run(json!({}));
        let step = config(json!({
            "to": "ada@example.com",
            "subject": "Your results",
            "body": "Your HbA1c is 7.1 %.",
        }));
        let (n, detail) = sent(email(&step, &at(&run), &kit.tools()).await);
        assert_eq!(detail["provider"], "smtp");
        assert_eq!(detail["providerStatus"], "250 2.0.0 queued");
        assert_eq!(n.subject.as_deref(), Some("Your results"));
        let mails = sink.mails();
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert!(mail.contains("To: ada@example.com"), "{mail}");
        assert!(mail.contains("From: clinic@example.com"), "{mail}");
        assert!(mail.contains("Subject: Your results"), "{mail}");
        assert!(mail.contains("Your HbA1c is 7.1 %."), "{mail}");
        // An address SMTP cannot take fails for good.
        let step = config(json!({"to": "not an address", "subject": "s", "body": "b"}));
        match email(&step, &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert_eq!(e, "to: not an email address"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.mails().len(), 1);
    }

    #[tokio::test]
    async fn an_email_with_no_address_fails_and_without_smtp_goes_to_the_outbox() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        let step = config(json!({"to": "", "subject": "s", "body": "b"}));
        match email(&step, &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert_eq!(e, "to: is empty"),
            other => panic!("{other:?}"),
        }
        let step = config(json!({"to": "ada@example.com", "subject": "s", "body": "b"}));
        let (n, _) = sent(email(&step, &at(&run), &kit.tools()).await);
        assert_eq!(
            (n.provider.as_str(), n.channel.as_str()),
            ("outbox", "email")
        );
    }

    #[tokio::test]
    async fn a_tenants_own_workflow_stops_sending_at_its_daily_quota() {
        let mut kit = Kit::new().await;
        let server = Server::answering(201, r#"{"sid": "SM1", "status": "queued"}"#).await;
        kit.settings.twilio = Some(twilio(&server.url));
        kit.settings.provider_quotas.twilio = Some(2);
        let step = config(json!({"to": "+15557654321", "body": "hi"}));
        let mut outcomes = Vec::new();
        for i in 0..3 {
            let mut run = kit.run(json!({}));
            run.id = format!("run_{i}");
            let mut own = at(&run);
            own.own = true;
            outcomes.push(sms(&step, &own, &kit.tools()).await);
        }
        assert!(matches!(outcomes[0], Done::Ok { .. }));
        assert!(matches!(outcomes[1], Done::Ok { .. }));
        match &outcomes[2] {
            Done::Fail(e) => assert_eq!(
                e,
                "daily quota of 2 sms reached for this tenant ([providers.twilio] daily_quota; \
                 it starts again at midnight UTC)"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(server.seen().len(), 2);
        // The operator's workflows are not counted.
        let run = kit.run(json!({}));
        assert!(matches!(
            sms(&step, &at(&run), &kit.tools()).await,
            Done::Ok { .. }
        ));
    }
}
