//! Start-up against a database it cannot use: a schema newer than this
//! build, an unreachable PostgreSQL, a missing database, an unknown role.
//! Each stops start-up with a message saying what is wrong.

use std::sync::Arc;

use eventflow_server::{Application, Config};
use eventflow_store::SystemClock;
use eventflow_testkit::{Backend, backend_tests};

backend_tests!(a_schema_newer_than_this_build_is_refused);

async fn start(config: Config) -> Result<Application, String> {
    Application::build(config, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())
}

fn config(dir: &std::path::Path, database_url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url: database_url.to_string(),
        ..Config::default()
    }
}

async fn a_schema_newer_than_this_build_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db) = backend.database_url().await;
    // A first start creates the schema.
    let app = start(config(dir.path(), &url)).await.expect("first start");
    drop(app);
    // A later build's migration, as that build would have recorded it.
    const INSERT: &str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                          VALUES (9999, 'from the future', TRUE, X'00', 1)";
    const INSERT_PG: &str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                             VALUES (9999, 'from the future', TRUE, '\\x00'::bytea, 1)";
    match &backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let path = eventflow_server::sqlite_path(dir.path());
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(INSERT).execute(&mut c).await.unwrap();
        }
        Backend::Postgres(_) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(INSERT_PG).execute(&mut c).await.unwrap();
        }
    }
    let err = start(config(dir.path(), &url))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("9999") && err.contains("newer"), "{err}");
}

fn postgres_base(test: &str) -> Option<String> {
    match Backend::postgres(test)? {
        Backend::Postgres(base) => Some(base),
        Backend::Sqlite => None,
    }
}

fn with_database(base: &str, db: &str) -> String {
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{db}")
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error() {
    if postgres_base("startup::unreachable").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let err = start(config(dir.path(), "postgres://postgres@127.0.0.1:1/test"))
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("cannot connect") && err.contains("unreachable"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error() {
    let Some(base) = postgres_base("startup::missing_database") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = start(config(
        dir.path(),
        &with_database(&base, "no_such_eventflow_db"),
    ))
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("cannot connect") && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_credentials_are_a_clear_error_without_the_password() {
    let Some(base) = postgres_base("startup::bad_credentials") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = base.replacen("://", "://no_such_role:hunter2-secret@", 1);
    let url = match url.split_once('@') {
        // The base may have had credentials of its own: keep only the new ones.
        Some((creds, rest)) if rest.contains('@') => {
            format!("{creds}@{}", rest.split_once('@').unwrap().1)
        }
        _ => url,
    };
    let err = start(config(dir.path(), &url))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(
        !err.contains("hunter2-secret"),
        "the password leaked: {err}"
    );
}
