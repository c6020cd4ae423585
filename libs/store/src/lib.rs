//! ClickHouse storage: row types and the [`Record`] frames that carry them
//! between the enricher and the sink, the client, migrations and the
//! idempotent batch insert used by the sink.
//!
//! Rows are written as RowBinary by our own encoder (`rowbinary`: the
//! enricher encodes an events row once and the sink forwards the bytes),
//! and every statement here runs on 18.16 as well as on current servers.
//! Values reach SQL only through the crate's `?` binding.

mod client;
mod cluster;
mod codec;
mod combine;
mod conditions;
mod error;
mod features;
mod migrate;
mod record;
mod rowbinary;
mod rows;

pub use client::{Store, StoreSettings};
pub use codec::{CodecError, Frame, decode_bundle, decode_frames, encode_frame};
pub use combine::CombinedInserts;
pub use conditions::{ANALYTICS_EVENTS, IN_SESSION, SCREEN_VIEWS};
pub use error::StoreError;
pub use features::{Features, RowKey, deduplication_token};
pub use migrate::{MIGRATIONS, Migration};
pub use record::Record;
pub use rowbinary::{EncodeRow, EncodedEvent, EventFields, EventKey, RowBinaryError};
pub use rows::{AliasRow, EventRow, ProfileRow, Row};
