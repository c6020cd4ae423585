//! A fake ClickHouse and a fake partition stream, with planted failures,
//! for the sink's decisions tested without sockets.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use analytics_store::{EncodedEvent, EventRow, Record, StoreError};
use analytics_streams::{DeadLetter, StreamError};

use crate::flush::{Ledger, Warehouse};
use crate::tables::Table;

pub(crate) fn outage() -> StoreError {
    StoreError::ClickHouse(clickhouse::error::Error::Network(
        "connection refused".into(),
    ))
}

pub(crate) fn refusal() -> StoreError {
    StoreError::ClickHouse(clickhouse::error::Error::BadResponse(
        "Code: 27, e.displayText() = DB::Exception: Cannot parse input".into(),
    ))
}

pub(crate) fn redis_down() -> StreamError {
    StreamError::Redis(redis::RedisError::from((
        redis::ErrorKind::Io,
        "connection refused",
    )))
}

/// What one call to the fake ClickHouse does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    Ok,
    /// The server is unreachable: nothing is stored.
    Outage,
    /// The rows are stored but the answer is lost.
    StoredThenLost,
}

/// ClickHouse as a list of stored records. Calls follow `plan`, then
/// succeed; a batch holding an event whose id starts with `bad` is
/// refused as a whole, like a row ClickHouse cannot parse.
#[derive(Default)]
pub(crate) struct FakeWarehouse {
    pub stored: Mutex<Vec<Record>>,
    pub plan: Mutex<VecDeque<Call>>,
    pub calls: Mutex<Vec<&'static str>>,
}

impl FakeWarehouse {
    pub fn planned(calls: &[Call]) -> Self {
        FakeWarehouse {
            plan: Mutex::new(calls.iter().copied().collect()),
            ..FakeWarehouse::default()
        }
    }

    fn next(&self, what: &'static str) -> Call {
        self.calls.lock().unwrap().push(what);
        self.plan.lock().unwrap().pop_front().unwrap_or(Call::Ok)
    }

    pub fn event_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .stored
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Record::Events(e) => Some(e.id.clone()),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }
}

impl Warehouse for FakeWarehouse {
    async fn existing_event_ids(
        &self,
        rows: &[EncodedEvent],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        if let Call::Outage | Call::StoredThenLost = self.next("existing") {
            return Err(outage());
        }
        let stored = self.stored.lock().unwrap();
        let asked: HashSet<(&str, &str)> = rows
            .iter()
            .map(|r| (r.key().project_id, r.key().id))
            .collect();
        Ok(stored
            .iter()
            .filter_map(|r| match r {
                Record::Events(e) if asked.contains(&(e.project_id.as_str(), e.id.as_str())) => {
                    Some((e.project_id.clone(), e.id.clone()))
                }
                _ => None,
            })
            .collect())
    }

    async fn insert<T: Table>(&self, rows: &[T]) -> Result<(), StoreError> {
        let call = self.next("insert");
        if let Call::Outage = call {
            return Err(outage());
        }
        let records: Vec<Record> = rows.iter().map(Table::record).collect();
        if records
            .iter()
            .any(|r| matches!(r, Record::Events(e) if e.id.starts_with("bad")))
        {
            return Err(refusal());
        }
        self.stored.lock().unwrap().extend(records);
        match call {
            Call::StoredThenLost => Err(outage()),
            _ => Ok(()),
        }
    }
}

/// The partition's stream: what was dead-lettered and acknowledged, in
/// order, with planted failures.
#[derive(Default)]
pub(crate) struct FakeLedger {
    pub dead: Vec<DeadLetter>,
    pub acked: Vec<String>,
    /// Operations in the order they succeeded.
    pub log: Vec<&'static str>,
    /// Failures still to come, per operation.
    pub dead_failures: u32,
    pub ack_failures: u32,
    /// Entries another consumer took over.
    pub taken: HashSet<String>,
}

impl Ledger for FakeLedger {
    async fn keep_owned(&mut self, ids: &[String]) -> Result<HashSet<String>, StreamError> {
        Ok(ids
            .iter()
            .filter(|id| !self.taken.contains(*id))
            .cloned()
            .collect())
    }

    async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<(), StreamError> {
        if self.dead_failures > 0 {
            self.dead_failures -= 1;
            return Err(redis_down());
        }
        if !letters.is_empty() {
            self.dead.extend(letters.iter().cloned());
            self.acked
                .extend(letters.iter().map(|l| l.entry.id.clone()));
            self.log.push("dead_letter");
        }
        Ok(())
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), StreamError> {
        if self.ack_failures > 0 {
            self.ack_failures -= 1;
            return Err(redis_down());
        }
        self.acked.extend(ids.iter().cloned());
        self.log.push("ack");
        Ok(())
    }
}

/// The event `id` as the enricher encodes it for the sink.
pub(crate) fn encoded(id: &str) -> EncodedEvent {
    EncodedEvent::from(&event(id))
}

pub(crate) fn event(id: &str) -> EventRow {
    EventRow {
        project_id: "p".into(),
        id: id.into(),
        name: "screen_view".into(),
        ..EventRow::default()
    }
}
