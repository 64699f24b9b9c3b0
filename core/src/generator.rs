//! A realistic, deterministic event generator (`weft gen`).
//!
//! The model, all of it a pure function of [`GenConfig`] (same seed, same
//! events, byte for byte):
//! * tenants of different sizes share the topic; each has its own users,
//!   catalog and categories;
//! * a user's activity follows a Zipf law (a few heavy shoppers, a long tail),
//!   and each user has two or three favourite categories (latent affinity);
//! * item popularity inside a category is Zipf-distributed, and each item has
//!   a fixed log-normal price;
//! * sessions start as a Poisson process whose rate follows a daily rhythm
//!   (quiet at 04:00 UTC, busy at 20:00) and a weekly one (weekends busier);
//!   a session may start with a search, then views (some via a click), some
//!   viewed items go to the cart, and some carts are bought;
//! * a configurable share of events arrive late (out of order, up to
//!   `max_late_ms` after their event time) and a share are delivered twice
//!   (same event id and payload).
//!
//! [`Generator`] yields events in arrival order, which is the order a producer
//! sends them in. [`Sequencer`] assigns the partition (the same murmur2 as
//! Kafka) and the per-partition offset that a fresh topic would give them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Geometric, Zipf};

use crate::event::{Event, EventKind};
use crate::partition::partition_for_key;
use crate::spec::{DAY_MS, HOUR_MS, MINUTE_MS};

/// 2026-09-01T00:00:00Z: the default start, fixed so runs are reproducible.
pub const DEFAULT_START_MS: i64 = 1_788_220_800_000;

const TENANT_NAMES: [&str; 8] = [
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
];
const CATEGORY_NAMES: [&str; 24] = [
    "shoes",
    "dresses",
    "shirts",
    "jeans",
    "jackets",
    "bags",
    "watches",
    "jewelry",
    "phones",
    "laptops",
    "headphones",
    "cameras",
    "kitchen",
    "bedding",
    "furniture",
    "lighting",
    "toys",
    "books",
    "games",
    "sports",
    "outdoor",
    "beauty",
    "grocery",
    "pets",
];
const DEVICES: [(&str, f64); 3] = [("mobile", 0.6), ("desktop", 0.35), ("tablet", 0.05)];

/// One item of a tenant's generated catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueItem {
    pub item_id: String,
    pub category: String,
    pub price_minor: i64,
    /// Its popularity rank within its category (0: most popular).
    pub rank: u32,
}

/// One tenant's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub name: String,
    /// Share of sessions (relative to the other tenants).
    pub weight: f64,
    pub users: u32,
    pub items: u32,
    pub categories: u32,
}

/// Everything the output depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    pub seed: u64,
    /// Number of events to emit (duplicates included).
    pub events: u64,
    pub start_ms: i64,
    /// The span sessions are spread over; the last late events may arrive up
    /// to `max_late_ms` after it.
    pub days: u32,
    pub tenants: Vec<TenantConfig>,
    /// Share of events delivered a second time.
    pub duplicate_rate: f64,
    /// Share of events that arrive late, out of order.
    pub late_rate: f64,
    pub max_late_ms: i64,
    /// Kafka partitions of the `events` topic.
    pub partitions: u32,
}

impl GenConfig {
    /// A sensible default: `tenants` tenants of decreasing size sharing
    /// `users` users, catalogs scaled to match.
    pub fn new(seed: u64, events: u64, tenants: u32, users: u32) -> GenConfig {
        let tenants = tenants.clamp(1, TENANT_NAMES.len() as u32);
        let weights: Vec<f64> = (0..tenants)
            .map(|i| 1.0 / f64::from(i + 1).powf(1.3))
            .collect();
        let total: f64 = weights.iter().sum();
        let tenants = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let users = ((f64::from(users) * w / total).round() as u32).max(1);
                TenantConfig {
                    name: TENANT_NAMES[i].to_string(),
                    weight: *w,
                    users,
                    items: (users / 5).clamp(50, 200_000),
                    categories: (8 + 4 * (tenants - i as u32)).min(CATEGORY_NAMES.len() as u32),
                }
            })
            .collect();
        GenConfig {
            seed,
            events,
            start_ms: DEFAULT_START_MS,
            days: 30,
            tenants,
            duplicate_rate: 0.005,
            late_rate: 0.01,
            max_late_ms: 2 * DAY_MS,
            partitions: 8,
        }
    }

    /// Checks the configuration can generate anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.tenants.is_empty() {
            return Err("at least one tenant is needed".into());
        }
        for t in &self.tenants {
            if t.users == 0 || t.items == 0 || t.categories == 0 || t.weight <= 0.0 {
                return Err(format!(
                    "tenant '{}' needs users, items, categories and a weight > 0",
                    t.name
                ));
            }
            if t.categories as usize > CATEGORY_NAMES.len() {
                return Err(format!(
                    "tenant '{}': at most {} categories",
                    t.name,
                    CATEGORY_NAMES.len()
                ));
            }
        }
        if self.days == 0 {
            return Err("days must be at least 1".into());
        }
        if self.partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        for (name, rate) in [
            ("duplicate_rate", self.duplicate_rate),
            ("late_rate", self.late_rate),
        ] {
            if !(0.0..=0.5).contains(&rate) {
                return Err(format!("{name} {rate} is outside [0, 0.5]"));
            }
        }
        if self.max_late_ms < MINUTE_MS {
            return Err("max_late_ms must be at least one minute".into());
        }
        Ok(())
    }
}

/// `format!("{prefix}{n:0width$}")` without the formatting machinery (the
/// generator calls it for every item and user id).
fn padded(prefix: char, n: u64, width: usize) -> String {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut v = n;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(1 + width.max(len));
    out.push(prefix);
    for _ in len..width {
        out.push('0');
    }
    for &d in digits[..len].iter().rev() {
        out.push(d as char);
    }
    out
}

/// SplitMix64: cheap, well-mixed hashing of ids into stable attributes.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Tenant {
    cfg: TenantConfig,
    user_zipf: Zipf<f64>,
    /// Zipf over the items of one category.
    item_zipf: Zipf<f64>,
    items_per_category: u32,
    salt: u64,
}

impl Tenant {
    fn user_id(&self, rank: u32) -> String {
        // Spread ranks over ids so heavy users are not simply the first ids:
        // multiplication by an odd constant modulo a power of two is a bijection.
        let span = self.cfg.users.next_power_of_two().max(2);
        let mut id = rank;
        loop {
            id = ((u64::from(id) * 0x9E37_79B1 + 0x7F4A) % u64::from(span)) as u32;
            if id < self.cfg.users {
                break;
            }
        }
        padded('u', u64::from(id), 7)
    }

    fn favourite_categories(&self, rank: u32) -> [u32; 3] {
        let h = mix(self.salt ^ u64::from(rank));
        let c = u64::from(self.cfg.categories);
        [
            (h % c) as u32,
            ((h >> 20) % c) as u32,
            ((h >> 40) % c) as u32,
        ]
    }

    fn item(&self, category: u32, popularity_rank: u32) -> (String, i64) {
        let index = popularity_rank * self.cfg.categories + category;
        let h = mix(self.salt ^ 0xfeed ^ u64::from(index));
        // Log-normal-ish price: 2^(U(0,1)*9) * 199, from 1.99 to about 1000.00.
        let exp = (h % 10_000) as f64 / 10_000.0 * 9.0;
        let price = (199.0 * exp.exp2()).round() as i64;
        (padded('i', u64::from(index), 6), price)
    }
}

/// A pending event: arrival time and a sequence number make the heap order
/// total, hence deterministic.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    arrival_ms: i64,
    seq: u64,
    event: Box<EventOrd>,
}

#[derive(PartialEq, Eq)]
struct EventOrd(Event);

impl PartialOrd for EventOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventOrd {
    fn cmp(&self, _other: &Self) -> std::cmp::Ordering {
        // Never consulted: (arrival_ms, seq) is unique.
        std::cmp::Ordering::Equal
    }
}

/// Yields generated events in arrival order.
pub struct Generator {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    tenants: Vec<Tenant>,
    cumulative_weights: Vec<f64>,
    session_gap: Exp<f64>,
    views: Geometric,
    clock_ms: i64,
    pending: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    next_event_id: u64,
    emitted: u64,
    generated: u64,
    last_arrival_ms: i64,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("emitted", &self.emitted)
            .field("clock_ms", &self.clock_ms)
            .finish_non_exhaustive()
    }
}

/// Mean events per session under the model below, used to size the session
/// rate so that `events` spread over `days`.
const MEAN_EVENTS_PER_SESSION: f64 = 6.0;

impl Generator {
    pub fn new(cfg: GenConfig) -> Result<Generator, String> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let tenants = cfg
            .tenants
            .iter()
            .map(|t| {
                let per_cat = (t.items / t.categories).max(1);
                Ok(Tenant {
                    cfg: t.clone(),
                    user_zipf: Zipf::new(f64::from(t.users), 0.9).map_err(|e| e.to_string())?,
                    item_zipf: Zipf::new(f64::from(per_cat), 1.1).map_err(|e| e.to_string())?,
                    items_per_category: per_cat,
                    salt: rng.random(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let total: f64 = cfg.tenants.iter().map(|t| t.weight).sum();
        let mut acc = 0.0;
        let cumulative_weights = cfg
            .tenants
            .iter()
            .map(|t| {
                acc += t.weight / total;
                acc
            })
            .collect();
        let span_ms = i64::from(cfg.days) * DAY_MS;
        let sessions = (cfg.events as f64 / MEAN_EVENTS_PER_SESSION).max(1.0);
        // Thinning keeps a fraction RHYTHM_MEAN/RHYTHM_MAX of candidates.
        let mean_gap = span_ms as f64 / sessions * (RHYTHM_MEAN / RHYTHM_MAX);
        Ok(Generator {
            session_gap: Exp::new(1.0 / mean_gap.max(1e-3)).map_err(|e| e.to_string())?,
            views: Geometric::new(0.3).map_err(|e| e.to_string())?,
            clock_ms: cfg.start_ms,
            rng,
            tenants,
            cumulative_weights,
            pending: BinaryHeap::new(),
            seq: 0,
            next_event_id: 0,
            emitted: 0,
            generated: 0,
            last_arrival_ms: 0,
            cfg,
        })
    }

    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Every item tenant `tenant` (an index into the config's tenants) can
    /// generate, most popular first within each category: the catalogue a
    /// demo storefront shows.
    pub fn catalogue(&self, tenant: usize) -> Vec<CatalogueItem> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        (0..t.items_per_category)
            .flat_map(|rank| (0..t.cfg.categories).map(move |c| (rank, c)))
            .map(|(rank, c)| {
                let (item_id, price_minor) = t.item(c, rank);
                CatalogueItem {
                    item_id,
                    category: CATEGORY_NAMES[c as usize].to_string(),
                    price_minor,
                    rank,
                }
            })
            .collect()
    }

    /// When the event [`Iterator::next`] returned last arrived: its event
    /// time plus the simulated delay (a late event's is minutes to
    /// `max_late_ms`; a duplicate arrives after its original). Events come
    /// out in arrival order.
    pub fn last_arrival_ms(&self) -> i64 {
        self.last_arrival_ms
    }

    fn push(&mut self, event: Event) {
        let late = self.rng.random_bool(self.cfg.late_rate);
        let delay = if late {
            self.rng.random_range(MINUTE_MS..=self.cfg.max_late_ms)
        } else {
            self.rng.random_range(0..2_000)
        };
        let arrival_ms = event.ts_ms + delay;
        if self.rng.random_bool(self.cfg.duplicate_rate) {
            let again = arrival_ms + self.rng.random_range(10..30_000);
            self.enqueue(again, event.clone());
        }
        self.enqueue(arrival_ms, event);
    }

    fn enqueue(&mut self, arrival_ms: i64, event: Event) {
        self.seq += 1;
        self.generated += 1;
        self.pending.push(Reverse(Pending {
            arrival_ms,
            seq: self.seq,
            event: Box::new(EventOrd(event)),
        }));
    }

    fn event_id(&mut self) -> String {
        self.next_event_id += 1;
        let v = mix(self.cfg.seed) ^ self.next_event_id;
        // "e" and ten hex digits (the low 40 bits), as format!("e{:010x}")
        // would give for ids below 2^40, without the formatting machinery.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(11);
        id.push('e');
        for shift in (0..10).rev() {
            id.push(HEX[((v >> (shift * 4)) & 0xf) as usize] as char);
        }
        id
    }

    /// Generates one session starting at `self.clock_ms`.
    fn session(&mut self) {
        let pick: f64 = self.rng.random();
        let ti = self
            .cumulative_weights
            .iter()
            .position(|w| pick < *w)
            .unwrap_or(self.tenants.len() - 1);
        let t = &self.tenants[ti];
        let rank = (t.user_zipf.sample(&mut self.rng) as u32).saturating_sub(1);
        let tenant = t.cfg.name.clone();
        let user_id = t.user_id(rank);
        let favourites = t.favourite_categories(rank);
        let categories = t.cfg.categories;
        let device = {
            let r: f64 = self.rng.random();
            let mut acc = 0.0;
            DEVICES
                .iter()
                .find(|(_, p)| {
                    acc += p;
                    r < acc
                })
                .map_or("mobile", |(d, _)| d)
        };
        let category = if self.rng.random_bool(0.8) {
            favourites[self.rng.random_range(0..favourites.len())]
        } else {
            self.rng.random_range(0..categories)
        };
        let category_name = CATEGORY_NAMES[category as usize];
        let mut ts = self.clock_ms;
        let base = |this: &mut Generator, ts: i64, kind: EventKind| Event {
            event_id: this.event_id(),
            tenant: tenant.clone(),
            user_id: user_id.clone(),
            ts_ms: ts,
            kind,
            item_id: String::new(),
            category: category_name.to_string(),
            price_minor: 0,
            quantity: 0,
            attributes: BTreeMap::from([("device".to_string(), device.to_string())]),
        };
        if self.rng.random_bool(0.3) {
            let mut e = base(self, ts, EventKind::Search);
            e.attributes.insert(
                "query".into(),
                format!("{category_name} {}", self.rng.random_range(1..50)),
            );
            self.push(e);
            ts += self.rng.random_range(2_000..20_000);
        }
        let views = 1 + self.views.sample(&mut self.rng).min(29);
        let mut cart: Vec<(String, i64, i32)> = Vec::new();
        for _ in 0..views {
            let t = &self.tenants[ti];
            let pop = (t.item_zipf.sample(&mut self.rng) as u32)
                .saturating_sub(1)
                .min(t.items_per_category - 1);
            let (item_id, price) = t.item(category, pop);
            if self.rng.random_bool(0.15) {
                let mut click = base(self, ts, EventKind::Click);
                click.item_id = item_id.clone();
                click
                    .attributes
                    .insert("source".into(), "recommendations".into());
                self.push(click);
                ts += self.rng.random_range(200..3_000);
            }
            let mut view = base(self, ts, EventKind::View);
            view.item_id = item_id.clone();
            view.price_minor = price;
            self.push(view);
            ts += self.rng.random_range(5_000..120_000);
            if self.rng.random_bool(0.12) {
                let qty = if self.rng.random_bool(0.8) {
                    1
                } else {
                    self.rng.random_range(2..=4)
                };
                let mut add = base(self, ts, EventKind::AddToCart);
                add.item_id = item_id.clone();
                add.price_minor = price;
                add.quantity = qty;
                self.push(add);
                cart.push((item_id, price, qty));
                ts += self.rng.random_range(3_000..30_000);
            }
        }
        if !cart.is_empty() && self.rng.random_bool(0.4) {
            ts += self.rng.random_range(30_000..600_000);
            for (item_id, price, qty) in cart {
                let mut buy = base(self, ts, EventKind::Purchase);
                buy.item_id = item_id;
                buy.price_minor = price;
                buy.quantity = qty;
                self.push(buy);
                ts += self.rng.random_range(100..2_000);
            }
        }
    }

    /// Advances the session clock to the next accepted session start.
    fn next_session_start(&mut self) {
        loop {
            self.clock_ms += self.session_gap.sample(&mut self.rng).ceil() as i64;
            let accept: f64 = self.rng.random::<f64>() * RHYTHM_MAX;
            if accept < rhythm(self.clock_ms) {
                return;
            }
        }
    }
}

const RHYTHM_MEAN: f64 = 1.0 * (5.0 + 2.0 * 1.25) / 7.0;
const RHYTHM_MAX: f64 = 1.25 * 1.6;

/// Relative session rate at a time: a daily wave (trough 04:00 UTC, peak
/// 16:00-20:00) times a weekly one (Saturday and Sunday 25 % busier).
pub fn rhythm(ts_ms: i64) -> f64 {
    let hour = (ts_ms.rem_euclid(DAY_MS) as f64) / HOUR_MS as f64;
    let daily = 1.0 + 0.6 * (std::f64::consts::TAU * (hour - 10.0) / 24.0).sin();
    // 1970-01-01 was a Thursday: day 2 and 3 of the week are Sat/Sun.
    let weekday = ts_ms.div_euclid(DAY_MS).rem_euclid(7);
    let weekly = if weekday == 2 || weekday == 3 {
        1.25
    } else {
        1.0
    };
    daily * weekly
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.emitted >= self.cfg.events {
            return None;
        }
        // Events of sessions not yet generated arrive at or after the next
        // session start, so everything pending before it is final.
        loop {
            if let Some(Reverse(top)) = self.pending.peek()
                && (top.arrival_ms <= self.clock_ms || self.generated >= self.cfg.events)
            {
                let Reverse(p) = self.pending.pop()?;
                self.emitted += 1;
                self.last_arrival_ms = p.arrival_ms;
                return Some(p.event.0);
            }
            if self.generated >= self.cfg.events {
                return None;
            }
            self.next_session_start();
            self.session();
        }
    }
}

/// An event with the Kafka coordinates it gets on a fresh topic, and when
/// it arrived (the record's Kafka timestamp: the archive's `_ingest_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
    /// Arrival time, ms since the epoch; the event time when not known.
    pub ingest_ms: i64,
}

/// Assigns partitions (murmur2 of `tenant/user_id`) and per-partition
/// offsets in arrival order.
#[derive(Debug, Clone)]
pub struct Sequencer {
    next: Vec<i64>,
    key: Vec<u8>,
}

impl Sequencer {
    pub fn new(partitions: u32) -> Sequencer {
        Sequencer {
            next: vec![0; partitions as usize],
            key: Vec::with_capacity(64),
        }
    }

    /// The partition and offset of the next record for `key`.
    pub fn assign_key(&mut self, key: &[u8]) -> (i32, i64) {
        let p = partition_for_key(key, self.next.len() as u32);
        let slot = &mut self.next[p as usize];
        let o = *slot;
        *slot += 1;
        (p, o)
    }

    /// [`Sequencer::assign_at`] with the arrival time unknown (taken to be
    /// the event time).
    pub fn assign(&mut self, event: Event) -> Sequenced {
        let ingest_ms = event.ts_ms;
        self.assign_at(event, ingest_ms)
    }

    /// The next coordinates for `event`, which arrived at `ingest_ms`.
    pub fn assign_at(&mut self, event: Event, ingest_ms: i64) -> Sequenced {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.extend_from_slice(event.tenant.as_bytes());
        key.push(b'/');
        key.extend_from_slice(event.user_id.as_bytes());
        let (partition, offset) = self.assign_key(&key);
        self.key = key;
        Sequenced {
            partition,
            offset,
            event,
            ingest_ms,
        }
    }

    /// Next offset per partition (= records per partition so far).
    pub fn end_offsets(&self) -> &[i64] {
        &self.next
    }
}

/// Kinds of malformed records `weft gen` can mix into its Kafka output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Bytes that are not a protobuf `Event`.
    Garbage,
    /// A valid message without a tenant.
    MissingTenant,
    /// Event time in seconds instead of milliseconds.
    SecondsTimestamp,
    /// `kind` left unspecified.
    UnspecifiedKind,
}

impl Malformed {
    pub const ALL: [Malformed; 4] = [
        Malformed::Garbage,
        Malformed::MissingTenant,
        Malformed::SecondsTimestamp,
        Malformed::UnspecifiedKind,
    ];

    /// A malformed record value derived from a real event (so it lands on a
    /// real user's partition, amid valid records).
    pub fn corrupt(self, e: &Event, rng: &mut impl Rng) -> Vec<u8> {
        use prost::Message;
        let mut w = e.to_wire();
        match self {
            Malformed::Garbage => {
                let mut bytes = vec![0xFFu8; 3];
                bytes.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>()));
                return bytes;
            }
            Malformed::MissingTenant => w.tenant.clear(),
            Malformed::SecondsTimestamp => w.ts_ms /= 1000,
            Malformed::UnspecifiedKind => w.kind = 0,
        }
        w.encode_to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::padded;

    #[test]
    fn padded_matches_format() {
        for n in [0u64, 7, 42, 999_999, 1_000_000, 12_345_678, u64::MAX] {
            assert_eq!(padded('u', n, 7), format!("u{n:07}"));
            assert_eq!(padded('i', n, 6), format!("i{n:06}"));
        }
    }
}
