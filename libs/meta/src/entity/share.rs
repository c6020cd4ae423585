use sea_orm::entity::prelude::*;

/// A read-only share link of one project's insights.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shares")]
pub struct Model {
    /// Public id: in the link's path, and what `share list` / `revoke` name.
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(32))"
    )]
    pub id: String,
    #[sea_orm(indexed, column_type = "String(StringLen::N(64))")]
    pub project_id: String,
    /// Hex SHA-256 of the link's token (the token itself is shown once).
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub token_hash: String,
    /// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, or empty.
    #[sea_orm(column_type = "Text")]
    pub password_hash: String,
    /// Milliseconds since the epoch; 0 = never.
    pub expires_at: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
