use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clients")]
pub struct Model {
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(64))"
    )]
    pub id: String,
    #[sea_orm(indexed, column_type = "String(StringLen::N(64))")]
    pub project_id: String,
    /// `write`, `read` or `root`.
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub kind: String,
    /// Hex SHA-256 of the secret.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub secret_hash: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
