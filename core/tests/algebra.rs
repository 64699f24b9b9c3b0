//! Property tests of the aggregate algebra and the encodings.

use std::collections::BTreeMap;

use proptest::prelude::*;
use weft_core::agg::Partial;
use weft_core::codec::{
    BucketGroup, FlatPartial, decode_partial, decode_partial_for, decode_record,
    encode_flat_record_into, encode_partial, encode_record_into,
};
use weft_core::eval::{StoredPartials, UserBuckets, compare_profiles};
use weft_core::keys::{decode_partial_key, partial_key, user_prefix};
use weft_core::reference;
use weft_core::spec::{DAY_MS, HOUR_MS, MINUTE_MS};
use weft_core::{Event, EventKind, FeatureSpec};

/// Every aggregate, several windows, small buckets (so edges are hit often),
/// filters with conditions.
pub(crate) const TEST_SPEC: &str = r#"
[[feature]]
name = "views_1h"
aggregate = "count"
kinds = ["view"]
window = "1h"

[[feature]]
name = "events_2h_5m"
aggregate = "count"
window = "2h"
bucket = "5m"

[[feature]]
name = "spend_24h"
aggregate = "sum"
field = "revenue"
kinds = ["purchase"]
window = "24h"

[[feature]]
name = "min_price_7d"
aggregate = "min"
field = "price"
window = "7d"

[[feature]]
name = "max_qty_lifetime"
aggregate = "max"
field = "quantity"
window = "lifetime"
bucket = "6h"

[[feature]]
name = "avg_price_3d"
aggregate = "avg"
field = "price"
kinds = ["view", "add_to_cart"]
window = "3d"

[[feature]]
name = "last_item_24h"
aggregate = "last"
field = "item_id"
window = "24h"

[[feature]]
name = "last_price_7d"
aggregate = "last"
field = "price"
window = "7d"

[[feature]]
name = "recent_items"
aggregate = "last_n"
field = "item_id"
n = 4
window = "7d"

[[feature]]
name = "recent_items_dups"
aggregate = "last_n"
field = "item_id"
n = 3
distinct = false
window = "2h"

[[feature]]
name = "top_cats_7d"
aggregate = "top_k"
field = "category"
k = 2
window = "7d"

[[feature]]
name = "top_devices"
aggregate = "top_k"
field = "attr.device"
k = 3
window = "lifetime"

[[feature]]
name = "distinct_items_7d"
aggregate = "distinct_count"
field = "item_id"
window = "7d"

[[feature]]
name = "mobile_cheap_views_24h"
aggregate = "count"
kinds = ["view"]
where = [
  { field = "attr.device", op = "in", values = ["mobile", "tablet"] },
  { field = "price", op = "lt", value = 5000 },
  { field = "category", op = "ne", value = "c0" },
]
window = "24h"

[[feature]]
name = "no_device_7d"
aggregate = "count"
where = [{ field = "attr.device", op = "missing" }]
window = "7d"

[[feature]]
name = "first_seen"
aggregate = "first_seen"
window = "lifetime"

[[feature]]
name = "last_seen_24h"
aggregate = "last_seen"
window = "24h"
"#;

pub(crate) fn test_spec() -> FeatureSpec {
    FeatureSpec::parse(TEST_SPEC).expect("test spec is valid")
}

const BASE: i64 = 1_790_000_000_000;

prop_compose! {
    fn arb_event()(
        ts in 0i64..(4 * DAY_MS),
        kind in 0usize..5,
        item in prop::option::weighted(0.9, 0u8..8),
        cat in 0u8..4,
        price in 0i64..10_000,
        quantity in 0i32..4,
        device in prop::option::of(prop::sample::select(vec!["mobile", "desktop", "tablet"])),
        // Whole-minute timestamps make exact ties (resolved by event id) likely.
        round in any::<bool>(),
    ) -> Event {
        let ts = if round { ts - ts % MINUTE_MS } else { ts };
        Event {
            event_id: String::new(),
            tenant: "t".into(),
            user_id: "u".into(),
            ts_ms: BASE + ts,
            kind: EventKind::ALL[kind],
            item_id: item.map(|i| format!("i{i}")).unwrap_or_default(),
            category: format!("c{cat}"),
            price_minor: price,
            quantity,
            attributes: device.map(|d| BTreeMap::from([("device".to_string(), d.to_string())])).unwrap_or_default(),
        }
    }
}

prop_compose! {
    /// A user's consumed stream: unique ids, plus redeliveries of earlier events.
    fn arb_stream()(events in prop::collection::vec(arb_event(), 0..80), dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) -> Vec<Event> {
        let mut out: Vec<Event> = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| { e.event_id = format!("e{:03}", (i * 37) % 1000); e })
            .collect();
        if !out.is_empty() {
            for d in dups {
                let again = out[d.index(out.len())].clone();
                out.push(again);
            }
        }
        out
    }
}

fn arb_query_time() -> impl Strategy<Value = i64> {
    (-(DAY_MS)..(6 * DAY_MS)).prop_map(|d| BASE + d)
}

fn fold(spec: &FeatureSpec, index: usize, events: &[Event]) -> Partial {
    let f = &spec.features[index];
    let mut p = f.aggregate.empty();
    for e in events.iter().filter(|e| f.filter.matches(e)) {
        f.aggregate.update(&mut p, e);
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The heart of it: bucketed evaluation (speed, serving) equals the
    /// reference evaluator for random streams and query times.
    #[test]
    fn bucketed_equals_reference(events in arb_stream(), times in prop::collection::vec(arb_query_time(), 1..6)) {
        let spec = test_spec();
        let mut state = UserBuckets::new(&spec);
        for e in reference::dedup(&events) {
            state.apply(e);
        }
        for t in times {
            let served = state.evaluate(t);
            let expected = reference::evaluate(&spec, &events, t);
            prop_assert_eq!(compare_profiles(&spec, &served, &expected), Ok(()), "t = {}", t);
            // Small cardinalities keep the sketch in exact (list) mode.
            prop_assert_eq!(served, expected);
        }
    }

    /// batch ⊕ speed: state built from a prefix of the stream merged with
    /// state built from the rest equals state built from all of it, at any
    /// split point and query time.
    #[test]
    fn split_merge_equals_whole(events in arb_stream(), split in any::<prop::sample::Index>(), t in arb_query_time()) {
        let spec = test_spec();
        let events: Vec<Event> = reference::dedup(&events).into_iter().cloned().collect();
        let cut = if events.is_empty() { 0 } else { split.index(events.len() + 1) };
        let (mut batch, mut speed, mut whole) = (UserBuckets::new(&spec), UserBuckets::new(&spec), UserBuckets::new(&spec));
        events[..cut].iter().for_each(|e| batch.apply(e));
        events[cut..].iter().for_each(|e| speed.apply(e));
        events.iter().for_each(|e| whole.apply(e));
        batch.merge(&speed);
        prop_assert_eq!(batch.evaluate(t), whole.evaluate(t));
    }

    /// merge is associative and has `empty` as identity; folding an event is
    /// merging its singleton partial; order does not matter.
    #[test]
    fn merge_is_a_monoid(events in arb_stream(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let spec = test_spec();
        let events: Vec<Event> = reference::dedup(&events).into_iter().cloned().collect();
        let n = events.len();
        let (i, j) = { let (x, y) = (a.index(n + 1), b.index(n + 1)); (x.min(y), x.max(y)) };
        for (index, f) in spec.features.iter().enumerate() {
            let agg = &f.aggregate;
            let (pa, pb, pc) = (fold(&spec, index, &events[..i]), fold(&spec, index, &events[i..j]), fold(&spec, index, &events[j..]));
            let mut left = pa.clone();
            agg.merge(&mut left, &pb);
            agg.merge(&mut left, &pc);
            let mut bc = pb.clone();
            agg.merge(&mut bc, &pc);
            let mut right = pa.clone();
            agg.merge(&mut right, &bc);
            prop_assert_eq!(agg.finish(&left), agg.finish(&right), "associativity of {}", f.name);
            let whole = fold(&spec, index, &events);
            prop_assert_eq!(agg.finish(&left), agg.finish(&whole), "merge of parts = fold of whole for {}", f.name);

            let mut with_identity = pa.clone();
            agg.merge(&mut with_identity, &agg.empty());
            prop_assert_eq!(&with_identity, &pa, "right identity of {}", f.name);
            let mut identity_with = agg.empty();
            agg.merge(&mut identity_with, &pa);
            prop_assert_eq!(agg.finish(&identity_with), agg.finish(&pa), "left identity of {}", f.name);

            let mut reversed: Vec<Event> = events.clone();
            reversed.reverse();
            prop_assert_eq!(agg.finish(&fold(&spec, index, &reversed)), agg.finish(&whole), "order independence of {}", f.name);
        }
    }

    /// The owned merge and finish (what a request does with the partials it
    /// read) give exactly what the borrowing ones give, and a whole profile
    /// evaluated by consuming its partials equals the borrowing evaluation
    /// and the reference.
    #[test]
    fn owned_evaluation_equals_borrowed(events in arb_stream(), split in any::<prop::sample::Index>(), t in arb_query_time()) {
        let spec = test_spec();
        let events: Vec<Event> = reference::dedup(&events).into_iter().cloned().collect();
        let cut = split.index(events.len() + 1);
        for (index, f) in spec.features.iter().enumerate() {
            let agg = &f.aggregate;
            let (pa, pb) = (fold(&spec, index, &events[..cut]), fold(&spec, index, &events[cut..]));
            let mut borrowed = pa.clone();
            agg.merge(&mut borrowed, &pb);
            let mut owned = pa;
            agg.merge_owned(&mut owned, pb);
            prop_assert_eq!(&owned, &borrowed, "merge_owned of {}", f.name);
            prop_assert_eq!(agg.finish_owned(owned), agg.finish(&borrowed), "finish_owned of {}", f.name);
        }
        // One partial per event and feature, so buckets hold several.
        let mut parts = StoredPartials::new(&spec);
        for e in &events {
            for (index, f) in spec.features.iter().enumerate() {
                if f.filter.matches(e) {
                    let mut p = f.aggregate.empty();
                    f.aggregate.update(&mut p, e);
                    parts.push_decoded(index, f.window.bucket_of(e.ts_ms), p).unwrap();
                }
            }
        }
        let all = parts.clone().into_profile(t, None);
        prop_assert_eq!(&all, &parts.evaluate(t));
        prop_assert_eq!(&all, &reference::evaluate(&spec, &events, t));
        let some = [spec.features.len() - 1, 0, spec.features.len() - 1];
        prop_assert_eq!(parts.clone().into_profile(t, Some(&some)), parts.evaluate_some(t, Some(&some)));
    }

    /// A bucket record encoded from flat partials (how the speed layer's
    /// batch holds them) is byte for byte the record of their nested
    /// bucket groups, and decodes to them.
    #[test]
    fn flat_record_encodes_as_nested_groups(events in arb_stream()) {
        let spec = test_spec();
        let mut folded: BTreeMap<(i64, i64, u16), Partial> = BTreeMap::new();
        for e in reference::dedup(&events) {
            for (index, f) in spec.features.iter().enumerate().filter(|(_, f)| f.filter.matches(e)) {
                let key = (f.window.bucket_ms, f.window.bucket_of(e.ts_ms), index as u16);
                f.aggregate.update(folded.entry(key).or_insert_with(|| f.aggregate.empty()), e);
            }
        }
        let flat: Vec<FlatPartial> = folded.into_iter().map(|((s, b, i), p)| (s, b, i, p)).collect();
        let mut nested: Vec<BucketGroup> = Vec::new();
        for (s, b, i, p) in &flat {
            match nested.last_mut() {
                Some((ls, lb, group)) if (*ls, *lb) == (*s, *b) => group.push((*i, p.clone())),
                _ => nested.push((*s, *b, vec![(*i, p.clone())])),
            }
        }
        let (mut from_flat, mut from_nested) = (Vec::new(), Vec::new());
        encode_flat_record_into(&mut from_flat, &flat);
        encode_record_into(&mut from_nested, &nested);
        prop_assert_eq!(&from_flat, &from_nested);
        prop_assert_eq!(decode_record(&from_flat).unwrap(), nested);
    }

    /// Partials read for one query time (`StoredPartials::at`, which skips
    /// what the windows do not cover then, undecoded) evaluate there to
    /// exactly what all of them do, through both ways in: stored values
    /// (batch views, in format 2 and in format 3, whose reads stop at a
    /// feature's first bucket older than its window) and decoded partials
    /// (the speed layer). The user is found either way, even when nothing
    /// is in a window.
    #[test]
    fn reading_for_one_time_equals_reading_all(events in arb_stream(), split in any::<prop::sample::Index>(), t in arb_query_time()) {
        let spec = test_spec();
        let events: Vec<Event> = reference::dedup(&events).into_iter().cloned().collect();
        let cut = split.index(events.len() + 1);
        let (packed_part, decoded_part) = events.split_at(cut);
        // The stored part in both view formats: packed by name (format 2)
        // and grouped by feature, newest bucket first (format 3).
        let (mut packed, mut grouped) = (Vec::new(), Vec::new());
        for (index, f) in spec.features.iter().enumerate() {
            let mut buckets: BTreeMap<i64, Partial> = BTreeMap::new();
            for e in packed_part.iter().filter(|e| f.filter.matches(e)) {
                let p = buckets.entry(f.window.bucket_of(e.ts_ms)).or_insert_with(|| f.aggregate.empty());
                f.aggregate.update(p, e);
            }
            for (bucket, p) in &buckets {
                weft_core::keys::push_packed(&mut packed, &f.name, *bucket, &encode_partial(p));
            }
            if !buckets.is_empty() {
                let at = weft_core::keys::begin_group(&mut grouped, index);
                for (bucket, p) in buckets.iter().rev() {
                    weft_core::keys::push_group_entry(&mut grouped, *bucket, &encode_partial(p));
                }
                weft_core::keys::end_group(&mut grouped, at);
            }
        }
        let (mut all, mut at_t) = (StoredPartials::new(&spec), StoredPartials::at(&spec, Some(t)));
        let (mut all_g, mut at_t_g) = (StoredPartials::new(&spec), StoredPartials::at(&spec, Some(t)));
        for (parts, grouped_parts) in [(&mut all, &mut all_g), (&mut at_t, &mut at_t_g)] {
            grouped_parts.push_grouped(&grouped).unwrap();
            parts.push_packed(&packed).unwrap();
            for e in decoded_part {
                for (index, f) in spec.features.iter().enumerate() {
                    if f.filter.matches(e) {
                        let mut p = f.aggregate.empty();
                        f.aggregate.update(&mut p, e);
                        let bucket = f.window.bucket_of(e.ts_ms);
                        grouped_parts.push_decoded(index, bucket, p.clone()).unwrap();
                        parts.push_decoded(index, bucket, p).unwrap();
                    }
                }
            }
        }
        prop_assert!(at_t.len() <= all.len());
        prop_assert_eq!(at_t.found(), !all.is_empty());
        prop_assert_eq!(all_g.len(), all.len());
        prop_assert_eq!(at_t_g.len(), at_t.len());
        prop_assert_eq!(at_t_g.found(), at_t.found());
        let want = all.evaluate(t);
        prop_assert_eq!(&all_g.evaluate(t), &want);
        prop_assert_eq!(&at_t_g.into_profile(t, None), &want);
        prop_assert_eq!(&at_t.evaluate(t), &want);
        prop_assert_eq!(&at_t.into_profile(t, None), &want);
        prop_assert_eq!(&want, &reference::evaluate(&spec, &events, t));
        // Cleared for the next user, nothing of this one is left.
        all.clear();
        prop_assert!(!all.found() && all.is_empty());
    }

    /// Every partial survives the storage encoding unchanged.
    #[test]
    fn partial_encoding_round_trips(events in arb_stream()) {
        let spec = test_spec();
        for (index, f) in spec.features.iter().enumerate() {
            let p = fold(&spec, index, &events);
            let bytes = encode_partial(&p);
            prop_assert_eq!(decode_partial_for(&f.aggregate, &bytes), Ok(p.clone()));
            prop_assert_eq!(decode_partial(&bytes), Ok(p));
        }
    }

    /// Keys sort like the tuples they encode, round-trip, and one user's
    /// prefix never covers another user's keys.
    #[test]
    fn keys_sort_as_tuples(tuples in prop::collection::vec(("[a\\x00\\xff/é]{0,4}", "[b\\x00\\x01]{0,4}", "[fg_]{1,3}", any::<i64>()), 1..40)) {
        let mut by_tuple = tuples.clone();
        by_tuple.sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes(), a.2.as_bytes(), a.3).cmp(&(b.0.as_bytes(), b.1.as_bytes(), b.2.as_bytes(), b.3)));
        let mut by_key: Vec<_> = tuples.iter().map(|t| (partial_key(&t.0, &t.1, &t.2, t.3), t.clone())).collect();
        by_key.sort_by(|a, b| a.0.cmp(&b.0));
        let by_key: Vec<_> = by_key.into_iter().map(|(_, t)| t).collect();
        prop_assert_eq!(&by_key, &by_tuple);
        for t in &tuples {
            let key = partial_key(&t.0, &t.1, &t.2, t.3);
            let decoded = decode_partial_key(&key).expect("own keys decode");
            prop_assert_eq!((&decoded.tenant, &decoded.user_id, &decoded.feature, decoded.bucket), (&t.0, &t.1, &t.2, t.3));
            for other in &tuples {
                let covers = key.starts_with(&user_prefix(&other.0, &other.1));
                prop_assert_eq!(covers, (&t.0, &t.1) == (&other.0, &other.1));
            }
        }
    }
}

#[test]
fn window_edges_slide_by_whole_buckets() {
    let spec = test_spec();
    let views_1h = spec.feature("views_1h").unwrap();
    let e = |ts: i64| Event {
        event_id: format!("e{ts}"),
        tenant: "t".into(),
        user_id: "u".into(),
        ts_ms: ts,
        kind: EventKind::View,
        item_id: "i".into(),
        category: "c".into(),
        price_minor: 1,
        quantity: 1,
        attributes: BTreeMap::new(),
    };
    let t0 = BASE - BASE % HOUR_MS;
    let events = vec![
        e(t0),
        e(t0 + 30 * MINUTE_MS),
        e(t0 + 59 * MINUTE_MS + 59_999),
    ];
    let mut state = UserBuckets::new(&spec);
    events.iter().for_each(|ev| state.apply(ev));
    let at = |t: i64| state.evaluate(t).get(&views_1h.name).cloned();
    use weft_core::FeatureValue::Int;
    // At t0 + 59m59.999s the window's first bucket is [t0, t0+1m): all three.
    assert_eq!(at(t0 + 59 * MINUTE_MS + 59_999), Some(Int(3)));
    // One ms later the bucket holding t0 has left the window.
    assert_eq!(at(t0 + HOUR_MS), Some(Int(2)));
    // An event later than t but inside t's bucket counts ("as of the end of t's bucket").
    assert_eq!(at(t0 + 59 * MINUTE_MS), Some(Int(3)));
    // Before any event: zero.
    assert_eq!(at(t0 - 1), Some(Int(0)));
    for t in [t0 - 1, t0, t0 + HOUR_MS, t0 + 2 * HOUR_MS] {
        assert_eq!(state.evaluate(t), reference::evaluate(&spec, &events, t));
    }
}

#[test]
fn distinct_count_stays_within_its_stated_error_at_high_cardinality() {
    let spec = FeatureSpec::parse("[[feature]]\nname = \"d\"\naggregate = \"distinct_count\"\nfield = \"item_id\"\nwindow = \"30d\"\n").unwrap();
    let events: Vec<Event> = (0..50_000)
        .map(|i| Event {
            event_id: format!("e{i}"),
            tenant: "t".into(),
            user_id: "u".into(),
            ts_ms: BASE + (i as i64 % 20) * DAY_MS,
            kind: EventKind::View,
            item_id: format!("item-{}", i % 20_000),
            category: "c".into(),
            price_minor: 0,
            quantity: 0,
            attributes: BTreeMap::new(),
        })
        .collect();
    let mut state = UserBuckets::new(&spec);
    events.iter().for_each(|e| state.apply(e));
    let t = BASE + 25 * DAY_MS;
    let served = state.evaluate(t);
    let exact = reference::evaluate(&spec, &events, t);
    assert_eq!(exact.get("d"), Some(&weft_core::FeatureValue::Int(20_000)));
    compare_profiles(&spec, &served, &exact).expect("within 6 %");
}

/// "As of t, known at t" (docs/semantics.md): the leading edge is t itself,
/// a late event counts from its arrival, duplicates are dropped among the
/// records known.
#[test]
fn point_in_time_counts_what_was_known_at_t() {
    use weft_core::FeatureValue::Int;
    use weft_core::generator::Sequenced;
    use weft_core::reference::evaluate_known_at;
    let spec = test_spec();
    let t0 = BASE - BASE % HOUR_MS;
    let record = |offset: i64, id: &str, ts: i64, arrival: i64| Sequenced {
        partition: 0,
        offset,
        event: Event {
            event_id: id.into(),
            tenant: "t".into(),
            user_id: "u".into(),
            ts_ms: ts,
            kind: EventKind::View,
            item_id: "i".into(),
            category: "c".into(),
            price_minor: 1,
            quantity: 1,
            attributes: BTreeMap::new(),
        },
        ingest_ms: arrival,
    };
    let t = t0 + 30 * MINUTE_MS;
    let records = vec![
        record(0, "a", t0, t0 + 1),                  // known
        record(1, "b", t, t),                        // exactly at t: known
        record(2, "c", t + 1, t + 1),                // after t, in t's bucket: not known
        record(3, "d", t0 + MINUTE_MS, t + HOUR_MS), // late: arrives after t
        record(4, "e", t0 + 2 * MINUTE_MS, t + 5),   // first delivery after t ...
        record(5, "e", t0 + 2 * MINUTE_MS, t - 5),   // ... its redelivery before: counts
        record(6, "a", t0, t0 + 2),                  // a duplicate of a known event
    ];
    let views = |p: &weft_core::eval::Profile| p.get("views_1h").cloned();
    assert_eq!(views(&evaluate_known_at(&spec, &records, t)), Some(Int(3)));
    // Serving's "as of t" over everything consumed counts c (t's bucket)
    // and d (late) too, and drops the redelivery of e for its first copy.
    let all: Vec<Event> = records.iter().map(|s| s.event.clone()).collect();
    assert_eq!(
        views(&weft_core::reference::evaluate(&spec, &all, t)),
        Some(Int(5))
    );
    // Records that arrived on time and are not after t: the two agree.
    let on_time = [records[0].clone(), records[1].clone()];
    assert_eq!(
        evaluate_known_at(&spec, &on_time, t),
        weft_core::reference::evaluate(&spec, &all[..2], t)
    );
}
