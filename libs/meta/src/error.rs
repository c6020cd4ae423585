//! Errors of the metadata store, and which of them mean the database is
//! unavailable (worth a retry later) rather than broken.

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database cannot be reached or refuses work for now (down,
    /// restarting, out of connections, busy): a retry may succeed.
    #[error("metadata database unavailable: {0}")]
    Unavailable(#[source] DbErr),
    #[error("metadata database: {0}")]
    Db(#[source] DbErr),
    #[error("project {0} does not exist")]
    NoSuchProject(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl From<DbErr> for MetaError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            MetaError::Unavailable(err)
        } else {
            MetaError::Db(err)
        }
    }
}

fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unavailable(e)
        }
        _ => false,
    }
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY and SQLITE_LOCKED, extended codes included.
                let primary = code.and_then(|c| c.parse::<u32>().ok()).map(|c| c & 0xff);
                return matches!(primary, Some(5 | 6));
            }
            // SQLSTATE, shared by MySQL and PostgreSQL: class 08 is a
            // connection exception (MySQL's "too many connections" and
            // "server shutdown" included), class 53 insufficient resources,
            // 57P0x PostgreSQL shutting down or starting up.
            code.is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P0")
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnAcquireErr;
    use std::sync::Arc;

    #[test]
    fn connection_failures_are_unavailable_and_query_mistakes_are_not() {
        let unavailable = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::Conn(RuntimeErr::Internal("refused".into())),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(
                std::io::ErrorKind::ConnectionReset.into(),
            )))),
            DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolClosed))),
        ];
        for err in unavailable {
            assert!(
                matches!(MetaError::from(err), MetaError::Unavailable(_)),
                "should be unavailable"
            );
        }
        let broken = [
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::RowNotFound))),
            DbErr::Exec(RuntimeErr::Internal("syntax".into())),
            DbErr::RecordNotInserted,
        ];
        for err in broken {
            assert!(matches!(MetaError::from(err), MetaError::Db(_)));
        }
    }
}
