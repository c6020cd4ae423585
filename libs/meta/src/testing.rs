//! Support for tests that run against shared MySQL/MariaDB or PostgreSQL
//! servers: each test creates a database of its own, so tests running in
//! parallel never see each other's rows.

use sea_orm::{ConnectionTrait, Database};

use crate::MetaError;

/// Creates database `name` on the server that `server_url` reaches
/// (`mysql://…` or `postgres://…`) and returns the URL of that database.
/// `name` must be lowercase letters, digits and underscores.
pub async fn scratch_database(server_url: &str, name: &str) -> Result<String, MetaError> {
    let invalid = |message: &str| MetaError::Invalid {
        field: "database name",
        message: message.to_owned(),
    };
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "must be 1 to 63 lowercase letters, digits and underscores",
        ));
    }
    let mut url = url::Url::parse(server_url).map_err(|e| invalid(&e.to_string()))?;
    let server = Database::connect(server_url).await?;
    server
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    server.close().await?;
    url.set_path(name);
    Ok(url.into())
}

/// The servers a test run may offer besides SQLite, and the variables
/// that name them (`scripts/test.sh` sets both).
pub const SERVERS: [(&str, &str); 2] = [
    ("mysql", "TEST_MYSQL_URL"),
    ("postgres", "TEST_POSTGRES_URL"),
];

/// A database `name` of its own on each server of [`SERVERS`] whose URL
/// `server_url` gives (the caller reads its environment), as (kind, URL);
/// a server without a URL is skipped with a message naming `test`.
pub async fn scratch_databases(
    test: &str,
    name: &str,
    server_url: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let mut all = Vec::new();
    for (kind, var) in SERVERS {
        let Some(server) = server_url(var) else {
            eprintln!("{test}: {var} is not set, skipping {kind} (scripts/test.sh sets it)");
            continue;
        };
        let url = scratch_database(&server, name)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot create {name} on {kind}: {e}"));
        all.push((kind, url));
    }
    all
}
