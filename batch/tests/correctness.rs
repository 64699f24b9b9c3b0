//! Every user's features from a published view equal the reference
//! evaluator's, at several query times, both when the rows are grouped in
//! memory and when they go through the external sort that spills.

use std::collections::HashMap;

use weft_core::EventKind;
use weft_core::spec::DAY_MS;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(11, 100_000, 4_000);
    write_archive(&archive, &events);
    let summary = run_job(&archive, &views, example_spec(), 1 << 30).await;
    let m = &summary.manifest;
    assert_eq!(summary.version, 1);
    assert_eq!(
        summary.grouped_in_memory, summary.partitions,
        "a budget larger than the data groups every partition in memory"
    );
    assert_eq!(summary.spills, 0);
    assert_eq!(m.counts.rows, events.len() as u64);
    assert_eq!(m.counts.events, distinct_events(&events));
    assert!(m.counts.duplicates > 0, "the generator sends duplicates");
    // Offsets in a generated archive are contiguous: O_p is the last one.
    for p in 0..8 {
        let last = events
            .iter()
            .filter(|s| s.partition == p)
            .map(|s| s.offset)
            .max()
            .unwrap();
        assert_eq!(m.boundary_of(p), last, "partition {p}");
    }

    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    let expected = by_user(&events);
    assert!(expected.contains_key(&("solo".to_string(), "only-user".to_string())));
    // Recommendations read from RocksDB, then (after the profile check
    // holds the view in memory) from memory.
    check_recommendations(&view, &events);
    assert_view_equals_reference(&view, &expected, &query_times(&events));
    // A user the archive does not hold has no features.
    assert!(
        view.user_partials("solo", "nobody", None)
            .unwrap()
            .is_empty()
    );

    check_recommendations(&view, &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_budget_smaller_than_the_data_spills_and_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    // About 60 MB of rows to sort against the smallest budget (32 MiB).
    let events = generated_events(12, 250_000, 5_000);
    write_archive(&archive, &events);
    let summary = run_job(
        &archive,
        &views,
        example_spec(),
        weft_batch::job::MIN_MEMORY,
    )
    .await;
    assert!(
        summary.grouped_in_memory < summary.partitions,
        "the smallest budget cannot group in memory: {summary:?}"
    );
    assert!(
        summary.spills > 0,
        "the smallest budget must spill: {summary:?}"
    );
    assert!(summary.spilled_bytes > 0);
    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    assert_view_equals_reference(&view, &by_user(&events), &query_times(&events));
}

/// Neighbour lists are well-formed; tenant popularity equals a plain
/// recomputation from the deduplicated events.
fn check_recommendations(view: &weft_view::OpenedView, events: &[weft_core::generator::Sequenced]) {
    let tenant = events[0].event.tenant.clone();
    let config = view.manifest().recs.clone();
    let max_ts = events.iter().map(|s| s.event.ts_ms).max().unwrap();
    let anchor = (max_ts.div_euclid(DAY_MS) + 1) * DAY_MS;
    let mut score: HashMap<String, f64> = HashMap::new();
    for user_events in by_user(events).values() {
        for e in weft_core::reference::dedup(user_events) {
            let w = match e.kind {
                EventKind::View => 1.0,
                EventKind::Click => 2.0,
                EventKind::AddToCart => 4.0,
                EventKind::Purchase => 8.0,
                _ => 0.0,
            };
            if e.tenant == tenant && !e.item_id.is_empty() && w > 0.0 {
                let age = (anchor - e.ts_ms) as f64 / config.half_life_ms as f64;
                *score.entry(e.item_id.clone()).or_default() += w * (-age).exp2();
            }
        }
    }
    let mut want: Vec<(String, f64)> = score.into_iter().collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    want.truncate(config.popular);
    let got = view.popular(&tenant, None).unwrap();
    assert_eq!(got.len(), want.len());
    for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
        assert_eq!(gi, wi);
        assert!(
            (gs - ws).abs() <= 1e-9 * ws.abs().max(1.0),
            "{gi}: {gs} vs {ws}"
        );
    }
    let mut lists = 0;
    for (item, _) in got.iter().take(20) {
        let neighbours = view.neighbours(&tenant, item).unwrap();
        assert!(neighbours.len() <= config.neighbours);
        for pair in neighbours.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "ranked best first");
        }
        for (n, s) in &neighbours {
            assert_ne!(n, item, "an item is not its own neighbour");
            assert!(*s > 0.0 && *s <= 1.0 + 1e-12, "cosine score {s}");
        }
        lists += usize::from(!neighbours.is_empty());
    }
    assert!(lists > 10, "popular items co-occur with others");
    let category_list = view
        .popular(
            &tenant,
            Some(
                &events
                    .iter()
                    .find(|s| s.event.tenant == tenant && !s.event.category.is_empty())
                    .unwrap()
                    .event
                    .category,
            ),
        )
        .unwrap();
    assert!(!category_list.is_empty());
}
