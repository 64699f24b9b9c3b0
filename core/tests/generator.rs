//! The generator is deterministic and realistic in the ways tests rely on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_core::EventKind;
use weft_core::generator::{GenConfig, Generator, Sequencer};

fn generate(seed: u64, n: u64) -> Vec<weft_core::Event> {
    Generator::new(GenConfig::new(seed, n, 4, 5_000))
        .unwrap()
        .collect()
}

#[test]
fn same_seed_same_events() {
    let a = generate(42, 20_000);
    assert_eq!(a.len(), 20_000);
    assert_eq!(a, generate(42, 20_000));
    assert_ne!(a, generate(43, 20_000));
}

#[test]
fn streams_look_like_shopping() {
    let events = generate(1, 100_000);
    let mut per_tenant: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: HashMap<EventKind, usize> = HashMap::new();
    let mut ids: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut users: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut out_of_order = 0;
    for (i, e) in events.iter().enumerate() {
        e.validate().expect("generated events are valid");
        *per_tenant.entry(&e.tenant).or_default() += 1;
        *kinds.entry(e.kind).or_default() += 1;
        *ids.entry((&e.tenant, &e.user_id, &e.event_id)).or_default() += 1;
        users.insert((&e.tenant, &e.user_id));
        if i > 0 && e.ts_ms + 60_000 < events[i - 1].ts_ms {
            out_of_order += 1;
        }
    }
    // Several tenants of clearly different sizes.
    assert_eq!(per_tenant.len(), 4);
    let mut sizes: Vec<usize> = per_tenant.values().copied().collect();
    sizes.sort();
    assert!(sizes[3] > 3 * sizes[0], "tenant sizes {sizes:?}");
    // A funnel: views dominate, purchases are rarer than carts.
    let k = |kind| kinds.get(&kind).copied().unwrap_or(0);
    assert!(k(EventKind::View) > 5 * k(EventKind::AddToCart));
    assert!(k(EventKind::AddToCart) > k(EventKind::Purchase));
    assert!(k(EventKind::Purchase) > 0 && k(EventKind::Search) > 0 && k(EventKind::Click) > 0);
    // Duplicates (~0.5 %) and late events (~1 %).
    let dups: usize = ids.values().map(|c| c - 1).sum();
    assert!((200..1_000).contains(&dups), "{dups} duplicates");
    assert!(out_of_order > 300, "{out_of_order} late events");
    // Zipf users: the busiest user has far more events than the median.
    let mut per_user: HashMap<(&str, &str), usize> = HashMap::new();
    for e in &events {
        *per_user.entry((&e.tenant, &e.user_id)).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_user.values().copied().collect();
    counts.sort();
    assert!(
        counts[counts.len() - 1] > 10 * counts[counts.len() / 2],
        "user activity is skewed"
    );
    assert!(users.len() > 1_000);
}

#[test]
fn a_users_events_share_a_partition_and_offsets_are_dense() {
    let cfg = GenConfig::new(3, 20_000, 3, 1_000);
    let mut seq = Sequencer::new(cfg.partitions);
    let mut partition_of: HashMap<(String, String), i32> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for e in Generator::new(cfg).unwrap() {
        let s = seq.assign(e);
        let p = *partition_of
            .entry((s.event.tenant.clone(), s.event.user_id.clone()))
            .or_insert(s.partition);
        assert_eq!(p, s.partition);
        let prev = last_offset.insert(s.partition, s.offset);
        assert_eq!(s.offset, prev.map_or(0, |o| o + 1));
    }
    assert_eq!(seq.end_offsets().iter().sum::<i64>(), 20_000);
}
