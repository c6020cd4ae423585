//! Operations on the metadata database.

use std::str::FromStr;

use rand::RngCore;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, Database, DatabaseConnection, EntityTrait, Schema,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::MetaError;
use crate::entity::{client, project, project_limit, project_setting, salt};

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
    db: DatabaseConnection,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

impl Meta {
    pub async fn connect(url: &str) -> Result<Self, MetaError> {
        Ok(Meta {
            db: Database::connect(url).await?,
        })
    }

    /// Creates the tables that do not exist yet; safe to run at every start.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        let backend = self.db.get_database_backend();
        let schema = Schema::new(backend);
        for mut statement in [
            schema.create_table_from_entity(project::Entity),
            schema.create_table_from_entity(client::Entity),
            schema.create_table_from_entity(salt::Entity),
            schema.create_table_from_entity(project_setting::Entity),
            schema.create_table_from_entity(project_limit::Entity),
        ] {
            self.db.execute(statement.if_not_exists()).await?;
        }
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
                .do_nothing()
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

    async fn meta() -> Meta {
        let meta = Meta::connect("sqlite::memory:").await.unwrap();
        meta.migrate().await.unwrap();
        meta.migrate().await.unwrap();
        meta
    }

    #[tokio::test]
    async fn clients_verify_only_their_own_secret() {
        let meta = meta().await;
        let project = meta
            .create_project("Shop", &["https://shop.example".into()])
            .await
            .unwrap();
        let new = meta
            .create_client(&project.id, ClientKind::Write)
            .await
            .unwrap();
        let record = meta.client(&new.id).await.unwrap().unwrap();
        assert_eq!(record.kind, ClientKind::Write);
        assert_eq!(record.project, project);
        assert!(record.verify_secret(&new.secret));
        assert!(!record.verify_secret("sec_wrong"));
        assert!(!record.verify_secret(""));
        assert!(meta.client("nope").await.unwrap().is_none());
        assert!(meta.revoke_client(&new.id).await.unwrap());
        assert!(meta.client(&new.id).await.unwrap().is_none());
        assert!(!meta.revoke_client(&new.id).await.unwrap());
        assert!(record.project.allows_origin("https://shop.example/"));
        assert!(!record.project.allows_origin("https://evil.example"));
    }

    #[tokio::test]
    async fn clients_need_an_existing_project_and_valid_kind() {
        let meta = meta().await;
        assert!(matches!(
            meta.create_client("missing", ClientKind::Read).await,
            Err(MetaError::NoSuchProject(_))
        ));
        assert!("admin".parse::<ClientKind>().is_err());
        assert!(meta.create_project("", &[]).await.is_err());
        assert!(
            meta.create_project("x", &["not a url".into()])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn bot_policy_defaults_to_keep_and_can_be_changed() {
        let meta = meta().await;
        let project = meta.create_project("Bots", &[]).await.unwrap();
        assert!(!meta.drop_bots(&project.id).await.unwrap());
        meta.set_drop_bots(&project.id, true).await.unwrap();
        assert!(meta.drop_bots(&project.id).await.unwrap());
        meta.set_drop_bots(&project.id, false).await.unwrap();
        assert!(!meta.drop_bots(&project.id).await.unwrap());
        assert!(meta.set_drop_bots("missing", true).await.is_err());
        let limits = RateLimits {
            per_client: 5,
            per_ip: 2,
        };
        meta.set_rate_limits(&project.id, limits).await.unwrap();
        assert_eq!(
            meta.project(&project.id)
                .await
                .unwrap()
                .unwrap()
                .rate_limits,
            limits
        );
    }

    #[tokio::test]
    async fn daily_salt_is_stable_per_day_and_differs_between_days() {
        let meta = meta().await;
        let a = meta.daily_salt("2026-01-05").await.unwrap();
        assert_eq!(a, meta.daily_salt("2026-01-05").await.unwrap());
        assert_ne!(a, meta.daily_salt("2026-01-06").await.unwrap());
        assert_eq!(a.len(), 64);
    }
}
