//! API keys (README, "Limits"): the key cache forgets a key removed from the
//! database within `key_cache_ttl_secs`, and a client address that fails
//! authentication `auth_failures_per_minute` times in a minute is held off
//! with a 429 and `Retry-After`. Time is a `ManualClock`, never a sleep.

use eventflow_server::auth;
use eventflow_testkit::{Api, Backend, Options, TestServer, backend_tests};
use jiff::{SignedDuration, Timestamp};

use crate::helpers::assert_error;

backend_tests!(
    a_key_removed_from_the_database_stops_working_after_the_cache_ttl,
    the_31st_bad_key_from_one_address_in_a_minute_is_429_while_a_known_key_works,
);

/// Removes a key's row the way an operator would: straight in the database.
async fn delete_key_row(server: &TestServer, key: &str) {
    use sqlx::Connection;
    let sql = "DELETE FROM api_keys WHERE key_hash = $1";
    let hash = auth::hash_key(key);
    let deleted = match &server.database {
        None => {
            let path = eventflow_server::sqlite_path(server.dir.path());
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(hash)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
        Some(db) => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql)
                .bind(hash)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
    };
    assert_eq!(deleted, 1);
}

fn with_key(api: &Api, key: &str) -> Api {
    Api {
        key: Some(key.to_string()),
        ..api.clone()
    }
}

async fn a_key_removed_from_the_database_stops_working_after_the_cache_ttl(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let b = server.new_tenant("b").await;
    assert_eq!(b.get("/v1/patients").await.status, 200);
    delete_key_row(&server, b.key.as_deref().unwrap()).await;
    // The default key_cache_ttl_secs is 60: at most a minute more.
    clock.advance(SignedDuration::from_secs(61));
    let r = b.get("/v1/patients").await;
    assert_error(&r, 401, "authentication_error", None);
    // The other tenant's key is unaffected.
    assert_eq!(server.api().get("/v1/patients").await.status, 200);
}

async fn the_31st_bad_key_from_one_address_in_a_minute_is_429_while_a_known_key_works(
    backend: Backend,
) {
    let clock = std::sync::Arc::new(eventflow_store::ManualClock::new(Timestamp::now()));
    let server = backend
        .spawn_with(Options {
            clock: Some(clock.clone()),
            configure: Some(Box::new(|c| c.limits.auth_failures_per_minute = 30)),
        })
        .await;
    let api = server.api();
    assert_eq!(api.get("/v1/patients").await.status, 200);
    for i in 0..30 {
        let r = with_key(&api, &format!("efk_wrong-{i}"))
            .get("/v1/patients")
            .await;
        assert_error(&r, 401, "authentication_error", None);
    }
    // The same bad key again, or a new one: both held off, for the rest of
    // the minute.
    for key in ["efk_wrong-0", "efk_wrong-30"] {
        let r = with_key(&api, key).get("/v1/patients").await;
        assert_error(&r, 429, "rate_limited", None);
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    }
    // A key the server already knows is served as before.
    assert_eq!(api.get("/v1/patients").await.status, 200);
    // After the minute, a bad key is a plain 401 again.
    clock.advance(SignedDuration::from_secs(61));
    let r = with_key(&api, "efk_wrong-31").get("/v1/patients").await;
    assert_error(&r, 401, "authentication_error", None);
}
