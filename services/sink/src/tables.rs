//! The sink's tables in ClickHouse: what a flush inserts into, each
//! table's inserts combined across the partitions' flushes
//! ([`CombinedInserts`]: one part per table for all the flushes of a
//! moment, instead of one per partition).

use std::collections::HashSet;

use analytics_store::{
    AliasRow, CombinedInserts, EncodeRow, EncodedEvent, ProfileRow, Record, RowKey, Store,
    StoreError,
};

use crate::flush::Warehouse;

/// A row type the sink inserts, and the table it goes to.
pub(crate) trait Table: EncodeRow + RowKey + Clone + 'static {
    const TABLE: &'static str;

    fn inserts(tables: &Tables) -> &CombinedInserts<Self>;

    /// The row as a record: what a dead letter holds (as JSON).
    fn record(&self) -> Record;
}

impl Table for EncodedEvent {
    const TABLE: &'static str = "events";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.events
    }

    fn record(&self) -> Record {
        Record::Events(self.decode())
    }
}

impl Table for ProfileRow {
    const TABLE: &'static str = "profiles";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.profiles
    }

    fn record(&self) -> Record {
        Record::Profiles(self.clone())
    }
}

impl Table for AliasRow {
    const TABLE: &'static str = "profile_aliases";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.aliases
    }

    fn record(&self) -> Record {
        Record::ProfileAliases(self.clone())
    }
}

/// The store and the combined inserts of each table; cheap to clone (the
/// partitions of a sink share one).
#[derive(Clone)]
pub(crate) struct Tables {
    store: Store,
    events: CombinedInserts<EncodedEvent>,
    profiles: CombinedInserts<ProfileRow>,
    aliases: CombinedInserts<AliasRow>,
}

impl Tables {
    pub fn new(store: Store) -> Tables {
        Tables {
            events: CombinedInserts::new(store.clone(), EncodedEvent::TABLE),
            profiles: CombinedInserts::new(store.clone(), ProfileRow::TABLE),
            aliases: CombinedInserts::new(store.clone(), AliasRow::TABLE),
            store,
        }
    }
}

impl Warehouse for Tables {
    async fn existing_event_ids(
        &self,
        rows: &[EncodedEvent],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        self.store.existing_event_ids(rows).await
    }

    async fn insert<T: Table>(&self, rows: &[T]) -> Result<(), StoreError> {
        T::inserts(self).insert(rows).await
    }
}
