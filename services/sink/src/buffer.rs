//! Rows waiting for the next flush, with the stream entries they came from.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use analytics_store::{AliasRow, EncodedEvent, ProfileRow};
use analytics_store::{Frame, decode_frames};
use analytics_streams::{DeadLetter, Entry, ReadBatch};

/// One partition's batch in the making.
#[derive(Default)]
pub(crate) struct Buffer {
    /// Every entry the batch holds; all are acknowledged by its flush.
    pub ids: Vec<String>,
    /// Events as the enricher encoded them, inserted as they are.
    pub events: Rows<EncodedEvent>,
    pub profiles: Rows<ProfileRow>,
    pub aliases: Rows<AliasRow>,
    /// Some rows may already be in ClickHouse: check before inserting.
    pub maybe_stored: bool,
    pub oldest: Option<Instant>,
    /// Entries that cannot be decoded, and rows ClickHouse refused:
    /// dead-lettered with the flush, before its acknowledgement.
    pub letters: Vec<DeadLetter>,
}

impl Buffer {
    pub fn rows(&self) -> usize {
        self.events.len() + self.profiles.len() + self.aliases.len()
    }

    /// Drops the entries another consumer has taken over.
    pub fn retain(&mut self, owned: &HashSet<String>) {
        self.ids.retain(|id| owned.contains(id));
        self.events.retain(|id, _| owned.contains(id));
        self.profiles.retain(|id, _| owned.contains(id));
        self.aliases.retain(|id, _| owned.contains(id));
        self.letters.retain(|l| owned.contains(&l.entry.id));
    }

    /// Decodes a read into the buffer; a record that cannot be decoded
    /// becomes a dead letter alone, not with the rest of its bundle.
    /// Returns the rows added.
    pub fn add(&mut self, batch: ReadBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        self.oldest.get_or_insert_with(Instant::now);
        self.maybe_stored |= batch.redelivered;
        self.ids.extend(batch.vanished);
        // A redelivery may repeat entries already buffered; a fresh read never
        // does, and is not searched (the buffer holds up to sink.max_rows ids).
        let buffered: HashSet<String> = if batch.redelivered {
            self.ids.iter().cloned().collect()
        } else {
            HashSet::new()
        };
        let rows_before = self.rows();
        for entry in batch.entries {
            if buffered.contains(&entry.id) {
                continue;
            }
            // Events keep slices of the entry's bytes, not copies.
            let payload = bytes::Bytes::from(entry.payload);
            // One id shared by the entry's rows, not a copy per row.
            let shared: Arc<str> = Arc::from(entry.id.as_str());
            for (bytes, frame) in decode_frames(&payload) {
                let origin = shared.clone();
                match frame {
                    Ok(Frame::Event(row)) => self.events.push(origin, row),
                    Ok(Frame::Profile(row)) => self.profiles.push(origin, row),
                    Ok(Frame::Alias(row)) => self.aliases.push(origin, row),
                    Err(e) => self.letters.push(DeadLetter {
                        reason: format!("cannot decode enriched record: {e}"),
                        entry: Entry {
                            id: origin.to_string(),
                            payload: bytes.to_vec(),
                        },
                    }),
                }
            }
            self.ids.push(entry.id);
        }
        self.rows() - rows_before
    }
}

/// Rows of one table and the ids of the entries they came from (kept
/// apart, so the rows go to ClickHouse as one slice, without copies).
pub(crate) struct Rows<T> {
    pub rows: Vec<T>,
    pub origins: Vec<Arc<str>>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows {
            rows: Vec::new(),
            origins: Vec::new(),
        }
    }
}

impl<T> Rows<T> {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn push(&mut self, origin: Arc<str>, row: T) {
        self.origins.push(origin);
        self.rows.push(row);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &T) -> bool) {
        let (rows, origins) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.origins),
        );
        for (origin, row) in origins.into_iter().zip(rows) {
            if keep(&origin, &row) {
                self.push(origin, row);
            }
        }
    }
}
