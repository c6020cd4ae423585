//! Inserts into one table from many tasks, combined into fewer INSERTs
//! (group commit). ClickHouse writes a part of files for every insert into
//! a table and into each of its views' tables, and merges those parts
//! again later: the cost goes with the number of inserts far more than
//! with their rows. A sink flushes each partition on its own, so four
//! partitions flushed within the same second are four parts per table;
//! combined, they are one.
//!
//! How: callers write their rows into the open round (an INSERT whose
//! body is still being sent) and wait. One task at a time ends rounds:
//! while it waits for the server to answer one, the callers that arrive
//! meanwhile fill the next, which it ends as soon as the first is done.
//! A caller alone waits no longer than a plain insert; under load, each
//! round carries what arrived during the one before.
//!
//! Outcomes: every caller of a round gets the round's outcome. A round
//! whose data the server refused (a row it cannot store) stored nothing,
//! being one block; each of its callers then inserts its own rows alone,
//! so the refusal reaches the batch that holds the bad row and no other.
//! A round whose sending failed was never ended, so the server dropped it.
//! A round whose answer was lost may or may not be stored: its callers
//! are told it failed, as after any such insert, and check which of their
//! rows are stored before trying again. A round carries no
//! `insert_deduplication_token` (its request starts before its rows are
//! known, and a retry repeats one batch, not the same combination); a batch
//! inserted alone does.

use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::{Mutex, oneshot};

use crate::rowbinary::{EncodeRow, RowInsert};
use crate::{RowKey, Store, StoreError};

/// Most rows in one round. ClickHouse makes one block of up to
/// `max_insert_block_size` (1,048,576) rows of an insert, so a round far
/// below that is stored, or refused, as a whole.
const MAX_ROUND_ROWS: usize = 200_000;

/// Combined inserts of rows of `T` into one table; cheap to clone.
pub struct CombinedInserts<T> {
    store: Store,
    table: &'static str,
    rounds: Arc<Mutex<Rounds>>,
    rows: PhantomData<fn(&T)>,
}

impl<T> Clone for CombinedInserts<T> {
    fn clone(&self) -> Self {
        CombinedInserts {
            store: self.store.clone(),
            table: self.table,
            rounds: self.rounds.clone(),
            rows: PhantomData,
        }
    }
}

struct Rounds {
    /// The round taking rows.
    open: Option<Round>,
    /// Whether a task is ending rounds (it ends the open one next).
    ending: bool,
}

struct Round {
    insert: RowInsert,
    rows: usize,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// What a caller learns of its round.
#[derive(Clone)]
enum Outcome {
    Stored,
    /// The server refused the round's data (of this many batches);
    /// nothing of it was stored.
    Refused(Arc<StoreError>, usize),
    Failed(Arc<StoreError>),
}

impl<T: EncodeRow + RowKey + 'static> CombinedInserts<T> {
    pub fn new(store: Store, table: &'static str) -> Self {
        CombinedInserts {
            store,
            table,
            rounds: Arc::new(Mutex::new(Rounds {
                open: None,
                ending: false,
            })),
            rows: PhantomData,
        }
    }

    /// Inserts `rows` in a round with whatever else arrives meanwhile;
    /// returns once the round is stored (or failed).
    pub async fn insert(&self, rows: &[T]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (waiter, outcome) = oneshot::channel();
        let start_ending = {
            let mut rounds = self.rounds.lock().await;
            let full = rounds
                .open
                .as_ref()
                .is_some_and(|r| r.rows + rows.len() > MAX_ROUND_ROWS);
            if full {
                // Past the bound: this batch goes alone rather than wait.
                drop(rounds);
                return self.store.insert(self.table, rows).await;
            }
            if rounds.open.is_none() {
                rounds.open = Some(Round {
                    insert: RowInsert::new::<T>(self.store.client(), self.table),
                    rows: 0,
                    waiters: Vec::new(),
                });
            }
            let round = rounds.open.as_mut().expect("opened above");
            // Not cancel-safe: a caller dropped while writing leaves its
            // rows so far in the round, stored with it. The sink never
            // drops a flush; a batch left unacknowledged comes back as a
            // redelivery, checked against the stored ids.
            for row in rows {
                if let Err(e) = round.insert.write(row).await {
                    // The body was cut: the insert is dropped unended, so
                    // the server stores none of the round.
                    let round = rounds.open.take().expect("written to above");
                    let e = Arc::new(StoreError::from(e));
                    for waiter in round.waiters {
                        let _ = waiter.send(Outcome::Failed(e.clone()));
                    }
                    return Err(StoreError::Combined(e));
                }
            }
            round.rows += rows.len();
            round.waiters.push(waiter);
            let start_ending = !rounds.ending;
            rounds.ending = true;
            start_ending
        };
        if start_ending {
            tokio::spawn(end_rounds(self.rounds.clone()));
        }
        match outcome.await {
            Ok(Outcome::Stored) => Ok(()),
            // Others' rows were in it: try this batch on its own.
            Ok(Outcome::Refused(_, batches)) if batches > 1 => {
                self.store.insert(self.table, rows).await
            }
            Ok(Outcome::Refused(e, _) | Outcome::Failed(e)) => Err(StoreError::Combined(e)),
            // The ending task is gone (a panic) with the round's outcome
            // unknown: told as a failed insert, which is checked before the
            // retry, so nothing is lost or doubled.
            Err(_) => Err(StoreError::Combined(Arc::new(StoreError::Interrupted))),
        }
    }
}

/// Ends the open round, and the next while there is one.
async fn end_rounds(rounds: Arc<Mutex<Rounds>>) {
    loop {
        let round = {
            let mut rounds = rounds.lock().await;
            match rounds.open.take() {
                Some(round) => round,
                None => {
                    rounds.ending = false;
                    return;
                }
            }
        };
        let batches = round.waiters.len();
        let outcome = match round.insert.end().await.map_err(StoreError::from) {
            Ok(()) => Outcome::Stored,
            Err(e) if e.is_row_refusal() => Outcome::Refused(Arc::new(e), batches),
            Err(e) => Outcome::Failed(Arc::new(e)),
        };
        for waiter in round.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}
