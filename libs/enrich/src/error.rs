//! Errors of loading enrichment data.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not usable: {message}")]
    Format { path: PathBuf, message: String },
}
