//! In-memory grouping of one fold partition's rows by user: the fast path
//! of a batch run when the partition fits its share of the memory budget.
//!
//! The fold needs each user's rows together, users in the byte order of
//! their [`user_prefix`](weft_core::keys::user_prefix) (the order of the
//! view's keys), and each user's rows in (partition, offset) order. Instead
//! of sorting whole rows, the grouper keeps every row in a compact form and
//! sorts only row numbers:
//!
//! 1. each scanned row becomes a fixed-size [`Row`]: numbers as they are,
//!    the event id in one string arena, and the tenant, user (per tenant),
//!    item, category and attribute set as indices into [`Interner`]s (each
//!    distinct string stored once);
//! 2. the distinct users are sorted by (tenant, user id), which is the byte
//!    order of their keys (the key encoding preserves string order);
//! 3. a counting sort lays out the row numbers user by user, in that order;
//! 4. each user's few rows are sorted by (partition, offset).
//!
//! A row costs about 80 bytes here (plus each distinct string once and
//! about 100 bytes a user), against about 250 as Arrow arrays with their
//! string views and attribute maps. [`Grouper::bytes`] is what the
//! caller reserves from the memory pool; when a reservation is refused, the
//! caller hands the rows over to an external sort as Arrow batches again
//! ([`Grouper::into_batches`]).

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashTable;
use weft_core::archive::{ArchiveBatchBuilder, archive_schema};
use weft_core::{Event, EventKind};

use crate::columns::EventColumns;
use crate::{BatchError, Result};

/// Distinct strings, each stored once and named by a dense index.
struct Interner {
    arena: String,
    /// Per string: its end in `arena` (its start is the previous end).
    ends: Vec<usize>,
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Interner {
    fn new() -> Interner {
        Interner {
            arena: String::new(),
            ends: Vec::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn get(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.arena[start..self.ends[id]]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn intern(&mut self, key: &str) -> Result<u32> {
        let hash = self.hasher.hash_one(key);
        let Interner {
            arena,
            ends,
            table,
            hasher,
        } = self;
        let get = |id: u32| {
            let id = id as usize;
            let start = if id == 0 { 0 } else { ends[id - 1] };
            &arena[start..ends[id]]
        };
        let entry = table.entry(hash, |&id| get(id) == key, |&id| hasher.hash_one(get(id)));
        Ok(match entry {
            hashbrown::hash_table::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let id = u32::try_from(ends.len()).map_err(|_| {
                    BatchError::Argument("too many distinct values to group".into())
                })?;
                arena.push_str(key);
                ends.push(arena.len());
                v.insert(id);
                id
            }
        })
    }

    fn bytes(&self) -> usize {
        // A table of capacity c has about c * 8/7 buckets (a power of two)
        // of a u32 and a control byte each.
        let buckets = (self.table.capacity() * 8 / 7).next_power_of_two();
        self.arena.capacity()
            + self.ends.capacity() * size_of::<usize>()
            + buckets * (size_of::<u32>() + 1)
    }
}

/// A vector that grows by fixed-size chunks: no reallocation (so no
/// moment holding twice the rows while they are copied) and no doubling
/// slack beyond one chunk.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

/// The most rows one grouper takes: row numbers are `u32` (4 bytes a row
/// in the grouped order). Beyond it the caller sorts externally.
pub(crate) const MAX_ROWS: usize = u32::MAX as usize;

/// Values per chunk of a [`Chunked`].
const CHUNK_ROWS: usize = 1 << 16;

impl<T: Copy> Chunked<T> {
    fn new() -> Chunked<T> {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK_ROWS => c.push(value),
            _ => {
                let mut c = Vec::with_capacity(CHUNK_ROWS);
                c.push(value);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Bytes held, counting whole chunks.
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>() * size_of::<T>()
    }

    /// Bytes that taking `n` more values adds (whole chunks).
    fn bytes_for(&self, n: usize) -> usize {
        let room = self.chunks.len() * CHUNK_ROWS - self.len;
        n.saturating_sub(room).div_ceil(CHUNK_ROWS) * CHUNK_ROWS * size_of::<T>()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK_ROWS][i % CHUNK_ROWS]
    }
}

/// One scanned row in compact form.
#[derive(Debug, Clone, Copy)]
struct Row {
    offset: i64,
    ts_ms: i64,
    /// Arrival (`_ingest_ms`; the event time when the scan has none).
    ingest_ms: i64,
    price_minor: i64,
    /// End of the event id in the event-id arena (its start is the
    /// previous row's end).
    event_id_end: u64,
    partition: i32,
    quantity: i32,
    tenant: u32,
    /// The user's index among its tenant's users.
    user: u32,
    item: u32,
    category: u32,
    attributes: u32,
    kind: EventKind,
}

/// Collects a partition's rows and groups them by user.
pub(crate) struct Grouper {
    rows: Chunked<Row>,
    event_ids: String,
    tenants: Interner,
    /// Per tenant: its users' ids.
    users: Vec<Interner>,
    /// Item ids and categories.
    strings: Interner,
    /// Attribute sets, each encoded by [`push_attribute`](crate::columns::push_attribute).
    attribute_sets: Interner,
    scratch: String,
    /// The previous row's tenant (tenants change rarely).
    last_tenant: Option<u32>,
}

/// The grouped rows: users in key order, each user's rows in (partition,
/// offset) order.
pub(crate) struct Grouped {
    grouper: Grouper,
    /// Row numbers, user after user.
    order: Vec<u32>,
    /// Per user in key order: ((tenant, user), end of its rows in `order`).
    users: Vec<((u32, u32), usize)>,
}

impl Grouper {
    pub(crate) fn new() -> Grouper {
        Grouper {
            rows: Chunked::new(),
            event_ids: String::new(),
            tenants: Interner::new(),
            users: Vec::new(),
            strings: Interner::new(),
            attribute_sets: Interner::new(),
            scratch: String::new(),
            last_tenant: None,
        }
    }

    /// Memory held now, and what grouping will add: 4 bytes a row for the
    /// grouped order and about 48 bytes a user for sorting the users.
    pub(crate) fn bytes(&self) -> usize {
        let users: usize = self.users.iter().map(Interner::len).sum();
        self.rows.len() * size_of::<u32>()
            + users * 48
            + self.rows.bytes()
            + self.event_ids.capacity()
            + self.tenants.bytes()
            + self.users.iter().map(Interner::bytes).sum::<usize>()
            + self.strings.bytes()
            + self.attribute_sets.bytes()
    }

    /// About what taking `rows` more rows adds to [`Grouper::bytes`] (row
    /// chunks, their order, a typical event id, a new user each), to reserve
    /// before taking them; the caller settles on [`Grouper::bytes`] after.
    pub(crate) fn bytes_for(&self, rows: usize) -> usize {
        self.rows.bytes_for(rows) + rows * (size_of::<u32>() + 24 + 16)
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Takes a scanned batch's rows.
    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.rows.len() + batch.num_rows() > MAX_ROWS {
            return Err(BatchError::Argument(
                "more rows than one grouped partition can number".into(),
            ));
        }
        let cols = EventColumns::new(batch)?;
        let ingest = ingest_column(batch);
        for row in 0..batch.num_rows() {
            let tenant_id = cols.tenant.value(row);
            let tenant = match self.last_tenant {
                Some(t) if self.tenants.get(t) == tenant_id => t,
                _ => {
                    let t = self.tenants.intern(tenant_id)?;
                    if t as usize == self.users.len() {
                        self.users.push(Interner::new());
                    }
                    self.last_tenant = Some(t);
                    t
                }
            };
            let user = self.users[tenant as usize].intern(cols.user_id.value(row))?;
            let kind = cols.kind(row)?;
            let item = self.strings.intern(cols.item_id.value(row))?;
            let category = self.strings.intern(cols.category.value(row))?;
            self.scratch.clear();
            cols.push_attributes(row, &mut self.scratch);
            let attributes = self.attribute_sets.intern(&self.scratch)?;
            self.event_ids.push_str(cols.event_id.value(row));
            let ts_ms = cols.ts_ms.value(row);
            self.rows.push(Row {
                offset: cols.offset.value(row),
                ts_ms,
                ingest_ms: arrival(ingest, row, ts_ms),
                price_minor: cols.price_minor.value(row),
                event_id_end: self.event_ids.len() as u64,
                partition: cols.partition.value(row),
                quantity: cols.quantity.value(row),
                tenant,
                user,
                item,
                category,
                attributes,
                kind,
            });
        }
        Ok(())
    }

    /// Where row `i`'s event id starts in the arena.
    fn event_id_start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.rows[i - 1].event_id_end as usize
        }
    }

    /// Overwrites `e` with row `i` (but its tenant and user).
    fn fill(&self, i: usize, e: &mut Event) -> Result<()> {
        self.fill_row(&self.rows[i], self.event_id_start(i), e)
    }

    fn fill_row(&self, r: &Row, event_id_start: usize, e: &mut Event) -> Result<()> {
        fn set(s: &mut String, v: &str) {
            s.clear();
            s.push_str(v);
        }
        set(
            &mut e.event_id,
            &self.event_ids[event_id_start..r.event_id_end as usize],
        );
        e.ts_ms = r.ts_ms;
        e.kind = r.kind;
        set(&mut e.item_id, self.strings.get(r.item));
        set(&mut e.category, self.strings.get(r.category));
        e.price_minor = r.price_minor;
        e.quantity = r.quantity;
        e.attributes.clear();
        let mut set = self.attribute_sets.get(r.attributes);
        while !set.is_empty() {
            let k = take_str(&mut set)?;
            let v = take_str(&mut set)?;
            e.attributes.insert(k.to_string(), v.to_string());
        }
        Ok(())
    }

    /// Groups the rows: users by key, each user's rows by (partition,
    /// offset).
    pub(crate) fn finish(self) -> Grouped {
        // Users numbered tenant after tenant; sorted by (tenant, user id),
        // which is the byte order of their keys.
        let mut first = Vec::with_capacity(self.users.len());
        let mut all: Vec<(u32, u32)> = Vec::new();
        for (t, users) in self.users.iter().enumerate() {
            first.push(all.len());
            all.extend((0..users.len() as u32).map(|u| (t as u32, u)));
        }
        let global = |r: &Row| first[r.tenant as usize] + r.user as usize;
        let name = |&(t, u): &(u32, u32)| (self.tenants.get(t), self.users[t as usize].get(u));
        let mut by_key: Vec<u32> = (0..all.len() as u32).collect();
        by_key.sort_unstable_by(|a, b| name(&all[*a as usize]).cmp(&name(&all[*b as usize])));
        let users = all.len();
        let mut rank = vec![0u32; users];
        for (r, &u) in by_key.iter().enumerate() {
            rank[u as usize] = r as u32;
        }
        // Counting sort of the row numbers by their user's rank.
        let mut ends = vec![0usize; users];
        for row in self.rows.iter() {
            ends[rank[global(row)] as usize] += 1;
        }
        let mut next = Vec::with_capacity(users);
        let mut total = 0;
        for n in ends.iter_mut() {
            next.push(total);
            total += *n;
            *n = total;
        }
        let mut order = vec![0u32; self.rows.len()];
        for (i, row) in self.rows.iter().enumerate() {
            let slot = &mut next[rank[global(row)] as usize];
            order[*slot] = i as u32;
            *slot += 1;
        }
        let mut start = 0;
        for &end in &ends {
            let rows = &mut order[start..end];
            if rows.len() > 1 {
                rows.sort_unstable_by_key(|&i| {
                    let r = &self.rows[i as usize];
                    (r.partition, r.offset, i)
                });
            }
            start = end;
        }
        let users = by_key
            .into_iter()
            .zip(ends)
            .map(|(u, end)| (all[u as usize], end))
            .collect();
        Grouped {
            grouper: self,
            order,
            users,
        }
    }

    /// The rows taken so far as Arrow batches of [`sort_schema`] (the
    /// archive's columns and `tenant`), `batch_rows` rows each, made as they
    /// are asked for and freeing the compact rows as they go: to hand the
    /// rows over to an external sort.
    pub(crate) fn into_batches(self, batch_rows: usize) -> IntoBatches {
        IntoBatches {
            grouper: self,
            chunk: 0,
            row: 0,
            event_id_start: 0,
            batch_rows: batch_rows.max(1),
            builder: SortBatchBuilder::default(),
            event: empty_event(),
        }
    }
}

/// See [`Grouper::into_batches`].
pub(crate) struct IntoBatches {
    grouper: Grouper,
    chunk: usize,
    /// Next row in `chunk`.
    row: usize,
    event_id_start: usize,
    batch_rows: usize,
    builder: SortBatchBuilder,
    event: Event,
}

impl IntoBatches {
    /// Memory the rows not yet handed over still hold.
    pub(crate) fn bytes(&self) -> usize {
        self.grouper.bytes()
    }

    /// Appends the next row to the builder, freeing each chunk once passed.
    fn append_next(&mut self) -> Result<()> {
        let g = &self.grouper;
        let r = g.rows.chunks[self.chunk][self.row];
        self.event.tenant.clear();
        self.event.tenant.push_str(g.tenants.get(r.tenant));
        self.event.user_id.clear();
        self.event
            .user_id
            .push_str(g.users[r.tenant as usize].get(r.user));
        g.fill_row(&r, self.event_id_start, &mut self.event)?;
        self.event_id_start = r.event_id_end as usize;
        self.builder
            .append(&self.event, r.partition, r.offset, r.ingest_ms);
        self.row += 1;
        if self.row == self.grouper.rows.chunks[self.chunk].len() {
            self.grouper.rows.chunks[self.chunk] = Vec::new();
            self.chunk += 1;
            self.row = 0;
        }
        Ok(())
    }
}

impl Iterator for IntoBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        while self.builder.len() < self.batch_rows && self.chunk < self.grouper.rows.chunks.len() {
            if let Err(e) = self.append_next() {
                self.chunk = self.grouper.rows.chunks.len();
                return Some(Err(e));
            }
        }
        (self.builder.len() > 0).then(|| Ok(self.builder.finish()))
    }
}

/// What [`Grouped::for_each`] visits.
pub(crate) enum Visit<'a> {
    /// The next user, in key order: (tenant, user id, the Kafka partition
    /// of its first row in (partition, offset) order).
    User(&'a str, &'a str, i32),
    /// The current user's next row, in (partition, offset) order, and its
    /// arrival time.
    Row(&'a Event, i64),
}

impl Grouped {
    /// Visits every user and its rows.
    /// Visits every user and its rows; `f` answers a user's visit with
    /// whether to visit its rows (false: they are not read).
    pub(crate) fn for_each(&self, mut f: impl FnMut(Visit<'_>) -> Result<bool>) -> Result<()> {
        let g = &self.grouper;
        let mut event = empty_event();
        let mut start = 0;
        for &((t, u), end) in &self.users {
            let (tenant, user_id) = (g.tenants.get(t), g.users[t as usize].get(u));
            let partition = self.order[start..end]
                .first()
                .map_or(0, |&i| g.rows[i as usize].partition);
            if !f(Visit::User(tenant, user_id, partition))? {
                start = end;
                continue;
            }
            event.tenant.clear();
            event.tenant.push_str(tenant);
            event.user_id.clear();
            event.user_id.push_str(user_id);
            for &i in &self.order[start..end] {
                g.fill(i as usize, &mut event)?;
                f(Visit::Row(&event, g.rows[i as usize].ingest_ms))?;
            }
            start = end;
        }
        Ok(())
    }
}

/// About what one row of a [`sort_schema`] batch takes in memory (an
/// upper figure for the archive's generated events): what batch sizes and
/// the external sort's room are reckoned in.
pub(crate) const SORT_ROW_BYTES: usize = 256;

/// A scanned batch as a batch of [`sort_schema`].
pub(crate) fn to_sort_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let cols = EventColumns::new(batch)?;
    let ingest = ingest_column(batch);
    let mut builder = SortBatchBuilder::default();
    let mut event = empty_event();
    for row in 0..batch.num_rows() {
        cols.fill(row, &mut event)?;
        event.tenant.clear();
        event.tenant.push_str(cols.tenant.value(row));
        event.user_id.clear();
        event.user_id.push_str(cols.user_id.value(row));
        let ingest_ms = arrival(ingest, row, event.ts_ms);
        builder.append(
            &event,
            cols.partition.value(row),
            cols.offset.value(row),
            ingest_ms,
        );
    }
    Ok(builder.finish())
}

/// A scanned batch's `_ingest_ms` column, if the scan has one.
pub(crate) fn ingest_column(batch: &RecordBatch) -> Option<&arrow_array::Int64Array> {
    use arrow_array::cast::AsArray;
    batch
        .column_by_name(weft_core::archive::INGEST_COLUMN)?
        .as_primitive_opt::<arrow_array::types::Int64Type>()
}

/// Row `row`'s arrival: `_ingest_ms`, or the event time where it is null
/// or not scanned (archives from before the column).
pub(crate) fn arrival(ingest: Option<&arrow_array::Int64Array>, row: usize, ts_ms: i64) -> i64 {
    use arrow_array::Array;
    match ingest {
        Some(a) if a.is_valid(row) => a.value(row),
        _ => ts_ms,
    }
}

/// The schema of the batches an external sort of the grouper's rows takes:
/// the archive's columns, then `tenant`.
pub(crate) fn sort_schema() -> SchemaRef {
    let mut fields: Vec<Field> = archive_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("tenant", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Builds batches of [`sort_schema`].
#[derive(Default)]
pub(crate) struct SortBatchBuilder {
    archive: ArchiveBatchBuilder,
    tenant: StringBuilder,
}

impl SortBatchBuilder {
    pub(crate) fn append(&mut self, e: &Event, partition: i32, offset: i64, ingest_ms: i64) {
        self.archive.append(e, partition, offset, ingest_ms);
        self.tenant.append_value(&e.tenant);
    }

    pub(crate) fn len(&self) -> usize {
        self.archive.len()
    }

    pub(crate) fn finish(&mut self) -> RecordBatch {
        let batch = self.archive.finish();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(self.tenant.finish()));
        RecordBatch::try_new(sort_schema(), columns).expect("columns match sort_schema")
    }
}

fn take_str<'a>(text: &mut &'a str) -> Result<&'a str> {
    let corrupt = || BatchError::Argument("a grouped attribute set is corrupt".into());
    let (len, rest) = text.split_once(':').ok_or_else(corrupt)?;
    let len: usize = len.parse().map_err(|_| corrupt())?;
    let value = rest.get(..len).ok_or_else(corrupt)?;
    *text = &rest[len..];
    Ok(value)
}

pub(crate) fn empty_event() -> Event {
    Event {
        event_id: String::new(),
        tenant: String::new(),
        user_id: String::new(),
        ts_ms: 0,
        kind: EventKind::View,
        item_id: String::new(),
        category: String::new(),
        price_minor: 0,
        quantity: 0,
        attributes: Default::default(),
    }
}
