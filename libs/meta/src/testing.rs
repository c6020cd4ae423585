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
