//! The developer portal (`/portal`) over HTTP, as a browser without
//! JavaScript uses it: sign-in and its cookie, CSRF on every form, each
//! page, and tenant isolation. (`portal_browser.rs` drives real Chromium.)

use std::collections::HashMap;
use std::time::Duration;

use eventflow_testkit::{Backend, Receiver, backend_tests, wait_for};
use serde_json::{Value, json};

backend_tests!(
    signing_in_sets_a_strict_http_only_session_and_signing_out_ends_it,
    endpoints_are_created_edited_and_deleted_through_forms_with_csrf,
    an_endpoint_page_shows_deliveries_attempts_and_its_actions_work,
    events_and_automations_pages_show_the_tenants_own_data_only,
    failed_sign_ins_count_with_failed_api_keys_and_the_31st_is_429,
    the_portal_offers_only_what_the_key_may_do_and_ends_with_its_key,
    an_organisation_switches_between_its_clinics_and_the_network,
    the_portal_shows_verification_recipients_and_a_patients_disclosures,
    a_vendor_link_signs_in_once_to_its_owners_endpoints_only,
);

/// The portal in headless Chromium (playwright-core from npm, Debian's
/// `chromium`): sign in, create an endpoint by ticking event types (the CEL
/// filter checked as typed), trigger an event and see its delivery and
/// attempt, rotate the secret, replay, visit every page. Screenshots go to
/// `EVENTFLOW_PORTAL_SCREENSHOTS` when set (that is how `docs/portal/` was
/// made). The test installs playwright-core itself with npm when it can;
/// without Node.js or Chromium it says it was skipped (`.ci/run` installs both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_works_in_a_real_browser() {
    const NAME: &str = "the_portal_works_in_a_real_browser";
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return eventflow_testkit::skipped(
            NAME,
            "Chromium is not installed (apt-get install chromium)",
        );
    }
    let Some(modules) = playwright_modules() else {
        return eventflow_testkit::skipped(
            NAME,
            "Node.js with npm, or the npm registry, is not available for playwright-core",
        );
    };
    let examples =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let server = eventflow_testkit::TestServer::spawn_with(eventflow_testkit::Options {
        clock: None,
        configure: Some(Box::new(move |c| c.workflows_dir = examples)),
    })
    .await;
    let api = server.api();
    // Something for the automations page: an onboarding and a booking.
    let p = api
        .create("patients", json!({"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com", "phone": "+15551230002"}))
        .await;
    let start = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72);
    api.create(
        "appointments",
        json!({"patientId": p, "start": eventflow_model::time::format(start), "status": "booked"}),
    )
    .await;
    let rx = Receiver::start().await;
    let shots_dir = tempfile::tempdir().unwrap();
    let shots = std::env::var("EVENTFLOW_PORTAL_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shots_dir.path().to_path_buf());
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/portal.cjs");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(&server.base)
            .arg(&server.key)
            .arg(rx.url("/hook"))
            .arg(&shots)
            .env("NODE_PATH", &modules)
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends within 2 minutes")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap();
    assert_eq!(seen["code"], "200", "{seen}");
    assert_eq!(seen["rotated"], true, "{seen}");
    assert!(
        seen["replayed"]
            .as_str()
            .unwrap()
            .contains("events queued again"),
        "{seen}"
    );
    assert_eq!(
        seen["focused"], "Skip to content",
        "keyboard: the first Tab reaches the skip link"
    );
    assert_eq!(seen["overflow"], false, "nothing wider than a phone screen");
    assert_eq!(seen["errors"], json!([]), "no script or console errors");
    // What the browser did, through the API.
    let eps = api.get("/v1/endpoints").await.body["data"].clone();
    assert_eq!(
        eps[0]["eventTypes"],
        json!(["appointment.*", "patient.created"])
    );
    assert_eq!(eps[0]["filter"], "type != 'patient.deleted'");
    let id = eps[0]["id"].as_str().unwrap();
    let secret = api.get(&format!("/v1/endpoints/{id}/secret")).await.body;
    assert_eq!(
        secret["previous"].as_array().unwrap().len(),
        1,
        "rotated once"
    );
    // The patient's event went out twice: delivered, then replayed.
    wait_for(Duration::from_secs(20), "the replayed delivery", || async {
        (rx.count() >= 2).then_some(())
    })
    .await;
    for page in [
        "sign-in",
        "endpoint-new",
        "endpoint-detail",
        "endpoint-edit",
        "endpoint-delete",
        "endpoints",
        "events",
        "event",
        "automations",
        "endpoints-phone",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "a screenshot of {page}"
        );
    }
}

/// A `node_modules` with playwright-core: `EVENTFLOW_PLAYWRIGHT_DIR`, or one
/// this test installs under the user's cache with npm.
fn playwright_modules() -> Option<std::path::PathBuf> {
    crate::helpers::npm_modules(
        "EVENTFLOW_PLAYWRIGHT_DIR",
        "eventflow-playwright",
        "playwright-core",
        "playwright-core@1",
    )
}

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        eventflow_delivery::http::install_crypto();
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let r = req
            .header("cookie", cookie.join("; "))
            .send()
            .await
            .unwrap();
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string()),
            headers: r.headers().clone(),
            html: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Loads a page until it contains `needle` (at most 20 s); its HTML.
    async fn wait_page(&self, path: &str, needle: &str) -> String {
        let cookie = format!("ef_session={}", self.cookies["ef_session"]);
        let url = format!("{}{path}", self.base);
        wait_for(Duration::from_secs(20), needle, || {
            let (http, url, cookie) = (self.http.clone(), url.clone(), cookie.clone());
            async move {
                let html = http
                    .get(url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                html.contains(needle).then_some(html)
            }
        })
        .await
    }

    /// Signs in with an API key; returns the session's CSRF token.
    async fn sign_in(&mut self, key: &str) -> String {
        let page = self.get("/portal/sign-in").await;
        let pre = hidden(&page.html, "pre");
        let r = self
            .post("/portal/sign-in", &[("pre", &pre), ("api_key", key)])
            .await;
        assert_eq!(r.status, 303, "{}", r.html);
        let page = self.get("/portal/endpoints").await;
        assert_eq!(page.status, 200);
        hidden(&page.html, "csrf")
    }
}

/// The page's text with minijinja's HTML escapes undone (it escapes `/`).
fn unescaped(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first hidden input of that name.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

async fn signing_in_sets_a_strict_http_only_session_and_signing_out_ends_it(backend: Backend) {
    let server = backend.spawn().await;
    let mut b = Browser::new(&server.base);
    let r = b.get("/portal").await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/portal/sign-in"))
    );
    let r = b.get("/portal/endpoints").await;
    assert_eq!(
        r.location.as_deref(),
        Some("/portal/sign-in"),
        "pages need a session"
    );
    let page = b.get("/portal/sign-in").await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        page.html
            .contains(r#"<label for="api_key">API key</label>"#)
    );
    let pre = hidden(&page.html, "pre");
    // A wrong key, or a post without the form's token: refused.
    let r = b
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", "efk_wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.html.contains("That API key is not valid."));
    let mut stranger = Browser::new(&server.base);
    let r = stranger
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", &server.key)],
        )
        .await;
    assert_eq!(
        r.status, 403,
        "no token cookie: a cross-site sign-in is refused"
    );
    // The right key: a session cookie, HttpOnly and SameSite=Strict.
    let page = b.get("/portal/sign-in").await;
    let pre = hidden(&page.html, "pre");
    let r = b
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", &server.key)],
        )
        .await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/portal/endpoints"))
    );
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set.iter().find(|c| c.starts_with("ef_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(
        !session.contains(&server.key),
        "the key is not in the cookie"
    );
    let page = b.get("/portal/endpoints").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("No endpoints yet"));
    let csrf = hidden(&page.html, "csrf");
    // Signing out needs the token too, then ends the session.
    let r = b.post("/portal/sign-out", &[("csrf", "forged")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        b.get("/portal/endpoints").await.status,
        303,
        "the session ended"
    );
    let mut c = Browser::new(&server.base);
    let csrf2 = c.sign_in(&server.key).await;
    assert_ne!(csrf, csrf2, "each session has its own token");
    let r = c.post("/portal/sign-out", &[("csrf", &csrf2)]).await;
    assert_eq!(r.location.as_deref(), Some("/portal/sign-in"));
    assert_eq!(
        c.get("/portal/endpoints").await.location.as_deref(),
        Some("/portal/sign-in")
    );
}

async fn endpoints_are_created_edited_and_deleted_through_forms_with_csrf(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let mut b = Browser::new(&server.base);
    let csrf = b.sign_in(&server.key).await;
    let form = b.get("/portal/endpoints/new").await;
    assert!(
        form.html.contains(r#"value="appointment.*""#),
        "grouped checkboxes with all of"
    );
    assert!(form.html.contains(r#"value="appointment.created""#));
    assert!(
        form.html.contains(r#"value="appointment.cancelled""#),
        "topics are offered beside the types"
    );
    // Without the CSRF token: refused, nothing created.
    let r = b
        .post(
            "/portal/endpoints",
            &[("url", "http://127.0.0.1:9/x"), ("types", "patient.*")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(api.get("/v1/endpoints").await.body["data"], json!([]));
    // The API's own validation, shown on the form: nothing created.
    let r = b
        .post(
            "/portal/endpoints",
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/x"),
                ("filter", "data.status =="),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.html.contains("filter:"), "{}", r.html);
    assert_eq!(api.get("/v1/endpoints").await.body["data"], json!([]));
    // The live check uses the same compiler.
    let r = b
        .post(
            "/portal/check-filter",
            &[("csrf", &csrf), ("filter", "data.status ==")],
        )
        .await;
    let check: Value = serde_json::from_str(&r.html).unwrap();
    assert_eq!(check["ok"], false);
    let r = b
        .post(
            "/portal/check-filter",
            &[("csrf", &csrf), ("filter", "data.status == 'booked'")],
        )
        .await;
    assert_eq!(serde_json::from_str::<Value>(&r.html).unwrap()["ok"], true);
    // Created by ticking types (a ticked "all of" covers its group).
    let r = b
        .post(
            "/portal/endpoints",
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("description", "Front desk"),
                ("types", "appointment.created"),
                ("types", "appointment.cancelled"),
                ("types", "patient.*"),
                ("types", "patient.created"),
                ("payload", "thin"),
                ("ordering", "resource"),
                ("rate_limit", "5"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    let location = r.location.unwrap();
    assert!(location.contains("notice=created"), "{location}");
    let eps = api.get("/v1/endpoints").await.body["data"].clone();
    let ep = &eps[0];
    assert_eq!(
        ep["eventTypes"],
        json!(["appointment.created", "appointment.cancelled", "patient.*"])
    );
    assert_eq!(ep["payload"], "thin");
    assert_eq!(ep["ordering"], "resource");
    assert_eq!(ep["rateLimit"], 5);
    let id = ep["id"].as_str().unwrap();
    let page = b.get(&location).await;
    assert!(page.html.contains("whsec_"), "the new secret is shown");
    assert!(page.html.contains("Endpoint created."));
    // Edited.
    let edit = b.get(&format!("/portal/endpoints/{id}/edit")).await;
    assert!(
        edit.html
            .contains(r#"value="patient.*" data-all="patient" checked"#),
        "{}",
        edit.html
    );
    let r = b
        .post(
            &format!("/portal/endpoints/{id}"),
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook2"),
                ("types", "encounter.updated"),
                ("filter", "data.status == 'finished'"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let ep = api.get(&format!("/v1/endpoints/{id}")).await.body;
    assert_eq!(ep["url"], "http://127.0.0.1:9/hook2");
    assert_eq!(ep["eventTypes"], json!(["encounter.updated"]));
    assert_eq!(ep["filter"], "data.status == 'finished'");
    assert_eq!(ep["rateLimit"], Value::Null);
    // Deleted after a confirmation page.
    let confirm = b.get(&format!("/portal/endpoints/{id}/delete")).await;
    assert!(confirm.html.contains("Delete endpoint?"));
    assert_eq!(
        b.post(&format!("/portal/endpoints/{id}/delete"), &[])
            .await
            .status,
        403
    );
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        r.location.as_deref(),
        Some("/portal/endpoints?notice=deleted")
    );
    assert_eq!(api.get(&format!("/v1/endpoints/{id}")).await.status, 404);
}

async fn an_endpoint_page_shows_deliveries_attempts_and_its_actions_work(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let mut b = Browser::new(&server.base);
    let csrf = b.sign_in(&server.key).await;
    let r = b
        .post(
            "/portal/endpoints",
            &[
                ("csrf", &csrf),
                ("url", &rx.url("/hook")),
                ("types", "patient.created"),
            ],
        )
        .await;
    let id = api.get("/v1/endpoints").await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(r.location.unwrap().contains(&id));
    let old_secret = api.get(&format!("/v1/endpoints/{id}/secret")).await.body["secret"].clone();
    api.patient().await;
    rx.wait_for(1, Duration::from_secs(20)).await;
    let page = b
        .wait_page(&format!("/portal/endpoints/{id}"), "badge succeeded")
        .await;
    assert!(page.contains("patient.created"));
    assert!(
        page.contains(r#"<span class="code">200</span>"#),
        "the attempt with its status"
    );
    assert!(page.contains("<svg class=\"chart\""), "the 24-hour chart");
    assert!(
        page.contains("1 succeeded, 0 failed"),
        "an attempt of this very second counts"
    );
    assert!(page.contains("100 %"), "success rate");
    // Rotate: a new secret, the old one listed as still signing.
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/rotate"),
            &[("csrf", &csrf)],
        )
        .await;
    let page = b.get(&r.location.unwrap()).await;
    let new_secret = api.get(&format!("/v1/endpoints/{id}/secret")).await.body["secret"].clone();
    assert_ne!(new_secret, old_secret);
    let text = unescaped(&page.html);
    assert!(text.contains(new_secret.as_str().unwrap()));
    assert!(
        text.contains(old_secret.as_str().unwrap()),
        "the old one still signs"
    );
    // Test send, retry, replay, disable and enable.
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/test"),
            &[("csrf", &csrf), ("type", "patient.created")],
        )
        .await;
    assert!(
        r.location
            .as_deref()
            .unwrap()
            .contains("notice=sent&code=200"),
        "{:?}",
        r.location
    );
    let delivery = api
        .get(&format!("/v1/endpoints/{id}/deliveries"))
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = rx.count();
    let r = b
        .post(
            &format!("/portal/deliveries/{delivery}/retry"),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(r.location.unwrap().contains("notice=retried"));
    rx.wait_for(before + 1, Duration::from_secs(20)).await;
    // With no starting point, the portal asks for one and queues nothing.
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/replay"),
            &[("csrf", &csrf), ("after", ""), ("since", "")],
        )
        .await;
    let location = r.location.unwrap();
    assert!(location.contains("notice=replay-start"), "{location}");
    assert!(
        b.get(&location)
            .await
            .html
            .contains("Choose where the replay starts")
    );
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/replay"),
            &[("csrf", &csrf), ("after", "0")],
        )
        .await;
    let location = r.location.unwrap();
    assert!(location.contains("notice=replayed&n=1"), "{location}");
    assert!(
        b.get(&location)
            .await
            .html
            .contains("1 events queued again.")
    );
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/state"),
            &[("csrf", &csrf), ("disabled", "true")],
        )
        .await;
    assert!(r.location.unwrap().contains("notice=disabled"));
    assert_eq!(
        api.get(&format!("/v1/endpoints/{id}")).await.body["disabled"],
        true
    );
    assert!(
        b.get("/portal/endpoints")
            .await
            .html
            .contains("badge disabled")
    );
    b.post(
        &format!("/portal/endpoints/{id}/state"),
        &[("csrf", &csrf), ("disabled", "false")],
    )
    .await;
    assert_eq!(
        api.get(&format!("/v1/endpoints/{id}")).await.body["disabled"],
        false
    );
}

async fn events_and_automations_pages_show_the_tenants_own_data_only(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let other = server.new_tenant("other-clinic").await;
    let rx = Receiver::start().await;
    api.post(
        "/v1/endpoints",
        json!({"url": rx.url("/"), "eventTypes": ["patient.*"]}),
    )
    .await;
    let mine = api.patient().await;
    let theirs = other.patient().await;
    rx.wait_for(1, Duration::from_secs(20)).await;
    let mut b = Browser::new(&server.base);
    b.sign_in(&server.key).await;
    let page = b.get("/portal/events").await;
    assert!(page.html.contains(&mine));
    assert!(
        !page.html.contains(&theirs),
        "another tenant's events never show"
    );
    let page = b.get("/portal/events?types=patient.created").await;
    assert!(page.html.contains("patient.created"));
    let event = api.get("/v1/events").await.body["data"][0].clone();
    let eid = event["id"].as_str().unwrap();
    let page = b
        .wait_page(&format!("/portal/events/{eid}"), "badge succeeded")
        .await;
    assert!(
        page.contains("&quot;type&quot;: &quot;patient.created&quot;"),
        "the envelope, formatted and escaped"
    );
    assert!(
        page.contains(&format!("127.0.0.1:{}", rx.port())),
        "the endpoint that received it"
    );
    // Another tenant's event or endpoint: not found.
    let their_event = other.get("/v1/events").await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        b.get(&format!("/portal/events/{their_event}")).await.status,
        404
    );
    let their_ep = other
        .post("/v1/endpoints", json!({"url": rx.url("/x")}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        b.get(&format!("/portal/endpoints/{their_ep}")).await.status,
        404
    );
    let page = b.get(&format!("/portal/events?record={mine}")).await;
    assert!(page.html.contains(&mine));
    let page = b.get("/portal/automations").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("Pending timers"));
    // Markup from a record is escaped, never run.
    api.post(
        "/v1/patients",
        json!({"firstName": "<script>alert(1)</script>", "lastName": "X"}),
    )
    .await;
    let e = api.get("/v1/events?types=patient.created").await.body["data"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = b.get(&format!("/portal/events/{e}")).await;
    assert!(!page.html.contains("<script>alert(1)"));
    assert!(page.html.contains("&lt;script&gt;"));
}

async fn failed_sign_ins_count_with_failed_api_keys_and_the_31st_is_429(backend: Backend) {
    let server = backend.spawn().await;
    let mut browser = Browser::new(&server.base);
    let page = browser.get("/portal/sign-in").await;
    // Each answer is a new form with a new token.
    let mut pre = hidden(&page.html, "pre");
    for i in 0..29 {
        let key = format!("efk_guess-{i}");
        let r = browser
            .post("/portal/sign-in", &[("pre", &pre), ("api_key", &key)])
            .await;
        assert_eq!(r.status, 401, "{}", r.html);
        pre = hidden(&r.html, "pre");
    }
    // One more through the API: the same count.
    let r = eventflow_testkit::Api {
        key: Some("efk_guess-api".into()),
        ..server.api()
    }
    .get("/v1/patients")
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = browser
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", "efk_guess-31")],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.html);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.html.contains("Too many failed sign-ins"), "{}", r.html);
    let pre = hidden(&r.html, "pre");
    // Even the right key waits: it is not known to the server yet.
    let r = browser
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", &server.key)],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.html);
}

/// README, "Keys and scopes": signing in needs `endpoints:read`; a read-only
/// key sees no button that changes anything and no page it may not read;
/// a sign-in is in the audit log; revoking the key ends its sessions.
async fn the_portal_offers_only_what_the_key_may_do_and_ends_with_its_key(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .post("/v1/endpoints", json!({"url": rx.url("/hook")}))
        .await
        .id();

    // A key the portal cannot use.
    let records = server.scoped(&["records:read"]).await;
    let mut b = Browser::new(&server.base);
    let page = b.get("/portal/sign-in").await;
    let pre = hidden(&page.html, "pre");
    let r = b
        .post(
            "/portal/sign-in",
            &[("pre", &pre), ("api_key", records.key.as_deref().unwrap())],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.html);
    assert!(unescaped(&r.html).contains("endpoints:read"), "{}", r.html);

    // A read-only key: endpoints and deliveries, no actions, no events page.
    let reader = server.scoped(&["endpoints:read"]).await;
    let reader_key = reader.key.clone().unwrap();
    let reader_id = api.get("/v1/api-keys").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        // A key without a prefix (the bootstrap key) matches none: a
        // secret may well start with "-".
        .find(|k| {
            k["prefix"]
                .as_str()
                .is_some_and(|p| reader_key[4..].starts_with(p))
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = Browser::new(&server.base);
    let csrf = b.sign_in(&reader_key).await;
    let list = b.get("/portal/endpoints").await.html;
    assert!(!list.contains("/portal/endpoints/new"), "{list}");
    assert!(!list.contains("href=\"/portal/events\""), "{list}");
    assert!(!list.contains("href=\"/portal/automations\""), "{list}");
    let page = b.get(&format!("/portal/endpoints/{ep}")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    for action in [
        "/edit", "/state", "/delete", "/rotate", "/test", "/replay", "reveal=1",
    ] {
        assert!(
            !page.html.contains(action),
            "{action} offered: {}",
            page.html
        );
    }
    // The API refuses the action anyway.
    let r = b
        .post(
            &format!("/portal/endpoints/{ep}/rotate"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.html);
    assert!(unescaped(&r.html).contains("endpoints:write"), "{}", r.html);
    // The sign-in is in the audit log.
    let log = api.get("/v1/audit-log").await;
    let signed_in = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "portal.sign-in" && e["keyId"] == reader_id.as_str());
    assert!(signed_in, "{}", log.body);

    // A key with endpoints:write is offered the actions.
    let mut w = Browser::new(&server.base);
    w.sign_in(
        server
            .scoped(&["endpoints:write"])
            .await
            .key
            .as_deref()
            .unwrap(),
    )
    .await;
    let page = w.get(&format!("/portal/endpoints/{ep}")).await;
    assert!(
        page.html
            .contains(&format!("/portal/endpoints/{ep}/rotate")),
        "{}",
        page.html
    );

    // Revoked: the session ends at its next page.
    let r = api.delete(&format!("/v1/api-keys/{reader_id}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let page = b.get("/portal/endpoints").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/portal/sign-in"));
}

async fn an_organisation_switches_between_its_clinics_and_the_network(backend: Backend) {
    let server = backend.spawn().await;
    let (org, _) = server.new_organisation("North network").await;
    let mut clinics = Vec::new();
    for name in ["North A", "North B"] {
        let r = org.post("/v1/clinics", json!({ "name": name })).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let key = org.with_key(r.body["apiKey"].as_str().unwrap());
        let patient = key.patient().await;
        clinics.push((r.id(), patient));
    }
    let mut b = Browser::new(&server.base);
    let csrf = b.sign_in(org.key.as_deref().unwrap()).await;
    // The network view: both clinics' events, and a switch naming each.
    let page = b.get("/portal/events").await;
    assert_eq!(page.status, 200, "{}", page.html);
    for (id, patient) in &clinics {
        assert!(page.html.contains(patient.as_str()), "{}", page.html);
        assert!(
            page.html.contains(&format!(r#"value="{id}""#)),
            "{}",
            page.html
        );
    }
    assert!(page.html.contains("North A") && page.html.contains("The whole network"));
    // One clinic: its events only.
    let (a, a_patient) = &clinics[0];
    let r = b
        .post("/portal/clinic", &[("csrf", &csrf), ("clinic", a)])
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    let page = b.get("/portal/events").await;
    assert!(page.html.contains(a_patient.as_str()), "{}", page.html);
    assert!(!page.html.contains(clinics[1].1.as_str()), "{}", page.html);
    assert!(
        page.html.contains(&format!(r#"value="{a}" selected"#)),
        "{}",
        page.html
    );
    // Not a member: refused; without the token: refused.
    let r = b
        .post("/portal/clinic", &[("csrf", &csrf), ("clinic", "ten_nope")])
        .await;
    assert_eq!(r.status, 404);
    let r = b.post("/portal/clinic", &[("clinic", "")]).await;
    assert_eq!(r.status, 403);
    // Back to the network.
    let r = b
        .post("/portal/clinic", &[("csrf", &csrf), ("clinic", "")])
        .await;
    assert_eq!(r.status, 303);
    let page = b.get("/portal/events").await;
    assert!(page.html.contains(clinics[1].1.as_str()), "{}", page.html);
    // A clinic's key has no switch.
    let mut c = Browser::new(&server.base);
    c.sign_in(&server.key).await;
    let page = c.get("/portal/endpoints").await;
    assert!(!page.html.contains("/portal/clinic"), "{}", page.html);
}

async fn the_portal_shows_verification_recipients_and_a_patients_disclosures(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    // Not answering challenges yet.
    rx.ignore_challenges();
    rx.answer(eventflow_testkit::Answer::Status(500));
    let mut b = Browser::new(&server.base);
    let csrf = b.sign_in(&server.key).await;
    let r = b
        .post(
            "/portal/endpoints",
            &[
                ("csrf", &csrf),
                ("url", &rx.url("/hook")),
                ("types", "patient.created"),
                ("recipient", "Acme Labs"),
                ("purpose", "other"),
                ("purpose_text", "a research registry"),
                ("owner", "Acme"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    let ep = api.get("/v1/endpoints").await.body["data"][0].clone();
    let id = ep["id"].as_str().unwrap().to_string();
    assert_eq!(ep["recipient"], "Acme Labs");
    assert_eq!(ep["purpose"], "other");
    assert_eq!(ep["purposeText"], "a research registry");
    assert_eq!(ep["owner"], "Acme");
    let page = b
        .wait_page(
            &format!("/portal/endpoints/{id}"),
            "Last answer: answered 500",
        )
        .await;
    let text = unescaped(&page);
    assert!(text.contains("Deliveries wait until the endpoint answers its challenge."));
    assert!(text.contains("Acme Labs"));
    assert!(text.contains("other: a research registry"));
    // The edit form shows the recipient as given, and saving keeps it.
    let form = b.get(&format!("/portal/endpoints/{id}/edit")).await;
    assert!(unescaped(&form.html).contains(r#"value="Acme Labs""#));
    // Verify again, now that the receiver answers.
    rx.answer(eventflow_testkit::Answer::Status(200));
    rx.answer_challenges();
    let r = b
        .post(
            &format!("/portal/endpoints/{id}/verify"),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(
        r.location.as_deref().unwrap().contains("notice=verifying"),
        "{:?}",
        r.location
    );
    b.wait_page(&format!("/portal/endpoints/{id}"), ">verified</span>")
        .await;
    // A patient's data goes out; the accounting shows it.
    let patient = api.patient().await;
    let _ = crate::helpers::wait_for_disclosure(&api, &patient, &id).await;
    let page = b
        .get(&format!("/portal/disclosures?patient={patient}"))
        .await;
    assert_eq!(page.status, 200);
    let text = unescaped(&page.html);
    assert!(text.contains("Accounting of disclosures"));
    assert!(text.contains("Acme Labs"));
    assert!(text.contains("other: a research registry"));
    assert!(text.contains("patient (patient.created): "));
    let csv = b
        .get(&format!("/portal/disclosures.csv?patient={patient}"))
        .await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"disclosure-accounting-pat_")
    );
    assert!(
        csv.html
            .starts_with("date,recipient,origin,description,purpose")
    );
    assert!(csv.html.contains("Acme Labs"));
    // A key without audit:read is offered no disclosures page.
    let (plain, _) = {
        let r = api
            .post(
                "/v1/api-keys",
                serde_json::json!({"name": "portal", "scopes": ["endpoints:read"]}),
            )
            .await;
        (r.body["key"].as_str().unwrap().to_string(), ())
    };
    let mut other = Browser::new(&server.base);
    other.sign_in(&plain).await;
    let home = other.get("/portal/endpoints").await;
    assert!(!home.html.contains("/portal/disclosures"));
    let page = other
        .get(&format!("/portal/disclosures?patient={patient}"))
        .await;
    assert_eq!(page.status, 403);
}

/// Opens a portal link in a fresh browser and presses Continue.
async fn use_link(server: &eventflow_testkit::TestServer, url: &str) -> (Browser, Page) {
    let mut b = Browser::new(&server.base);
    let path = &url[url.find("/portal/").unwrap()..];
    let page = b.get(path).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let token = hidden(&page.html, "token");
    let pre = hidden(&page.html, "pre");
    let r = b
        .post("/portal/link", &[("token", &token), ("pre", &pre)])
        .await;
    (b, r)
}

async fn a_vendor_link_signs_in_once_to_its_owners_endpoints_only(backend: Backend) {
    let start: jiff::Timestamp = "2026-06-01T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let rx = Receiver::start().await;
    let acme = api
        .create_endpoint(serde_json::json!({"url": rx.url("/acme"), "owner": "Acme"}))
        .await;
    let other = api
        .create_endpoint(serde_json::json!({"url": rx.url("/other"), "owner": "Other"}))
        .await;
    let own = api
        .create_endpoint(serde_json::json!({"url": rx.url("/own")}))
        .await;
    // Bad requests, and who may ask.
    for (body, field) in [
        (serde_json::json!({}), "owner"),
        (serde_json::json!({"owner": ""}), "owner"),
        (
            serde_json::json!({"owner": "Acme", "expiresInSeconds": 10}),
            "expiresInSeconds",
        ),
        (
            serde_json::json!({"owner": "Acme", "readOnly": "no"}),
            "readOnly",
        ),
        (
            serde_json::json!({"owner": "Acme", "scopes": ["*"]}),
            "scopes",
        ),
    ] {
        let r = api.post("/v1/portal-links", body).await;
        crate::helpers::assert_error(&r, 422, "validation_error", Some(field));
    }
    let reader = server.scoped(&["endpoints:read"]).await;
    let r = reader
        .post("/v1/portal-links", serde_json::json!({"owner": "Acme"}))
        .await;
    crate::helpers::assert_error(&r, 403, "forbidden", None);
    // Made by a key of its own, to show the session ends with it.
    let maker = server
        .scoped(&["endpoints:write", "endpoints:read", "patients:read"])
        .await;
    let link = maker
        .post("/v1/portal-links", serde_json::json!({"owner": "Acme"}))
        .await;
    assert_eq!(link.status, 201, "{}", link.body);
    assert_eq!(link.body["owner"], "Acme");
    assert_eq!(link.body["readOnly"], false);
    assert_eq!(link.body["expiresAt"], "2026-06-01T10:00:00.000Z");
    let url = link.body["url"].as_str().unwrap().to_string();
    assert!(url.contains("/portal/link/"), "{url}");
    let (mut b, r) = use_link(&server, &url).await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(r.location.as_deref(), Some("/portal/endpoints"));
    let list = b.get("/portal/endpoints").await;
    let text = unescaped(&list.html);
    assert!(
        text.contains(acme["id"].as_str().unwrap()),
        "its owner's endpoint"
    );
    assert!(text.contains("Acme's endpoints"));
    for hidden_ep in [&other, &own] {
        assert!(!text.contains(hidden_ep["id"].as_str().unwrap()), "{text}");
        let page = b
            .get(&format!(
                "/portal/endpoints/{}",
                hidden_ep["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(page.status, 404, "another owner's endpoint");
    }
    // Nothing but endpoints: no events, no automations, no disclosures.
    assert!(!text.contains("/portal/events"));
    assert_eq!(b.get("/portal/events").await.status, 403);
    assert_eq!(b.get("/portal/disclosures?patient=pat_1").await.status, 403);
    // What it creates is its owner's.
    let page = b.get("/portal/endpoints/new").await;
    let csrf = hidden(&page.html, "csrf");
    let r = b
        .post(
            "/portal/endpoints",
            &[
                ("csrf", &csrf),
                ("url", &rx.url("/acme2")),
                ("types", "patient.created"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    let made = api.get("/v1/endpoints").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == rx.url("/acme2").as_str())
        .cloned()
        .unwrap();
    assert_eq!(made["owner"], "Acme");
    // Who receives the data and why is the clinic's to say.
    let page = b
        .get(&format!(
            "/portal/endpoints/{}/edit",
            made["id"].as_str().unwrap()
        ))
        .await;
    assert!(!page.html.contains("name=\"purpose\""), "no purpose field");
    assert_eq!(made["recipient"], "Acme", "its owner receives");
    let r = b
        .post(
            &format!("/portal/endpoints/{}", made["id"].as_str().unwrap()),
            &[
                ("csrf", &csrf),
                ("url", &rx.url("/acme2")),
                ("types", "patient.created"),
                ("purpose", "treatment"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.html);
    assert!(unescaped(&r.html).contains("purpose: is the clinic's to set"));
    // Once only.
    let (_, again) = use_link(&server, &url).await;
    assert_eq!(again.status, 410, "{}", again.html);
    // Making and using it are audit entries.
    let log = api.get("/v1/audit-log?limit=1000").await.body;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("portal-link."))
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions.contains(&"portal-link.create") && actions.contains(&"portal-link.use"));
    // The session ends with the key that made the link.
    let maker_key = crate::helpers::principal_of(&server, &maker).await.key_id;
    assert_eq!(
        api.delete(&format!("/v1/api-keys/{maker_key}"))
            .await
            .status,
        204
    );
    let gone = b.get("/portal/endpoints").await;
    assert_eq!(gone.location.as_deref(), Some("/portal/sign-in"));
    // A read-only link looks, and changes nothing.
    let link = api
        .post(
            "/v1/portal-links",
            serde_json::json!({"owner": "Acme", "readOnly": true}),
        )
        .await;
    let (mut ro, r) = use_link(&server, link.body["url"].as_str().unwrap()).await;
    assert_eq!(r.status, 303);
    let page = ro
        .get(&format!(
            "/portal/endpoints/{}",
            acme["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page.status, 200);
    assert!(!page.html.contains("/edit\""), "no Edit button");
    let csrf = hidden(&page.html, "csrf");
    let r = ro
        .post(
            &format!("/portal/endpoints/{}/state", acme["id"].as_str().unwrap()),
            &[("csrf", &csrf), ("disabled", "true")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.html);
    assert_eq!(
        api.get(&format!("/v1/endpoints/{}", acme["id"].as_str().unwrap()))
            .await
            .body["disabled"],
        false
    );
    // An expired link signs no one in.
    let link = api
        .post(
            "/v1/portal-links",
            serde_json::json!({"owner": "Acme", "expiresInSeconds": 60}),
        )
        .await;
    clock.advance(jiff::SignedDuration::from_secs(61));
    let (_, late) = use_link(&server, link.body["url"].as_str().unwrap()).await;
    assert_eq!(late.status, 410);
}
