//! Share links: read-only access to one project's insights without client
//! credentials.
//!
//! A link is a public id (in its path; what `share list` and `share revoke`
//! name) and a 256-bit token, shown once at creation and stored as its
//! SHA-256, compared in constant time. A password, when set, is stored as a
//! salted PBKDF2-HMAC-SHA256 hash (it has little entropy, so its hash is
//! slow); whoever presents it gets an unlock key, HMAC-SHA256 keyed by the
//! token over that hash, which the server recomputes cheaply on every
//! request. The key cannot be made from the database alone (the token is
//! not stored) nor from the link alone (the password hash is not shown).

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::entity::share;
use crate::store::{now_ms, random_hex};
use crate::{Meta, MetaError};

/// PBKDF2 rounds of a share password.
const PBKDF2_ROUNDS: u32 = 100_000;
const DAY_MS: i64 = 86_400_000;

/// A share link as created: its token is shown only here.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewShare {
    pub id: String,
    pub token: String,
    pub project_id: String,
    /// The link, relative to the insights API's base URL.
    pub path: String,
    pub password: bool,
    /// Milliseconds since the epoch; `None` = never.
    pub expires_at: Option<i64>,
}

/// A share link as `share list` shows it: no token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShareInfo {
    pub id: String,
    pub project_id: String,
    pub password: bool,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub expired: bool,
}

/// A stored share link, its secrets hashed.
#[derive(Debug, Clone)]
pub struct ShareRecord {
    pub id: String,
    pub project_id: String,
    pub expires_at: Option<i64>,
    token_hash: [u8; 32],
    password_hash: String,
}

impl ShareRecord {
    /// Constant-time check of a presented token.
    pub fn verify_token(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        presented.ct_eq(&self.token_hash).into()
    }

    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// Checks `password` (slow, by design: run it off the async threads);
    /// on success the unlock key for `token`.
    pub fn unlock(&self, token: &str, password: &str) -> Option<String> {
        let mut parts = self.password_hash.split('$');
        let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let rounds: u32 = rounds.parse().ok()?;
        let salt = hex::decode(salt).ok()?;
        let stored = hex::decode(hash).ok()?;
        let derived = pbkdf2(password.as_bytes(), &salt, rounds);
        bool::from(derived.ct_eq(stored.as_slice())).then(|| self.unlock_key(token))
    }

    /// The key that proves the password was given, for this token.
    fn unlock_key(&self, token: &str) -> String {
        hex::encode(hmac(token.as_bytes(), self.password_hash.as_bytes()))
    }

    /// Whether a request may read: the token, and the unlock key when the
    /// link has a password. Constant time in the secrets.
    pub fn admits(&self, token: &str, key: Option<&str>) -> bool {
        if !self.verify_token(token) {
            return false;
        }
        if !self.has_password() {
            return true;
        }
        let expected = self.unlock_key(token);
        key.is_some_and(|k| bool::from(k.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// HMAC-SHA256 with its key's padded blocks hashed once, for many messages.
#[derive(Clone)]
struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    fn new(key: &[u8]) -> Hmac {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.map(|b| b ^ byte);
        Hmac {
            inner: Sha256::new().chain_update(pad(0x36)),
            outer: Sha256::new().chain_update(pad(0x5c)),
        }
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(message).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    Hmac::new(key).mac(message)
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block (RFC 8018).
fn pbkdf2(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let prf = Hmac::new(password);
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = prf.mac(&first);
    let mut out = u;
    for _ in 1..rounds {
        u = prf.mac(&u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

fn hash_password(password: &str) -> String {
    let salt = random_hex(16);
    let salt_bytes = hex::decode(&salt).unwrap_or_default();
    let hash = pbkdf2(password.as_bytes(), &salt_bytes, PBKDF2_ROUNDS);
    format!("pbkdf2-sha256${PBKDF2_ROUNDS}${salt}${}", hex::encode(hash))
}

fn expiry(at: i64) -> Option<i64> {
    (at > 0).then_some(at)
}

impl Meta {
    /// Creates a share link of `project_id`, with a password and an
    /// expiry in days when given.
    pub async fn create_share(
        &self,
        project_id: &str,
        password: Option<&str>,
        expires_days: Option<u32>,
    ) -> Result<NewShare, MetaError> {
        if self.project(project_id).await?.is_none() {
            return Err(MetaError::NoSuchProject(project_id.to_owned()));
        }
        let password = password.filter(|p| !p.is_empty());
        if password.is_some_and(|p| p.len() > 200) {
            return Err(MetaError::Invalid {
                field: "password",
                message: "must be at most 200 bytes".into(),
            });
        }
        let expires_at = match expires_days {
            None => None,
            Some(days @ 1..=3650) => Some(now_ms() + i64::from(days) * DAY_MS),
            Some(_) => {
                return Err(MetaError::Invalid {
                    field: "expires-days",
                    message: "must be 1 to 3650".into(),
                });
            }
        };
        let id = random_hex(8);
        let token = random_hex(32);
        let password_hash = match password {
            Some(p) => {
                let p = p.to_owned();
                tokio::task::spawn_blocking(move || hash_password(&p))
                    .await
                    .map_err(|e| MetaError::Invalid {
                        field: "password",
                        message: format!("hashing failed: {e}"),
                    })?
            }
            None => String::new(),
        };
        share::Entity::insert(share::ActiveModel {
            id: Set(id.clone()),
            project_id: Set(project_id.to_owned()),
            token_hash: Set(hex::encode(Sha256::digest(token.as_bytes()))),
            password_hash: Set(password_hash),
            expires_at: Set(expires_at.unwrap_or(0)),
            created_at: Set(now_ms()),
        })
        .exec(&self.db)
        .await?;
        Ok(NewShare {
            path: format!("/share/{id}#{token}"),
            id,
            token,
            project_id: project_id.to_owned(),
            password: password.is_some(),
            expires_at,
        })
    }

    /// The share links of a project, oldest first.
    pub async fn shares(&self, project_id: &str) -> Result<Vec<ShareInfo>, MetaError> {
        let now = now_ms();
        Ok(share::Entity::find()
            .filter(share::Column::ProjectId.eq(project_id))
            .order_by_asc(share::Column::CreatedAt)
            .order_by_asc(share::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| ShareInfo {
                expired: m.expires_at > 0 && m.expires_at <= now,
                id: m.id,
                project_id: m.project_id,
                password: !m.password_hash.is_empty(),
                expires_at: expiry(m.expires_at),
                created_at: m.created_at,
            })
            .collect())
    }

    /// Deletes a share link; true when it existed. It stops working at once.
    pub async fn revoke_share(&self, id: &str) -> Result<bool, MetaError> {
        let result = share::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// A share link, or `None` when the id is unknown (or revoked).
    pub async fn share(&self, id: &str) -> Result<Option<ShareRecord>, MetaError> {
        if id.is_empty() || id.len() > 32 {
            return Ok(None);
        }
        let Some(m) = share::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let mut token_hash = [0u8; 32];
        hex::decode_to_slice(&m.token_hash, &mut token_hash).map_err(|e| MetaError::Invalid {
            field: "token_hash",
            message: e.to_string(),
        })?;
        Ok(Some(ShareRecord {
            id: m.id,
            project_id: m.project_id,
            expires_at: expiry(m.expires_at),
            token_hash,
            password_hash: m.password_hash,
        }))
    }
}

/// The current time, for expiry checks.
pub fn now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_pbkdf2_match_published_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, first 32 bytes).
        assert_eq!(
            hex::encode(pbkdf2(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[tokio::test]
    async fn shares_admit_their_token_and_password_only_until_revoked() {
        let meta = Meta::connect("sqlite::memory:").await.unwrap();
        meta.migrate().await.unwrap();
        let project = meta.create_project("Shared", &[]).await.unwrap();
        assert!(meta.create_share("missing", None, None).await.is_err());
        assert!(meta.create_share(&project.id, None, Some(0)).await.is_err());
        let open = meta.create_share(&project.id, None, None).await.unwrap();
        assert_eq!(open.path, format!("/share/{}#{}", open.id, open.token));
        let record = meta.share(&open.id).await.unwrap().unwrap();
        assert!(record.admits(&open.token, None));
        assert!(!record.admits("wrong", None));
        assert!(!record.expired(now()));

        let locked = meta
            .create_share(&project.id, Some("hunter2"), Some(7))
            .await
            .unwrap();
        let record = meta.share(&locked.id).await.unwrap().unwrap();
        assert!(record.has_password());
        assert!(!record.admits(&locked.token, None));
        assert!(record.unlock(&locked.token, "wrong").is_none());
        let key = record.unlock(&locked.token, "hunter2").unwrap();
        assert!(record.admits(&locked.token, Some(&key)));
        assert!(!record.admits(&open.token, Some(&key)));
        assert!(!record.expired(now()));
        assert!(record.expired(now() + 8 * DAY_MS));

        let listed = meta.shares(&project.id).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|s| s.id == locked.id && s.password));
        assert!(meta.revoke_share(&open.id).await.unwrap());
        assert!(meta.share(&open.id).await.unwrap().is_none());
        assert!(!meta.revoke_share(&open.id).await.unwrap());
        assert_eq!(meta.shares(&project.id).await.unwrap().len(), 1);
    }
}
