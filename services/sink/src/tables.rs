//! The sink's tables in ClickHouse: what a flush inserts into, each
//! table's inserts combined across the partitions' flushes
//! ([`CombinedInserts`]: one part per table for all the flushes of a
//! moment, instead of one per partition).

use std::collections::HashSet;

use analytics_store::{
    AliasRow, CombinedInserts, EventRow, InsertRow, ProfileRow, Record, Store, StoreError,
};

use crate::flush::Warehouse;

/// A row type the sink inserts, and the table it goes to.
pub(crate) trait Table: InsertRow + Clone + Into<Record> + 'static {
    const TABLE: &'static str;

    fn inserts(tables: &Tables) -> &CombinedInserts<Self>;
}

impl Table for EventRow {
    const TABLE: &'static str = "events";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.events
    }
}

impl Table for ProfileRow {
    const TABLE: &'static str = "profiles";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.profiles
    }
}

impl Table for AliasRow {
    const TABLE: &'static str = "profile_aliases";

    fn inserts(tables: &Tables) -> &CombinedInserts<Self> {
        &tables.aliases
    }
}

/// The store and the combined inserts of each table; cheap to clone (the
/// partitions of a sink share one).
#[derive(Clone)]
pub(crate) struct Tables {
    store: Store,
    events: CombinedInserts<EventRow>,
    profiles: CombinedInserts<ProfileRow>,
    aliases: CombinedInserts<AliasRow>,
}

impl Tables {
    pub fn new(store: Store) -> Tables {
        Tables {
            events: CombinedInserts::new(store.clone(), EventRow::TABLE),
            profiles: CombinedInserts::new(store.clone(), ProfileRow::TABLE),
            aliases: CombinedInserts::new(store.clone(), AliasRow::TABLE),
            store,
        }
    }
}

impl Warehouse for Tables {
    async fn existing_event_ids(
        &self,
        rows: &[EventRow],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        self.store.existing_event_ids(rows).await
    }

    async fn insert<T: Table>(&self, rows: &[T]) -> Result<(), StoreError> {
        T::inserts(self).insert(rows).await
    }
}
