//! In-memory grouping of one fold partition's rows by user: the fast path
//! of a batch run (and of a training set) when the partition fits its
//! share of the memory budget.
//!
//! The fold needs each user's rows together, users in the byte order of
//! their [`user_prefix`](weft_core::keys::user_prefix) (the order of the
//! view's keys), and each user's rows in (partition, offset) order. Instead
//! of sorting whole rows, the grouper keeps every row in a compact form and
//! sorts only row numbers:
//!
//! 1. each scanned row's user is numbered by a [`Users`]: the fold's
//!    [`AllUsers`] numbers every tenant and user (per tenant) as they come;
//!    a training set's numbers only the labelled users, and the rows of
//!    the others are dropped as they are scanned;
//! 2. each row kept becomes a fixed-size [`Row`]: numbers as they are, the
//!    event id in one string arena, and the item, category and attribute
//!    set as indices into [`Interner`]s (each distinct string stored once;
//!    together the row's [`Strings`]);
//! 3. the users are ranked in visiting order ([`Users::rank`]: for the fold,
//!    by (tenant, user id), which is the byte order of their keys, since
//!    the key encoding preserves string order);
//! 4. a counting sort lays out the row numbers user by user, in that order;
//! 5. each user's few rows are sorted by (partition, offset).
//!
//! A row costs 72 bytes here (plus each distinct string once and
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

/// Strings stored end to end in one buffer, named by a dense index.
pub(crate) struct Arena {
    text: String,
    /// Per string: its end in `text` (its start is the previous end).
    ends: Vec<usize>,
}

impl Arena {
    pub(crate) fn new() -> Arena {
        Arena {
            text: String::new(),
            ends: Vec::new(),
        }
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.text[start..self.ends[id]]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Stores `parts` end to end as one string and gives its number, or
    /// `None` (nothing stored) when the numbers are used up.
    pub(crate) fn push(&mut self, parts: &[&str]) -> Option<u32> {
        let id = u32::try_from(self.ends.len()).ok()?;
        for part in parts {
            self.text.push_str(part);
        }
        self.ends.push(self.text.len());
        Some(id)
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * size_of::<usize>()
    }
}

/// Distinct strings, each stored once and named by a dense index.
struct Interner {
    strings: Arena,
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Interner {
    fn new() -> Interner {
        Interner {
            strings: Arena::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn get(&self, id: u32) -> &str {
        self.strings.get(id)
    }

    fn len(&self) -> usize {
        self.strings.len()
    }

    /// Forgets every string (the memory is kept for reuse).
    fn clear(&mut self) {
        self.strings.clear();
        self.table.clear();
    }

    fn intern(&mut self, key: &str) -> Result<u32> {
        let hash = self.hasher.hash_one(key);
        let Interner {
            strings,
            table,
            hasher,
        } = self;
        let entry = table.entry(
            hash,
            |&id| strings.get(id) == key,
            |&id| hasher.hash_one(strings.get(id)),
        );
        Ok(match entry {
            hashbrown::hash_table::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let id = strings.push(&[key]).ok_or_else(|| {
                    BatchError::Argument("too many distinct values to group".into())
                })?;
                v.insert(id);
                id
            }
        })
    }

    fn bytes(&self) -> usize {
        // A table of capacity c has about c * 8/7 buckets (a power of two)
        // of a u32 and a control byte each.
        let buckets = (self.table.capacity() * 8 / 7).next_power_of_two();
        self.strings.bytes() + buckets * (size_of::<u32>() + 1)
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
pub(crate) struct Row {
    pub(crate) offset: i64,
    pub(crate) ts_ms: i64,
    /// Arrival (`_ingest_ms`; the event time when the scan has none).
    pub(crate) ingest_ms: i64,
    price_minor: i64,
    /// The event id's position (see [`ID_CHUNK_BITS`]) and length.
    event_id: u64,
    event_id_len: u16,
    pub(crate) partition: i32,
    quantity: i32,
    /// The row's user as its [`Users`] numbers it.
    pub(crate) tenant: u32,
    pub(crate) user: u32,
    item: u32,
    category: u32,
    attributes: u32,
    kind: EventKind,
}

// What the memory figures (module doc) assume.
const _: () = assert!(size_of::<Row>() == 72);

impl Row {
    /// The fields an evaluation reads, strings by number: two copies of an
    /// event id with equal contents are the same event.
    pub(crate) fn contents(&self) -> (i64, EventKind, u32, u32, i64, i32, u32) {
        (
            self.ts_ms,
            self.kind,
            self.item,
            self.category,
            self.price_minor,
            self.quantity,
            self.attributes,
        )
    }
}

/// Bytes per chunk of event ids: an id's position is its chunk's number
/// and its start in the chunk, `chunk << ID_CHUNK_BITS | start`.
const ID_CHUNK_BITS: u32 = 20;
const ID_CHUNK: usize = 1 << ID_CHUNK_BITS;

/// The strings of compact rows: event ids in chunked arenas, item ids and
/// categories, and attribute sets (each encoded by
/// [`push_attribute`](crate::columns::push_attribute)), each distinct
/// string stored once.
pub(crate) struct Strings {
    /// Event ids, in chunks of [`ID_CHUNK`] bytes (no reallocation, so no
    /// copying as they grow and no doubling slack); an id never spans two.
    event_ids: Vec<String>,
    strings: Interner,
    attribute_sets: Interner,
    scratch: String,
}

impl Strings {
    pub(crate) fn new() -> Strings {
        let mut s = Strings {
            event_ids: Vec::new(),
            strings: Interner::new(),
            attribute_sets: Interner::new(),
            scratch: String::new(),
        };
        s.clear();
        s
    }

    /// `key`'s number in `interner`, whose number 0 is the empty string:
    /// the columns the features do not read are scanned as empty strings,
    /// and they are most rows' attribute sets.
    fn intern(interner: &mut Interner, key: &str) -> Result<u32> {
        if key.is_empty() {
            Ok(0)
        } else {
            interner.intern(key)
        }
    }

    /// Row `row` of a scanned batch, its user numbered `(tenant, user)`.
    pub(crate) fn row(
        &mut self,
        cols: &EventColumns,
        ingest: Option<&arrow_array::Int64Array>,
        row: usize,
        (tenant, user): (u32, u32),
    ) -> Result<Row> {
        let kind = cols.kind(row)?;
        let item = Self::intern(&mut self.strings, cols.item_id.value(row))?;
        let category = Self::intern(&mut self.strings, cols.category.value(row))?;
        self.scratch.clear();
        cols.push_attributes(row, &mut self.scratch);
        let attributes = Self::intern(&mut self.attribute_sets, &self.scratch)?;
        let event_id = cols.event_id.value(row);
        let event_id_len = u16::try_from(event_id.len()).map_err(|_| {
            BatchError::Argument(format!(
                "an archived event id of {} bytes (the platform writes at most {})",
                event_id.len(),
                weft_core::event::MAX_ID_LEN
            ))
        })?;
        let chunk = match self.event_ids.last() {
            Some(c) if c.len() + event_id.len() <= ID_CHUNK => self.event_ids.len() - 1,
            _ => {
                self.event_ids.push(String::with_capacity(ID_CHUNK));
                self.event_ids.len() - 1
            }
        };
        let ids = &mut self.event_ids[chunk];
        let start = ((chunk as u64) << ID_CHUNK_BITS) | ids.len() as u64;
        ids.push_str(event_id);
        let ts_ms = cols.ts_ms.value(row);
        Ok(Row {
            offset: cols.offset.value(row),
            ts_ms,
            ingest_ms: arrival(ingest, row, ts_ms),
            price_minor: cols.price_minor.value(row),
            event_id: start,
            event_id_len,
            partition: cols.partition.value(row),
            quantity: cols.quantity.value(row),
            tenant,
            user,
            item,
            category,
            attributes,
            kind,
        })
    }

    pub(crate) fn event_id(&self, r: &Row) -> &str {
        let ids = &self.event_ids[(r.event_id >> ID_CHUNK_BITS) as usize];
        let start = (r.event_id & (ID_CHUNK as u64 - 1)) as usize;
        &ids[start..start + r.event_id_len as usize]
    }

    /// Overwrites `e` with `r` (but its tenant and user).
    pub(crate) fn fill(&self, r: &Row, e: &mut Event) -> Result<()> {
        fn set(s: &mut String, v: &str) {
            s.clear();
            s.push_str(v);
        }
        set(&mut e.event_id, self.event_id(r));
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

    pub(crate) fn bytes(&self) -> usize {
        self.event_ids.iter().map(String::capacity).sum::<usize>()
            + self.strings.bytes()
            + self.attribute_sets.bytes()
    }

    /// Forgets every string (the memory is kept for reuse).
    pub(crate) fn clear(&mut self) {
        // The first chunk is kept for reuse (the sorted path clears after
        // every user).
        self.event_ids.truncate(1);
        if let Some(c) = self.event_ids.first_mut() {
            c.clear();
        }
        for interner in [&mut self.strings, &mut self.attribute_sets] {
            interner.clear();
            interner
                .intern("")
                .expect("an empty interner numbers a string");
        }
    }
}

/// How a [`Grouper`] numbers the users of the rows it takes, and which it
/// takes.
pub(crate) trait Users: Send + 'static {
    /// A row's user as `(tenant, user)` numbers, or `None`: the row is not
    /// wanted.
    fn number(&mut self, tenant: &str, user: &str) -> Result<Option<(u32, u32)>>;
    /// The tenant and user id of a numbered user.
    fn name(&self, tenant: u32, user: u32) -> (&str, &str);
    /// Memory held, and what ranking adds.
    fn bytes(&self) -> usize;
    /// The users in the order they are visited: per tenant the first global
    /// index, per global index (`first[tenant] + user`) its rank, and per
    /// rank its numbers.
    fn rank(&self) -> Ranking;
}

/// See [`Users::rank`].
pub(crate) struct Ranking {
    pub(crate) first: Vec<usize>,
    pub(crate) rank: Vec<u32>,
    pub(crate) by_rank: Vec<(u32, u32)>,
}

/// Every user, numbered as it comes (tenants, then users per tenant),
/// visited in the byte order of their keys: the fold's users.
pub(crate) struct AllUsers {
    tenants: Interner,
    /// Per tenant: its users' ids.
    users: Vec<Interner>,
    /// The previous row's tenant (tenants change rarely).
    last_tenant: Option<u32>,
}

impl AllUsers {
    pub(crate) fn new() -> AllUsers {
        AllUsers {
            tenants: Interner::new(),
            users: Vec::new(),
            last_tenant: None,
        }
    }
}

impl Users for AllUsers {
    fn number(&mut self, tenant_id: &str, user: &str) -> Result<Option<(u32, u32)>> {
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
        let user = self.users[tenant as usize].intern(user)?;
        Ok(Some((tenant, user)))
    }

    fn name(&self, tenant: u32, user: u32) -> (&str, &str) {
        (
            self.tenants.get(tenant),
            self.users[tenant as usize].get(user),
        )
    }

    /// About 48 bytes a user for sorting the users.
    fn bytes(&self) -> usize {
        let users: usize = self.users.iter().map(Interner::len).sum();
        users * 48 + self.tenants.bytes() + self.users.iter().map(Interner::bytes).sum::<usize>()
    }

    /// Sorted by (tenant, user id), which is the byte order of their keys
    /// (the key encoding preserves string order).
    fn rank(&self) -> Ranking {
        let mut first = Vec::with_capacity(self.users.len());
        let mut by_rank: Vec<(u32, u32)> = Vec::new();
        for (t, users) in self.users.iter().enumerate() {
            first.push(by_rank.len());
            by_rank.extend((0..users.len() as u32).map(|u| (t as u32, u)));
        }
        by_rank.sort_unstable_by(|&(t1, u1), &(t2, u2)| self.name(t1, u1).cmp(&self.name(t2, u2)));
        let mut rank = vec![0u32; by_rank.len()];
        for (r, &(t, u)) in by_rank.iter().enumerate() {
            rank[first[t as usize] + u as usize] = r as u32;
        }
        Ranking {
            first,
            rank,
            by_rank,
        }
    }
}

/// Collects a partition's rows and groups them by user.
pub(crate) struct Grouper<U> {
    rows: Chunked<Row>,
    strings: Strings,
    users: U,
}

/// The grouped rows: users in their visiting order (those with rows), each
/// user's rows in (partition, offset) order.
pub(crate) struct Grouped<U> {
    grouper: Grouper<U>,
    /// Row numbers, user after user.
    order: Vec<u32>,
    /// Per user with rows, in order: ((tenant, user), end of its rows in
    /// `order`).
    users: Vec<((u32, u32), usize)>,
}

impl<U: Users> Grouper<U> {
    pub(crate) fn new(users: U) -> Grouper<U> {
        Grouper {
            rows: Chunked::new(),
            strings: Strings::new(),
            users,
        }
    }

    /// Memory held now, and what grouping will add: 4 bytes a row for the
    /// grouped order, and the users' ranking.
    pub(crate) fn bytes(&self) -> usize {
        self.rows.len() * size_of::<u32>()
            + self.rows.bytes()
            + self.strings.bytes()
            + self.users.bytes()
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

    /// Takes a scanned batch's rows (those of the users `U` wants).
    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.rows.len() + batch.num_rows() > MAX_ROWS {
            return Err(BatchError::Argument(
                "more rows than one grouped partition can number".into(),
            ));
        }
        let cols = EventColumns::new(batch)?;
        let ingest = ingest_column(batch);
        for row in 0..batch.num_rows() {
            let Some(user) = self
                .users
                .number(cols.tenant.value(row), cols.user_id.value(row))?
            else {
                continue;
            };
            let r = self.strings.row(&cols, ingest, row, user)?;
            self.rows.push(r);
        }
        Ok(())
    }

    /// Groups the rows: users in [`Users::rank`] order, each user's rows by
    /// (partition, offset).
    pub(crate) fn finish(self) -> Grouped<U> {
        let Ranking {
            first,
            rank,
            by_rank,
        } = self.users.rank();
        let rank_of = |r: &Row| rank[first[r.tenant as usize] + r.user as usize] as usize;
        // Counting sort of the row numbers by their user's rank.
        let mut ends = vec![0usize; by_rank.len()];
        for row in self.rows.iter() {
            ends[rank_of(row)] += 1;
        }
        let mut next = Vec::with_capacity(ends.len());
        let mut total = 0;
        for n in ends.iter_mut() {
            next.push(total);
            total += *n;
            *n = total;
        }
        let mut order = vec![0u32; self.rows.len()];
        for (i, row) in self.rows.iter().enumerate() {
            let slot = &mut next[rank_of(row)];
            order[*slot] = i as u32;
            *slot += 1;
        }
        let mut users = Vec::new();
        let mut start = 0;
        for (&user, &end) in by_rank.iter().zip(&ends) {
            let rows = &mut order[start..end];
            if rows.len() > 1 {
                rows.sort_unstable_by_key(|&i| {
                    let r = &self.rows[i as usize];
                    (r.partition, r.offset, i)
                });
            }
            if end > start {
                users.push((user, end));
            }
            start = end;
        }
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
    pub(crate) fn into_batches(self, batch_rows: usize) -> IntoBatches<U> {
        IntoBatches {
            grouper: self,
            chunk: 0,
            row: 0,
            batch_rows: batch_rows.max(1),
            builder: SortBatchBuilder::default(),
            event: empty_event(),
        }
    }
}

/// See [`Grouper::into_batches`].
pub(crate) struct IntoBatches<U> {
    grouper: Grouper<U>,
    chunk: usize,
    /// Next row in `chunk`.
    row: usize,
    batch_rows: usize,
    builder: SortBatchBuilder,
    event: Event,
}

impl<U: Users> IntoBatches<U> {
    /// Memory the rows not yet handed over still hold.
    pub(crate) fn bytes(&self) -> usize {
        self.grouper.bytes()
    }

    /// Appends the next row to the builder, freeing each chunk once passed.
    fn append_next(&mut self) -> Result<()> {
        let g = &self.grouper;
        let r = g.rows.chunks[self.chunk][self.row];
        let (tenant, user) = g.users.name(r.tenant, r.user);
        self.event.tenant.clear();
        self.event.tenant.push_str(tenant);
        self.event.user_id.clear();
        self.event.user_id.push_str(user);
        g.strings.fill(&r, &mut self.event)?;
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

impl<U: Users> Iterator for IntoBatches<U> {
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
    /// The current user's next row, in (partition, offset) order.
    Row(&'a Event),
}

impl<U: Users> Grouped<U> {
    /// Every user with rows, in order: its numbers and its row numbers in
    /// (partition, offset) order (read with [`Grouped::row`]).
    pub(crate) fn by_user(&self) -> impl Iterator<Item = ((u32, u32), &[u32])> {
        let mut start = 0;
        self.users.iter().map(move |&(user, end)| {
            let rows = &self.order[start..end];
            start = end;
            (user, rows)
        })
    }

    pub(crate) fn row(&self, i: u32) -> &Row {
        &self.grouper.rows[i as usize]
    }

    pub(crate) fn strings(&self) -> &Strings {
        &self.grouper.strings
    }

    /// Visits every user and its rows.
    pub(crate) fn for_each(&self, mut f: impl FnMut(Visit<'_>) -> Result<()>) -> Result<()> {
        let g = &self.grouper;
        let mut event = empty_event();
        for ((t, u), rows) in self.by_user() {
            let (tenant, user_id) = g.users.name(t, u);
            let partition = rows.first().map_or(0, |&i| self.row(i).partition);
            f(Visit::User(tenant, user_id, partition))?;
            event.tenant.clear();
            event.tenant.push_str(tenant);
            event.user_id.clear();
            event.user_id.push_str(user_id);
            for &i in rows {
                let r = self.row(i);
                g.strings.fill(r, &mut event)?;
                f(Visit::Row(&event))?;
            }
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
