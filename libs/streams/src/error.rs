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
