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

/// The view's partials files are split by Kafka partition (each lists the
/// partition whose users it holds), and a shard that opens only some
/// partitions holds exactly their users, each equal to the reference;
/// a view from before the split opens whole only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_opens_only_its_partitions_users() {
    use std::collections::BTreeSet;
    use weft_config::PartitionSet;
    use weft_core::eval::compare_profiles;
    use weft_view::format::FileKind;
    use weft_view::{BlockCache, OpenedView, ViewStore};

    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(12, 30_000, 2_000);
    write_archive(&archive, &events);
    run_job(&archive, &views, example_spec(), 1 << 30).await;
    let store = ViewStore::open(views.to_str().unwrap(), &Default::default()).unwrap();
    let manifest = store.manifest(1).await.unwrap();
    let partials: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Partials)
        .collect();
    let split: BTreeSet<i32> = partials.iter().map(|f| f.partition.unwrap()).collect();
    let expected: BTreeSet<i32> = events.iter().map(|s| s.partition).collect();
    assert_eq!(split, expected, "one or more files per Kafka partition");
    for f in &partials {
        let k = f.partition.unwrap();
        assert!(f.name.starts_with(&format!("partials-p{k}-")), "{f:?}");
    }

    // Each user's partition: its events' (the producers put them in one).
    let by = by_user(&events);
    let partition_of: HashMap<(String, String), i32> = events
        .iter()
        .map(|s| {
            (
                (s.event.tenant.clone(), s.event.user_id.clone()),
                s.partition,
            )
        })
        .collect();
    let times = query_times(&events);
    let mut held = 0;
    for owned in ["0-2", "3-7"] {
        let owned = PartitionSet::parse(owned).unwrap();
        let work = tempfile::tempdir().unwrap();
        let view = OpenedView::open_partitions(
            &store,
            None,
            work.path(),
            true,
            &BlockCache::default(),
            Some(&owned),
        )
        .await
        .unwrap();
        let spec = view.spec().clone();
        for (key @ (tenant, user), user_events) in &by {
            let partials = view.user_partials(tenant, user, None).unwrap();
            if !owned.contains(partition_of[key]) {
                assert!(partials.is_empty(), "shard {owned} holds {tenant}/{user}");
                continue;
            }
            held += 1;
            for &t in &times {
                let want = weft_core::reference::evaluate(&spec, user_events, t);
                compare_profiles(&spec, &partials.evaluate(t), &want)
                    .unwrap_or_else(|d| panic!("shard {owned}: {tenant}/{user} at {t}: {d}"));
            }
        }
        // The recommendation file is every shard's.
        let tenant = &events[0].event.tenant;
        assert!(
            !view.popular(tenant, None).unwrap().is_empty(),
            "shard {owned} reads {tenant}'s popular items"
        );
    }
    assert_eq!(held, by.len(), "the two shards hold every user once");

    // A view from before the split (format 3) opens whole, not in part.
    let path = views.join("v000001/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"format\":4", "\"format\":3")
            .replace("\"format\": 4", "\"format\": 3"),
    )
    .unwrap();
    assert_eq!(store.manifest(1).await.unwrap().format, 3);
    let work = tempfile::tempdir().unwrap();
    let e = OpenedView::open_partitions(
        &store,
        None,
        work.path(),
        true,
        &BlockCache::default(),
        Some(&PartitionSet::parse("0-3").unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("view format 3 is not split by Kafka partition"),
        "{e}"
    );
    let whole = open_current(&views, work.path()).await;
    assert_eq!(whole.manifest().counts.users, by.len() as u64);
}
