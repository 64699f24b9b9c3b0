//! Recommendation data computed with each batch view: item-to-item
//! neighbours from co-occurrence in user histories, and item popularity per
//! tenant and per (tenant, category).
//!
//! * **Co-occurrence.** In a user's (deduplicated) item events ordered by
//!   time, two different items co-occur when one follows the other within
//!   `window` and at most `lookback` events later. Each user counts a pair
//!   once. The score is the cosine `c(a,b) / sqrt(u(a) * u(b))`, where `u`
//!   is the number of users who touched the item; each item keeps its top
//!   `neighbours` (ties by item id).
//! * **Popularity.** Each event adds its kind's weight (view 1, click 2,
//!   add to cart 4, purchase 8), halved for every `half_life` it lies before
//!   the end of the archive's newest day. The top `popular` items are kept
//!   per tenant and per (tenant, category).
//!
//! Stored in the view's `recs` SST file, keyed
//! `b'n' ‖ str(tenant) ‖ str(item)` (neighbours) and
//! `b'q' ‖ str(tenant) ‖ str(category)` (popularity; the empty category is
//! the whole tenant), each value `[version] ‖ postcard(Vec<(item, score)>)`
//! ranked best first.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use weft_core::keys::push_str;
use weft_core::{Event, EventKind};

/// Key tag of neighbour lists.
pub const NEIGHBOURS_TAG: u8 = b'n';
/// Key tag of popularity lists.
pub const POPULAR_TAG: u8 = b'q';
const RANKED_FORMAT_VERSION: u8 = 1;

/// Tuning of the recommendation data, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecsConfig {
    pub window_ms: i64,
    pub lookback: usize,
    pub neighbours: usize,
    pub popular: usize,
    pub half_life_ms: i64,
}

impl Default for RecsConfig {
    fn default() -> RecsConfig {
        RecsConfig {
            window_ms: weft_core::spec::HOUR_MS,
            lookback: 10,
            neighbours: 20,
            popular: 100,
            half_life_ms: 7 * weft_core::spec::DAY_MS,
        }
    }
}

/// An item and its score, best first.
pub type Ranked = Vec<(String, f64)>;

pub fn neighbours_key(tenant: &str, item: &str) -> Vec<u8> {
    let mut k = vec![NEIGHBOURS_TAG];
    push_str(&mut k, tenant);
    push_str(&mut k, item);
    k
}

/// The popularity key of a category (`""`: the whole tenant).
pub fn popular_key(tenant: &str, category: &str) -> Vec<u8> {
    let mut k = vec![POPULAR_TAG];
    push_str(&mut k, tenant);
    push_str(&mut k, category);
    k
}

pub fn encode_ranked(items: &Ranked) -> Vec<u8> {
    let mut out = vec![RANKED_FORMAT_VERSION];
    out.extend(postcard::to_allocvec(items).expect("ranked lists always encode"));
    out
}

pub fn decode_ranked(bytes: &[u8]) -> Result<Ranked, String> {
    match bytes.split_first() {
        Some((&RANKED_FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| format!("corrupt ranked list: {e}"))
        }
        Some((v, _)) => Err(format!("ranked list format {v} is not supported")),
        None => Err("empty ranked list".into()),
    }
}

fn kind_weight(kind: EventKind) -> f64 {
    match kind {
        EventKind::View => 1.0,
        EventKind::Click => 2.0,
        EventKind::AddToCart => 4.0,
        EventKind::Purchase => 8.0,
        _ => 0.0,
    }
}

#[derive(Debug, Clone, Default)]
struct ItemStats {
    category: String,
    users: u64,
    popularity: f64,
}

/// Accumulates one partition's users (each user wholly in one partition).
#[derive(Debug)]
pub(crate) struct RecsBuilder {
    config: RecsConfig,
    /// Popularity is relative to this time (end of the newest archive day).
    anchor_ms: i64,
    tenants: Vec<String>,
    tenant_index: HashMap<String, u32>,
    /// Per tenant index: item to item index.
    items: Vec<HashMap<String, u32>>,
    stats: Vec<(u32, String, ItemStats)>,
    /// Unordered pair (lower index first) to the number of users.
    pairs: HashMap<(u32, u32), u32>,
    current_tenant: u32,
    /// The current user's item events: (ts, item index).
    history: Vec<(i64, u32)>,
    scratch: Vec<(u32, u32)>,
}

impl RecsBuilder {
    pub(crate) fn new(config: RecsConfig, anchor_ms: i64) -> RecsBuilder {
        RecsBuilder {
            config,
            anchor_ms,
            tenants: Vec::new(),
            tenant_index: HashMap::new(),
            items: Vec::new(),
            stats: Vec::new(),
            pairs: HashMap::new(),
            current_tenant: 0,
            history: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn start_user(&mut self, tenant: &str) {
        self.current_tenant = match self.tenant_index.get(tenant) {
            Some(i) => *i,
            None => {
                let i = self.tenants.len() as u32;
                self.tenants.push(tenant.to_string());
                self.tenant_index.insert(tenant.to_string(), i);
                self.items.push(HashMap::new());
                i
            }
        };
        self.history.clear();
    }

    pub(crate) fn observe(&mut self, e: &Event) {
        if e.item_id.is_empty() {
            return;
        }
        let weight = kind_weight(e.kind);
        if weight == 0.0 {
            return;
        }
        let tenant = self.current_tenant;
        let items = &mut self.items[tenant as usize];
        let index = match items.get(e.item_id.as_str()) {
            Some(i) => *i,
            None => {
                let i = self.stats.len() as u32;
                items.insert(e.item_id.clone(), i);
                self.stats
                    .push((tenant, e.item_id.clone(), ItemStats::default()));
                i
            }
        };
        let stats = &mut self.stats[index as usize].2;
        if !e.category.is_empty() {
            stats.category.clear();
            stats.category.push_str(&e.category);
        }
        let age = (self.anchor_ms - e.ts_ms).max(0) as f64 / self.config.half_life_ms as f64;
        stats.popularity += weight * (-age).exp2();
        self.history.push((e.ts_ms, index));
    }

    pub(crate) fn finish_user(&mut self) {
        let history = &mut self.history;
        history.sort_unstable();
        let pairs = &mut self.scratch;
        pairs.clear();
        for i in 0..history.len() {
            let (ts, item) = history[i];
            for &(earlier_ts, earlier) in history[i.saturating_sub(self.config.lookback)..i].iter()
            {
                if earlier != item && ts - earlier_ts <= self.config.window_ms {
                    pairs.push((item.min(earlier), item.max(earlier)));
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        for pair in pairs.iter() {
            *self.pairs.entry(*pair).or_insert(0) += 1;
        }
        let mut touched: Vec<u32> = history.iter().map(|(_, i)| *i).collect();
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            self.stats[i as usize].2.users += 1;
        }
        history.clear();
    }
}

/// Combines the partitions' builders into the sorted key/value entries of
/// the `recs` SST file. Returns (entries, number of items).
pub(crate) fn finish(
    builders: Vec<RecsBuilder>,
    config: &RecsConfig,
) -> (BTreeMap<Vec<u8>, Vec<u8>>, u64) {
    // Global item table keyed by (tenant, item).
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut items: Vec<(String, String, ItemStats)> = Vec::new();
    let mut pairs: HashMap<(usize, usize), u64> = HashMap::new();
    for b in builders {
        let mut local = Vec::with_capacity(b.stats.len());
        for (tenant, item, stats) in b.stats {
            let key = (b.tenants[tenant as usize].clone(), item);
            let g = *index.entry(key.clone()).or_insert_with(|| {
                items.push((key.0, key.1, ItemStats::default()));
                items.len() - 1
            });
            let slot = &mut items[g].2;
            slot.users += stats.users;
            slot.popularity += stats.popularity;
            if slot.category.is_empty() || !stats.category.is_empty() {
                // Categories of one item agree in practice; keep the largest
                // for determinism across partition orders.
                if stats.category > slot.category {
                    slot.category = stats.category;
                }
            }
            local.push(g);
        }
        for ((a, b2), n) in b.pairs {
            let (a, b2) = (local[a as usize], local[b2 as usize]);
            *pairs.entry((a.min(b2), a.max(b2))).or_insert(0) += u64::from(n);
        }
    }
    let mut out = BTreeMap::new();
    let rank = |list: &mut Vec<(String, f64)>, n: usize| {
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list.truncate(n);
    };
    let mut adjacency: Vec<Vec<(usize, f64)>> = vec![Vec::new(); items.len()];
    for ((a, b), n) in pairs {
        let score = n as f64 / ((items[a].2.users as f64) * (items[b].2.users as f64)).sqrt();
        adjacency[a].push((b, score));
        adjacency[b].push((a, score));
    }
    for (i, neighbours) in adjacency.into_iter().enumerate() {
        if neighbours.is_empty() {
            continue;
        }
        let mut list: Ranked = neighbours
            .into_iter()
            .map(|(j, s)| (items[j].1.clone(), s))
            .collect();
        rank(&mut list, config.neighbours);
        out.insert(
            neighbours_key(&items[i].0, &items[i].1),
            encode_ranked(&list),
        );
    }
    let mut popular: BTreeMap<(String, String), Ranked> = BTreeMap::new();
    for (tenant, item, stats) in &items {
        let entry = (item.clone(), stats.popularity);
        popular
            .entry((tenant.clone(), String::new()))
            .or_default()
            .push(entry.clone());
        if !stats.category.is_empty() {
            popular
                .entry((tenant.clone(), stats.category.clone()))
                .or_default()
                .push(entry);
        }
    }
    for ((tenant, category), mut list) in popular {
        rank(&mut list, config.popular);
        out.insert(popular_key(&tenant, &category), encode_ranked(&list));
    }
    (out, items.len() as u64)
}
