//! Operations on the metadata database.

use std::str::FromStr;
use std::time::Duration;

use rand::RngCore;
use sea_orm::sea_query::{IndexCreateStatement, OnConflict};
use sea_orm::{
    ActiveValue::Set, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, Schema, Statement,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::MetaError;
use crate::entity::{client, project, project_limit, project_setting, salt, share};

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Ingest only.
    Write,
    /// Insights and export.
    Read,
    /// Everything.
    Root,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Write => "write",
            ClientKind::Read => "read",
            ClientKind::Root => "root",
        }
    }
    pub fn can_write(self) -> bool {
        matches!(self, ClientKind::Write | ClientKind::Root)
    }
    pub fn can_read(self) -> bool {
        matches!(self, ClientKind::Read | ClientKind::Root)
    }
}

impl FromStr for ClientKind {
    type Err = MetaError;
    fn from_str(s: &str) -> Result<Self, MetaError> {
        match s {
            "write" => Ok(ClientKind::Write),
            "read" => Ok(ClientKind::Read),
            "root" => Ok(ClientKind::Root),
            other => Err(MetaError::Invalid {
                field: "client type",
                message: format!("{other:?} is not one of write, read, root"),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub allowed_origins: Vec<String>,
    pub rate_limits: RateLimits,
}

/// Ingest requests per second a project allows; 0 leaves the edge's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimits {
    pub per_client: u32,
    pub per_ip: u32,
}

impl Project {
    /// Whether a browser on `origin` may send events with only a client id.
    /// `*` allows every origin.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// A client as the edge needs it: its secret stays hashed.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub id: String,
    pub project: Project,
    pub kind: ClientKind,
    secret_hash: [u8; 32],
}

impl ClientRecord {
    /// Constant-time check of a presented secret.
    pub fn verify_secret(&self, secret: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        presented.ct_eq(&self.secret_hash).into()
    }
}

/// A freshly created client with its secret, which is not stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewClient {
    pub id: String,
    pub secret: String,
    pub project_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The metadata database.
#[derive(Clone)]
pub struct Meta {
    pub(crate) db: DatabaseConnection,
}

/// Longest a query waits for a connection, including connecting anew;
/// past it the database counts as unavailable (the request gets a 503
/// instead of hanging while the server is down).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

impl Meta {
    pub async fn connect(url: &str) -> Result<Self, MetaError> {
        let mut options = ConnectOptions::new(url);
        options.acquire_timeout(ACQUIRE_TIMEOUT);
        Ok(Meta {
            db: Database::connect(options).await?,
        })
    }

    /// Creates the tables and indexes that do not exist yet; safe to run at
    /// every start.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        let backend = self.db.get_database_backend();
        let schema = Schema::new(backend);
        for mut statement in [
            schema.create_table_from_entity(project::Entity),
            schema.create_table_from_entity(client::Entity),
            schema.create_table_from_entity(salt::Entity),
            schema.create_table_from_entity(project_setting::Entity),
            schema.create_table_from_entity(project_limit::Entity),
            schema.create_table_from_entity(share::Entity),
        ] {
            self.db.execute(statement.if_not_exists()).await?;
        }
        for index in schema
            .create_index_from_entity(client::Entity)
            .into_iter()
            .chain(schema.create_index_from_entity(share::Entity))
        {
            self.create_index(backend, index).await?;
        }
        Ok(())
    }

    /// `CREATE INDEX IF NOT EXISTS`, which MySQL lacks: there the index is
    /// looked up in `information_schema` first.
    async fn create_index(
        &self,
        backend: DbBackend,
        mut index: IndexCreateStatement,
    ) -> Result<(), MetaError> {
        if backend == DbBackend::MySql {
            let name = index.get_index_spec().get_name().unwrap_or_default();
            let exists = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT 1 FROM information_schema.statistics \
                     WHERE table_schema = DATABASE() AND index_name = ? LIMIT 1",
                    [name.into()],
                ))
                .await?
                .is_some();
            if exists {
                return Ok(());
            }
        } else {
            index.if_not_exists();
        }
        self.db.execute(&index).await?;
        Ok(())
    }

    pub async fn create_project(
        &self,
        name: &str,
        origins: &[String],
    ) -> Result<Project, MetaError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(MetaError::Invalid {
                field: "name",
                message: "must be 1 to 200 characters".into(),
            });
        }
        for origin in origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(MetaError::Invalid {
                    field: "origin",
                    message: format!("{origin:?} is not a URL like https://example.com"),
                });
            }
        }
        let project = Project {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            allowed_origins: origins.to_vec(),
            rate_limits: RateLimits::default(),
        };
        project::Entity::insert(project::ActiveModel {
            id: Set(project.id.clone()),
            name: Set(project.name.clone()),
            allowed_origins: Set(serde_json::to_string(origins).unwrap_or_else(|_| "[]".into())),
            created_at: Set(now_ms()),
        })
        .exec(&self.db)
        .await?;
        Ok(project)
    }

    /// Every project, by name.
    pub async fn projects(&self) -> Result<Vec<Project>, MetaError> {
        use sea_orm::QueryOrder;
        Ok(project::Entity::find()
            .order_by_asc(project::Column::Name)
            .order_by_asc(project::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(project_of)
            .collect())
    }

    pub async fn project(&self, id: &str) -> Result<Option<Project>, MetaError> {
        let Some(model) = project::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let limits = project_limit::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(|l| RateLimits {
                per_client: l.per_client.clamp(0, i64::from(u32::MAX)) as u32,
                per_ip: l.per_ip.clamp(0, i64::from(u32::MAX)) as u32,
            })
            .unwrap_or_default();
        let mut project = project_of(model);
        project.rate_limits = limits;
        Ok(Some(project))
    }

    /// Sets a project's ingest rate limits (0 = the edge's default).
    pub async fn set_rate_limits(
        &self,
        project_id: &str,
        limits: RateLimits,
    ) -> Result<(), MetaError> {
        if self.project(project_id).await?.is_none() {
            return Err(MetaError::NoSuchProject(project_id.to_owned()));
        }
        project_limit::Entity::insert(project_limit::ActiveModel {
            project_id: Set(project_id.to_owned()),
            per_client: Set(i64::from(limits.per_client)),
            per_ip: Set(i64::from(limits.per_ip)),
        })
        .on_conflict(
            OnConflict::column(project_limit::Column::ProjectId)
                .update_columns([
                    project_limit::Column::PerClient,
                    project_limit::Column::PerIp,
                ])
                .to_owned(),
        )
        .exec(&self.db)
        .await?;
        Ok(())
    }

    pub async fn create_client(
        &self,
        project_id: &str,
        kind: ClientKind,
    ) -> Result<NewClient, MetaError> {
        if self.project(project_id).await?.is_none() {
            return Err(MetaError::NoSuchProject(project_id.to_owned()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let secret = format!("sec_{}", random_hex(32));
        client::Entity::insert(client::ActiveModel {
            id: Set(id.clone()),
            project_id: Set(project_id.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            secret_hash: Set(hex::encode(Sha256::digest(secret.as_bytes()))),
            created_at: Set(now_ms()),
        })
        .exec(&self.db)
        .await?;
        Ok(NewClient {
            id,
            secret,
            project_id: project_id.to_owned(),
            kind: kind.as_str(),
        })
    }

    /// Deletes a client; true when it existed. Edges that cached it refuse
    /// it once their cache entry expires (`edge.auth_cache_ttl_ms`).
    pub async fn revoke_client(&self, id: &str) -> Result<bool, MetaError> {
        let result = client::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// A client with its project, or `None` when the id is unknown.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRecord>, MetaError> {
        let Some(row) = client::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(project) = self.project(&row.project_id).await? else {
            return Ok(None);
        };
        let mut secret_hash = [0u8; 32];
        hex::decode_to_slice(&row.secret_hash, &mut secret_hash).map_err(|e| {
            MetaError::Invalid {
                field: "secret_hash",
                message: e.to_string(),
            }
        })?;
        Ok(Some(ClientRecord {
            id: row.id,
            project,
            kind: row.kind.parse()?,
            secret_hash,
        }))
    }

    /// Whether the project drops crawler traffic (default: keep it, tagged `bot`).
    pub async fn drop_bots(&self, project_id: &str) -> Result<bool, MetaError> {
        Ok(project_setting::Entity::find_by_id(project_id.to_owned())
            .one(&self.db)
            .await?
            .is_some_and(|s| s.drop_bots))
    }

    /// Sets whether the project drops crawler traffic.
    pub async fn set_drop_bots(&self, project_id: &str, drop_bots: bool) -> Result<(), MetaError> {
        if self.project(project_id).await?.is_none() {
            return Err(MetaError::NoSuchProject(project_id.to_owned()));
        }
        project_setting::Entity::insert(project_setting::ActiveModel {
            project_id: Set(project_id.to_owned()),
            drop_bots: Set(drop_bots),
        })
        .on_conflict(
            OnConflict::column(project_setting::Column::ProjectId)
                .update_column(project_setting::Column::DropBots)
                .to_owned(),
        )
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The salt of `day` (`YYYY-MM-DD`), created on first use. Concurrent
    /// first uses agree: the first insert wins and everyone reads it back.
    pub async fn daily_salt(&self, day: &str) -> Result<String, MetaError> {
        salt::Entity::insert(salt::ActiveModel {
            day: Set(day.to_owned()),
            salt: Set(random_hex(32)),
        })
        .on_conflict(
            OnConflict::column(salt::Column::Day)
                .do_nothing_on([salt::Column::Day])
                .to_owned(),
        )
        .try_insert()
        .exec(&self.db)
        .await?;
        salt::Entity::find_by_id(day.to_owned())
            .one(&self.db)
            .await?
            .map(|m| m.salt)
            .ok_or_else(|| MetaError::Invalid {
                field: "salt",
                message: format!("salt of {day} vanished"),
            })
    }
}

fn project_of(m: project::Model) -> Project {
    Project {
        id: m.id,
        name: m.name,
        allowed_origins: serde_json::from_str(&m.allowed_origins).unwrap_or_default(),
        rate_limits: RateLimits::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated database of every kind this run offers, each of its own:
    /// SQLite always; MySQL/MariaDB and PostgreSQL when `scripts/test.sh`
    /// started them (`TEST_MYSQL_URL`, `TEST_POSTGRES_URL`).
    async fn metas(test: &str) -> Vec<(&'static str, Meta)> {
        let mut all = vec![("sqlite", Meta::connect("sqlite::memory:").await.unwrap())];
        let name = format!("meta_{test}_{}", std::process::id());
        let urls =
            crate::testing::scratch_databases(test, &name, |var| std::env::var(var).ok()).await;
        for (kind, url) in urls {
            all.push((kind, Meta::connect(&url).await.unwrap()));
        }
        for (_, meta) in &all {
            meta.migrate().await.unwrap();
        }
        all
    }

    #[tokio::test]
    async fn clients_verify_only_their_own_secret() {
        for (kind, meta) in metas("clients").await {
            let project = meta
                .create_project("Shop", &["https://shop.example".into()])
                .await
                .unwrap();
            let new = meta
                .create_client(&project.id, ClientKind::Write)
                .await
                .unwrap();
            let record = meta.client(&new.id).await.unwrap().unwrap();
            assert_eq!(record.kind, ClientKind::Write, "{kind}");
            assert_eq!(record.project, project, "{kind}");
            assert!(record.verify_secret(&new.secret), "{kind}");
            assert!(!record.verify_secret("sec_wrong"));
            assert!(!record.verify_secret(""));
            assert!(meta.client("nope").await.unwrap().is_none(), "{kind}");
            assert!(meta.revoke_client(&new.id).await.unwrap(), "{kind}");
            assert!(meta.client(&new.id).await.unwrap().is_none(), "{kind}");
            assert!(!meta.revoke_client(&new.id).await.unwrap(), "{kind}");
            assert!(record.project.allows_origin("https://shop.example/"));
            assert!(!record.project.allows_origin("https://evil.example"));
        }
    }

    #[tokio::test]
    async fn clients_need_an_existing_project_and_valid_kind() {
        for (kind, meta) in metas("kinds").await {
            assert!(
                matches!(
                    meta.create_client("missing", ClientKind::Read).await,
                    Err(MetaError::NoSuchProject(_))
                ),
                "{kind}"
            );
            assert!("admin".parse::<ClientKind>().is_err());
            assert!(meta.create_project("", &[]).await.is_err());
            assert!(
                meta.create_project("x", &["not a url".into()])
                    .await
                    .is_err()
            );
        }
    }

    #[tokio::test]
    async fn long_names_and_origin_lists_are_stored_whole() {
        for (kind, meta) in metas("long").await {
            // 200 characters of 2 bytes each would pass a byte limit of 200
            // only in a longer column; a list of many origins outgrows any
            // short string column.
            let name = "ü".repeat(100);
            let origins: Vec<String> = (0..40)
                .map(|n| format!("https://shop-{n}.example.com"))
                .collect();
            let project = meta.create_project(&name, &origins).await.unwrap();
            let stored = meta.project(&project.id).await.unwrap().unwrap();
            assert_eq!(stored.name, name, "{kind}");
            assert_eq!(stored.allowed_origins, origins, "{kind}");
        }
    }

    #[tokio::test]
    async fn bot_policy_defaults_to_keep_and_can_be_changed() {
        for (kind, meta) in metas("bots").await {
            let project = meta.create_project("Bots", &[]).await.unwrap();
            assert!(!meta.drop_bots(&project.id).await.unwrap(), "{kind}");
            meta.set_drop_bots(&project.id, true).await.unwrap();
            assert!(meta.drop_bots(&project.id).await.unwrap(), "{kind}");
            meta.set_drop_bots(&project.id, false).await.unwrap();
            assert!(!meta.drop_bots(&project.id).await.unwrap(), "{kind}");
            assert!(meta.set_drop_bots("missing", true).await.is_err());
            for limits in [
                RateLimits {
                    per_client: 5,
                    per_ip: 2,
                },
                RateLimits {
                    per_client: u32::MAX,
                    per_ip: 0,
                },
            ] {
                meta.set_rate_limits(&project.id, limits).await.unwrap();
                assert_eq!(
                    meta.project(&project.id)
                        .await
                        .unwrap()
                        .unwrap()
                        .rate_limits,
                    limits,
                    "{kind}"
                );
            }
        }
    }

    #[tokio::test]
    async fn daily_salt_is_stable_per_day_and_differs_between_days() {
        for (kind, meta) in metas("salts").await {
            let a = meta.daily_salt("2026-01-05").await.unwrap();
            assert_eq!(a, meta.daily_salt("2026-01-05").await.unwrap(), "{kind}");
            assert_ne!(a, meta.daily_salt("2026-01-06").await.unwrap(), "{kind}");
            assert_eq!(a.len(), 64);
            // Concurrent first uses of a day agree on one salt.
            let firsts = concurrent_first_uses(&meta, "2026-02-01").await;
            assert!(
                firsts.windows(2).all(|w| w[0] == w[1]),
                "{kind}: {firsts:?}"
            );
        }
    }

    async fn concurrent_first_uses(meta: &Meta, day: &str) -> Vec<String> {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (meta, day) = (meta.clone(), day.to_owned());
                tokio::spawn(async move { meta.daily_salt(&day).await.unwrap() })
            })
            .collect();
        let mut salts = Vec::new();
        for task in tasks {
            salts.push(task.await.unwrap());
        }
        salts
    }

    #[tokio::test]
    async fn migrations_run_again_without_losing_rows_and_index_client_lookups() {
        for (kind, meta) in metas("migrate").await {
            let project = meta.create_project("Kept", &[]).await.unwrap();
            let client = meta
                .create_client(&project.id, ClientKind::Root)
                .await
                .unwrap();
            meta.migrate().await.unwrap();
            meta.migrate().await.unwrap();
            let record = meta.client(&client.id).await.unwrap().unwrap();
            assert_eq!(record.kind, ClientKind::Root, "{kind}");
            assert_eq!(record.project.id, project.id, "{kind}");
            let backend = meta.db.get_database_backend();
            let sql = match backend {
                DbBackend::Sqlite => {
                    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'idx-clients-project_id'"
                }
                DbBackend::MySql => {
                    "SELECT 1 FROM information_schema.statistics \
                     WHERE table_schema = DATABASE() AND index_name = 'idx-clients-project_id'"
                }
                _ => "SELECT 1 FROM pg_indexes WHERE indexname = 'idx-clients-project_id'",
            };
            let found = meta
                .db
                .query_one_raw(Statement::from_string(backend, sql))
                .await
                .unwrap();
            assert!(found.is_some(), "{kind}: no index on clients.project_id");
        }
    }
}
