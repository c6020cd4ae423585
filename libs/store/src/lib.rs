//! ClickHouse storage: row types and the [`Record`] frames that carry them
//! between the enricher and the sink, the client, migrations and the
//! idempotent batch insert used by the sink.
//!
//! Rows are written as RowBinary (`with_validation(false)`, since ClickHouse
//! 18.16 lacks `RowBinaryWithNamesAndTypes`), and every statement here runs on
//! 18.16 as well as on current servers. Values reach SQL only through the
//! crate's `?` binding.

mod backfill;
mod client;
mod cluster;
mod codec;
mod combine;
mod error;
mod features;
mod migrate;
mod record;
mod rows;

pub use backfill::{ANALYTICS_EVENTS, IN_SESSION, Rebuilt};
pub use client::{Store, StoreSettings};
pub use codec::{CodecError, decode_bundle, encode_record};
pub use combine::CombinedInserts;
pub use error::StoreError;
pub use features::{Features, RowKey, deduplication_token};
pub use migrate::{MIGRATIONS, Migration};
pub use record::Record;
pub use rows::{AliasRow, EventRow, InsertRow, ProfileRow, Row};
