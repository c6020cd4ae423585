//! Metadata: projects, their API clients and the daily salts of cookieless
//! device ids, kept in a SQL database through sea-orm (a SQLite file by
//! default; MySQL or PostgreSQL by URL); and the [`Authenticator`] that
//! admits API callers against it through a cache.
//!
//! Client secrets are 256-bit random values shown once at creation; only
//! their SHA-256 is stored (a slow password hash buys nothing for secrets of
//! that entropy) and they are compared in constant time.
//!
//! Share links (read-only access to one project's insights) work the same
//! way: a public id and a 256-bit token whose SHA-256 is stored; an
//! optional password is kept as a salted PBKDF2-HMAC-SHA256 hash.

mod auth;
mod entity;
mod error;
mod share;
mod store;
pub mod testing;

pub use auth::{AuthError, Authenticator, Caller, Credentials, charged_to};
pub use error::MetaError;
pub use share::{NewShare, ShareInfo, ShareRecord, now as now_ms};
pub use store::{ClientKind, ClientRecord, Meta, NewClient, Project, RateLimits};
