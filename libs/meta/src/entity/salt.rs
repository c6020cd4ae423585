use sea_orm::entity::prelude::*;

/// The salt of one UTC day for cookieless device ids.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "salts")]
pub struct Model {
    /// `YYYY-MM-DD`.
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(10))"
    )]
    pub day: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub salt: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
