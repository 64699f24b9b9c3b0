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
//! * **Popularity.** Each event adds its kind's weight
//!   ([`weft_core::EventKind::popularity_weight`]), halved for every `half_life` it lies before
//!   the end of the archive's newest day. The top `popular` items are kept
//!   per tenant and per (tenant, category).
//!
//! Stored in the view's `recs` SST file; the keys and encoding (and
//! [`RecsConfig`], recorded in the manifest) are [`weft_view::recs`].

use std::collections::BTreeMap;

use weft_core::Event;
use weft_view::recs::{Ranked, RecsConfig, encode_ranked, neighbours_key, popular_key};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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
    /// Unordered pair (lower index in the high half) to the number of
    /// users.
    pairs: HashMap<u64, u32>,
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
            tenant_index: HashMap::default(),
            items: Vec::new(),
            stats: Vec::new(),
            pairs: HashMap::default(),
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
                self.items.push(HashMap::default());
                i
            }
        };
        self.history.clear();
    }

    pub(crate) fn observe(&mut self, e: &Event) {
        if e.item_id.is_empty() {
            return;
        }
        let weight = e.kind.popularity_weight();
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
        for &(a, b) in pairs.iter() {
            *self.pairs.entry(pair_key(a, b)).or_insert(0) += 1;
        }
        // Each item the user touched counts the user once.
        pairs.clear();
        pairs.extend(history.iter().map(|&(_, i)| (i, 0)));
        pairs.sort_unstable();
        pairs.dedup();
        for &(i, _) in pairs.iter() {
            self.stats[i as usize].2.users += 1;
        }
        history.clear();
    }
}

/// What a partition's [`RecsBuilder`] hands the combining step
/// ([`finish`]), as bytes: how a cluster task sends it to the client.
#[derive(serde::Serialize, serde::Deserialize)]
struct RecsPart {
    tenants: Vec<String>,
    /// (tenant, item, category, users, popularity).
    stats: Vec<(u32, String, String, u64, f64)>,
    pairs: Vec<(u64, u32)>,
}

impl RecsBuilder {
    /// The finished builder's statistics, for [`RecsBuilder::from_bytes`]
    /// in another process.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let part = RecsPart {
            tenants: self.tenants.clone(),
            stats: self
                .stats
                .iter()
                .map(|(t, item, s)| (*t, item.clone(), s.category.clone(), s.users, s.popularity))
                .collect(),
            pairs: self.pairs.iter().map(|(k, n)| (*k, *n)).collect(),
        };
        postcard::to_allocvec(&part).map_err(|e| e.to_string())
    }

    /// A finished builder from [`RecsBuilder::to_bytes`]: enough for
    /// [`finish`], not for observing more users.
    pub(crate) fn from_bytes(config: RecsConfig, bytes: &[u8]) -> Result<RecsBuilder, String> {
        let part: RecsPart = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        let mut b = RecsBuilder::new(config, 0);
        b.tenants = part.tenants;
        b.stats = part
            .stats
            .into_iter()
            .map(|(t, item, category, users, popularity)| {
                (
                    t,
                    item,
                    ItemStats {
                        category,
                        users,
                        popularity,
                    },
                )
            })
            .collect();
        b.pairs = part.pairs.into_iter().collect();
        Ok(b)
    }
}

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a.min(b)) << 32) | u64::from(a.max(b))
}

/// Combines the partitions' builders into the sorted key/value entries of
/// the `recs` SST file. Returns (entries, number of items).
pub(crate) fn finish(
    builders: Vec<RecsBuilder>,
    config: &RecsConfig,
) -> (BTreeMap<Vec<u8>, Vec<u8>>, u64) {
    // Global item table keyed by (tenant, item).
    let mut tenants: Vec<String> = Vec::new();
    // Per tenant: item to global index.
    let mut index: Vec<HashMap<String, u32>> = Vec::new();
    let mut items: Vec<(u32, String, ItemStats)> = Vec::new();
    let mut pairs: HashMap<u64, u64> = HashMap::default();
    pairs.reserve(builders.iter().map(|b| b.pairs.len()).max().unwrap_or(0));
    for b in builders {
        let tenant_ids: Vec<u32> = b
            .tenants
            .iter()
            .map(|t| match tenants.iter().position(|x| x == t) {
                Some(i) => i as u32,
                None => {
                    tenants.push(t.clone());
                    index.push(HashMap::default());
                    (tenants.len() - 1) as u32
                }
            })
            .collect();
        let mut local = Vec::with_capacity(b.stats.len());
        for (tenant, item, stats) in b.stats {
            let tenant = tenant_ids[tenant as usize];
            let g = match index[tenant as usize].get(item.as_str()) {
                Some(g) => *g,
                None => {
                    let g = items.len() as u32;
                    index[tenant as usize].insert(item.clone(), g);
                    items.push((tenant, item, ItemStats::default()));
                    g
                }
            };
            let slot = &mut items[g as usize].2;
            slot.users += stats.users;
            slot.popularity += stats.popularity;
            // Categories of one item agree in practice; keep the largest
            // for determinism across partition orders.
            if stats.category > slot.category {
                slot.category = stats.category;
            }
            local.push(g);
        }
        for (pair, n) in b.pairs {
            let (a, b2) = (local[(pair >> 32) as usize], local[pair as u32 as usize]);
            *pairs.entry(pair_key(a, b2)).or_insert(0) += u64::from(n);
        }
    }
    drop(index);
    let mut out = BTreeMap::new();
    // Best first: score descending, then item id.
    let better = |x: &(u32, f64), y: &(u32, f64)| {
        y.1.total_cmp(&x.1)
            .then_with(|| items[x.0 as usize].1.cmp(&items[y.0 as usize].1))
    };
    let top = |list: &mut Vec<(u32, f64)>, n: usize| -> Ranked {
        if list.len() > n && n > 0 {
            list.select_nth_unstable_by(n - 1, better);
        }
        list.truncate(n);
        list.sort_unstable_by(better);
        list.iter()
            .map(|&(j, s)| (items[j as usize].1.clone(), s))
            .collect()
    };
    // Neighbour lists: every pair in both directions, grouped by item.
    let mut degree = vec![0u32; items.len() + 1];
    for &pair in pairs.keys() {
        degree[(pair >> 32) as usize] += 1;
        degree[pair as u32 as usize] += 1;
    }
    let mut starts = Vec::with_capacity(degree.len());
    let mut total = 0usize;
    for d in &degree {
        starts.push(total);
        total += *d as usize;
    }
    let mut adjacency = vec![(0u32, 0f64); total];
    let mut next = starts.clone();
    for (pair, n) in pairs.drain() {
        let (a, b) = ((pair >> 32) as u32, pair as u32);
        let score = n as f64
            / ((items[a as usize].2.users as f64) * (items[b as usize].2.users as f64)).sqrt();
        adjacency[next[a as usize]] = (b, score);
        next[a as usize] += 1;
        adjacency[next[b as usize]] = (a, score);
        next[b as usize] += 1;
    }
    drop(pairs);
    let mut list = Vec::new();
    for i in 0..items.len() {
        let neighbours = &adjacency[starts[i]..starts[i + 1]];
        if neighbours.is_empty() {
            continue;
        }
        list.clear();
        list.extend_from_slice(neighbours);
        let ranked = top(&mut list, config.neighbours);
        let (tenant, item, _) = &items[i];
        out.insert(
            neighbours_key(&tenants[*tenant as usize], item),
            encode_ranked(&ranked),
        );
    }
    drop(adjacency);
    let mut popular: BTreeMap<(u32, &str), Vec<(u32, f64)>> = BTreeMap::new();
    for (i, (tenant, _, stats)) in items.iter().enumerate() {
        let entry = (i as u32, stats.popularity);
        popular.entry((*tenant, "")).or_default().push(entry);
        if !stats.category.is_empty() {
            popular
                .entry((*tenant, stats.category.as_str()))
                .or_default()
                .push(entry);
        }
    }
    for ((tenant, category), mut list) in popular {
        let ranked = top(&mut list, config.popular);
        out.insert(
            popular_key(&tenants[tenant as usize], category),
            encode_ranked(&ranked),
        );
    }
    (out, items.len() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use weft_core::{Event, EventKind};

    use super::*;

    fn event(tenant: &str, item: &str, category: &str, ts_ms: i64, kind: EventKind) -> Event {
        Event {
            event_id: format!("{item}-{ts_ms}"),
            tenant: tenant.into(),
            user_id: String::new(),
            ts_ms,
            kind,
            item_id: item.into(),
            category: category.into(),
            price_minor: 0,
            quantity: 1,
            attributes: BTreeMap::new(),
        }
    }

    /// Two partitions' statistics sent as bytes (a cluster task's
    /// `recs-*.bin`) combine into the same entries as the builders
    /// themselves.
    /// A user's events: (tenant, [(item, category, ts, kind)]).
    type UserEvents<'a> = (&'a str, &'a [(&'a str, &'a str, i64, EventKind)]);

    #[test]
    fn statistics_survive_the_trip_between_processes() {
        let config = RecsConfig::default();
        let build = |users: &[UserEvents<'_>]| {
            let mut b = RecsBuilder::new(config.clone(), 10 * 86_400_000);
            for (tenant, events) in users {
                b.start_user(tenant);
                for (item, category, ts, kind) in events.iter() {
                    b.observe(&event(tenant, item, category, *ts, *kind));
                }
                b.finish_user();
            }
            b
        };
        let parts = || {
            vec![
                build(&[
                    (
                        "a",
                        &[
                            ("i1", "c1", 1_000, EventKind::View),
                            ("i2", "c1", 2_000, EventKind::Purchase),
                        ],
                    ),
                    (
                        "b",
                        &[
                            ("i1", "c2", 5_000, EventKind::Click),
                            ("i3", "", 6_000, EventKind::AddToCart),
                        ],
                    ),
                ]),
                build(&[(
                    "a",
                    &[
                        ("i2", "c1", 3_000, EventKind::View),
                        ("i1", "c1", 3_500, EventKind::Click),
                    ],
                )]),
            ]
        };
        let direct = finish(parts(), &config);
        let sent = parts()
            .iter()
            .map(|b| RecsBuilder::from_bytes(config.clone(), &b.to_bytes().unwrap()).unwrap())
            .collect();
        let via_bytes = finish(sent, &config);
        assert!(!direct.0.is_empty());
        assert_eq!(direct, via_bytes);
        assert!(RecsBuilder::from_bytes(config, b"\xff\xff").is_err());
    }
}
