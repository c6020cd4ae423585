//! Errors of the stream layer.

/// A failed stream operation; the Redis error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stream entry {id} has no `e` payload field")]
    MissingPayload { id: String },
    #[error("redis configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Task(#[from] crate::TaskFailure),
}

impl StreamError {
    /// True when Redis could not be reached (as opposed to refusing a command).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StreamError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_connection_refusal()
            }
            StreamError::MissingPayload { .. } | StreamError::Config(_) | StreamError::Task(_) => {
                false
            }
        }
    }
}
