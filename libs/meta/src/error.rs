//! Errors of the metadata store.

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("project {0} does not exist")]
    NoSuchProject(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}
