//! The flush's decisions against a fake ClickHouse and a fake stream: no
//! sockets, a failure planted at every step.

use std::time::{Duration, Instant};

use analytics_store::{ProfileRow, Record};
use analytics_streams::Entry;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::fakes::*;

const SETTINGS: FlushSettings = FlushSettings {
    claim_idle: Duration::from_secs(30),
    max_backoff: Duration::from_secs(5),
};

/// A batch of `n` events, one entry each (`1-0`, `2-0`, …), plus one
/// profile version on the first entry.
fn batch(n: usize) -> Buffer {
    let mut buffer = Buffer {
        oldest: Some(Instant::now()),
        ..Buffer::default()
    };
    for i in 1..=n {
        let entry = format!("{i}-0");
        buffer
            .events
            .push(entry.as_str().into(), encoded(&format!("e{i}")));
        buffer.ids.push(entry);
    }
    buffer.profiles.push(
        "1-0".into(),
        ProfileRow {
            project_id: "p".into(),
            id: "u1".into(),
            ..ProfileRow::default()
        },
    );
    buffer
}

fn ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (1..=n).map(|i| format!("e{i}")).collect();
    ids.sort();
    ids
}

fn entries(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{i}-0")).collect()
}

async fn run(buffer: Buffer, warehouse: &FakeWarehouse, ledger: &mut FakeLedger) -> Flushed {
    flush(
        buffer,
        warehouse,
        ledger,
        SETTINGS,
        &CancellationToken::new(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_stored_then_acknowledged() {
    let (warehouse, mut ledger) = (FakeWarehouse::default(), FakeLedger::default());
    assert_eq!(
        run(batch(3), &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 4 }
    );
    assert_eq!(warehouse.event_ids(), ids(3));
    assert_eq!(warehouse.stored.lock().unwrap().len(), 4);
    assert_eq!(ledger.acked, entries(3));
    // A fresh batch is not checked against ClickHouse.
    assert!(!warehouse.calls.lock().unwrap().contains(&"existing"));
}

#[tokio::test(start_paused = true)]
async fn an_empty_batch_does_nothing() {
    let (warehouse, mut ledger) = (FakeWarehouse::default(), FakeLedger::default());
    assert_eq!(
        run(Buffer::default(), &warehouse, &mut ledger).await,
        Flushed::Nothing
    );
    assert!(warehouse.calls.lock().unwrap().is_empty());
    assert!(ledger.log.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_insert_whose_answer_was_lost_is_not_stored_twice() {
    let warehouse = FakeWarehouse::planned(&[Call::StoredThenLost, Call::Outage, Call::Outage]);
    let mut ledger = FakeLedger::default();
    assert_eq!(
        run(batch(5), &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 6 }
    );
    // The events went in with the lost answer; the retry checked them
    // (twice failing to ask) and inserted none again.
    assert_eq!(warehouse.event_ids(), ids(5));
    let calls = warehouse.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        ["insert", "existing", "existing", "existing", "insert"]
    );
    assert_eq!(ledger.acked, entries(5));
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_batch_until_clickhouse_is_back() {
    let warehouse = FakeWarehouse::planned(&[Call::Outage; 6]);
    let mut ledger = FakeLedger::default();
    assert_eq!(
        run(batch(2), &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 3 }
    );
    assert_eq!(warehouse.event_ids(), ids(2));
    assert_eq!(ledger.acked, entries(2));
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_batch_is_stored_once() {
    let warehouse = FakeWarehouse::default();
    // An earlier sink stored the first 6,000 and died before acknowledging.
    warehouse
        .stored
        .lock()
        .unwrap()
        .extend((1..=6_000).map(|i| Record::Events(event(&format!("e{i}")))));
    let mut buffer = batch(10_000);
    buffer.maybe_stored = true;
    let mut ledger = FakeLedger::default();
    assert_eq!(
        run(buffer, &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 10_001 }
    );
    assert_eq!(warehouse.event_ids(), ids(10_000));
    assert_eq!(ledger.acked.len(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn refused_rows_are_dead_lettered_before_their_entries_are_acknowledged() {
    let (warehouse, mut ledger) = (FakeWarehouse::default(), FakeLedger::default());
    let mut buffer = batch(3);
    buffer.events.push("4-0".into(), encoded("bad-row"));
    buffer.ids.push("4-0".into());
    assert_eq!(
        run(buffer, &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 5 }
    );
    assert_eq!(warehouse.event_ids(), ids(3));
    assert_eq!(ledger.dead.len(), 1);
    assert_eq!(ledger.dead[0].entry.id, "4-0");
    assert!(ledger.dead[0].reason.starts_with("refused by ClickHouse"));
    let record: Record = serde_json::from_slice(&ledger.dead[0].entry.payload).unwrap();
    assert!(matches!(record, Record::Events(e) if e.id == "bad-row"));
    assert_eq!(ledger.log, ["dead_letter", "ack"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dead_letter_write_keeps_its_letters() {
    let warehouse = FakeWarehouse::default();
    let mut ledger = FakeLedger {
        dead_failures: 3,
        ..FakeLedger::default()
    };
    let mut buffer = batch(1);
    buffer.events.push("2-0".into(), encoded("bad-row"));
    buffer.ids.push("2-0".into());
    assert_eq!(
        run(buffer, &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 3 }
    );
    assert_eq!(
        ledger.dead.len(),
        1,
        "the letter survived three failed writes"
    );
    assert_eq!(ledger.log, ["dead_letter", "ack"]);
}

#[tokio::test(start_paused = true)]
async fn undecodable_entries_are_dead_lettered_with_the_flush() {
    let (warehouse, mut ledger) = (FakeWarehouse::default(), FakeLedger::default());
    let mut buffer = batch(1);
    buffer.add(analytics_streams::ReadBatch {
        entries: vec![Entry {
            id: "9-0".into(),
            payload: b"{not a record".to_vec(),
        }],
        ..Default::default()
    });
    assert_eq!(buffer.letters.len(), 1);
    assert_eq!(
        run(buffer, &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 2 }
    );
    assert_eq!(ledger.dead[0].entry.id, "9-0");
    assert!(ledger.acked.contains(&"9-0".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_ack_is_retried() {
    let warehouse = FakeWarehouse::default();
    let mut ledger = FakeLedger {
        ack_failures: 7,
        ..FakeLedger::default()
    };
    assert_eq!(
        run(batch(2), &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 3 }
    );
    assert_eq!(ledger.acked, entries(2));
}

#[tokio::test(start_paused = true)]
async fn entries_taken_over_are_left_to_their_new_owner() {
    let warehouse = FakeWarehouse::default();
    let mut ledger = FakeLedger {
        taken: HashSet::from(["2-0".to_owned()]),
        ..FakeLedger::default()
    };
    let mut buffer = batch(3);
    // Read long enough ago that another consumer may have claimed some.
    buffer.oldest = Instant::now().checked_sub(SETTINGS.claim_idle);
    assert!(buffer.oldest.is_some());
    assert_eq!(
        run(buffer, &warehouse, &mut ledger).await,
        Flushed::Stored { rows: 3 }
    );
    assert_eq!(warehouse.event_ids(), ["e1", "e3"]);
    assert_eq!(ledger.acked, ["1-0", "3-0"]);
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_a_failing_step_leaves_the_batch_pending() {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    // ClickHouse down: nothing stored, nothing acknowledged.
    let warehouse = FakeWarehouse::planned(&[Call::Outage; 10]);
    let mut ledger = FakeLedger::default();
    let flushed = flush(batch(2), &warehouse, &mut ledger, SETTINGS, &shutdown).await;
    assert_eq!(flushed, Flushed::LeftPending { rows: 3 });
    assert!(ledger.acked.is_empty());
    // Redis down after the insert: the refused row is not acknowledged
    // without its letter, nor is anything else.
    let warehouse = FakeWarehouse::default();
    let mut ledger = FakeLedger {
        dead_failures: 10,
        ..FakeLedger::default()
    };
    let mut buffer = batch(1);
    buffer.events.push("2-0".into(), encoded("bad-row"));
    buffer.ids.push("2-0".into());
    let flushed = flush(buffer, &warehouse, &mut ledger, SETTINGS, &shutdown).await;
    assert_eq!(flushed, Flushed::LeftPending { rows: 3 });
    assert!(ledger.acked.is_empty());
    assert!(ledger.dead.is_empty());
    // Redis down for the ack only.
    let mut ledger = FakeLedger {
        ack_failures: 10,
        ..FakeLedger::default()
    };
    let flushed = flush(batch(1), &warehouse, &mut ledger, SETTINGS, &shutdown).await;
    assert_eq!(flushed, Flushed::LeftPending { rows: 2 });
    assert!(ledger.acked.is_empty());
}
