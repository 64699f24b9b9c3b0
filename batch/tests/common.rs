//! Archive fixtures and the reference side of every comparison.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use weft_batch::{BatchConfig, JobProgress, JobSummary};
use weft_core::archive::ArchiveWriter;
use weft_core::eval::compare_profiles;
use weft_core::generator::{GenConfig, Generator, Sequenced, Sequencer};
use weft_core::{Event, EventKind, FeatureSpec, reference};
use weft_view::{BlockCache, OpenedView, ViewStore};

pub(crate) fn example_spec() -> (Arc<FeatureSpec>, String) {
    let text = include_str!("../../deploy/features.example.toml").to_string();
    (Arc::new(FeatureSpec::parse(&text).unwrap()), text)
}

fn event(tenant: &str, user: &str, id: &str, ts_ms: i64, item: &str) -> Event {
    Event {
        event_id: id.into(),
        tenant: tenant.into(),
        user_id: user.into(),
        ts_ms,
        kind: EventKind::Purchase,
        item_id: item.into(),
        category: "books".into(),
        price_minor: 1_999,
        quantity: 2,
        attributes: BTreeMap::from([("device".to_string(), "mobile".to_string())]),
    }
}

/// Generated events (several tenants, duplicates, late events) plus a
/// tenant with a single user and a user with a single event, sequenced
/// into partitions and offsets like the topic, in arrival order.
pub(crate) fn generated_events(seed: u64, events: u64, users: u32) -> Vec<Sequenced> {
    let cfg = GenConfig::new(seed, events, 4, users);
    let first_tenant = cfg.tenants[0].name.clone();
    let start = cfg.start_ms;
    let mut seq = Sequencer::new(cfg.partitions);
    // With the simulated arrival times (late events arrive late).
    let mut generator = Generator::new(cfg).unwrap();
    let mut out: Vec<Sequenced> = Vec::new();
    while let Some(e) = generator.next() {
        out.push(seq.assign_at(e, generator.last_arrival_ms()));
    }
    out.push(seq.assign(event(
        "solo",
        "only-user",
        "solo-1",
        start + 3_600_000,
        "book-1",
    )));
    out.push(seq.assign(event(
        "solo",
        "only-user",
        "solo-2",
        start + 7_200_000,
        "book-2",
    )));
    out.push(seq.assign(event(
        "solo",
        "only-user",
        "solo-1",
        start + 3_600_000,
        "book-1",
    )));
    out.push(seq.assign(event(
        &first_tenant,
        "one-event-user",
        "single-1",
        start + 86_400_000,
        "x-1",
    )));
    out
}

/// Writes events as the archive (gen's file naming, small files).
pub(crate) fn write_archive(root: &Path, events: &[Sequenced]) {
    let mut writer = ArchiveWriter::new(root, "gen", 7_000);
    for s in events {
        writer.push(s).unwrap();
    }
    writer.finish().unwrap();
}

/// Events per (tenant, user), in consumption (offset) order.
pub(crate) fn by_user(events: &[Sequenced]) -> BTreeMap<(String, String), Vec<Event>> {
    let mut sorted: Vec<&Sequenced> = events.iter().collect();
    sorted.sort_by_key(|s| (s.partition, s.offset));
    let mut out: BTreeMap<(String, String), Vec<Event>> = BTreeMap::new();
    for s in sorted {
        out.entry((s.event.tenant.clone(), s.event.user_id.clone()))
            .or_default()
            .push(s.event.clone());
    }
    out
}

/// Several query times spread over the data (and after it).
pub(crate) fn query_times(events: &[Sequenced]) -> Vec<i64> {
    let min = events.iter().map(|s| s.event.ts_ms).min().unwrap();
    let max = events.iter().map(|s| s.event.ts_ms).max().unwrap();
    vec![
        min + 3_600_000,
        min + (max - min) / 2,
        max - 2 * 86_400_000,
        max,
        max + 45 * 86_400_000,
    ]
}

pub(crate) async fn run_job(
    archive: &Path,
    views: &Path,
    spec: (Arc<FeatureSpec>, String),
    memory: usize,
) -> JobSummary {
    let mut config = BatchConfig::new(
        archive.to_str().unwrap(),
        views.to_str().unwrap(),
        spec.0,
        spec.1,
    );
    config.memory_limit = memory;
    config.partitions = 2;
    weft_batch::run(&config, Arc::new(JobProgress::default()))
        .await
        .unwrap()
}

pub(crate) async fn open_current(views: &Path, work: &Path) -> OpenedView {
    let store = ViewStore::open(views.to_str().unwrap(), &Default::default()).unwrap();
    OpenedView::open(&store, None, work, true, &BlockCache::default())
        .await
        .unwrap()
}

/// Asserts that every user's profile from the view equals the reference
/// at every query time, and that the view holds no other user: read from
/// RocksDB, then again with the view held in memory (a limit below its
/// size first, which must leave it on RocksDB).
pub(crate) fn assert_view_equals_reference(
    view: &OpenedView,
    expected: &BTreeMap<(String, String), Vec<Event>>,
    times: &[i64],
) {
    check_view_against_reference(view, expected, times);
    let refused = view.hold_in_memory(1_000).unwrap();
    assert!(!refused.complete, "{refused:?}");
    check_view_against_reference(view, expected, times);
    let held = view.hold_in_memory(u64::MAX).unwrap();
    assert!(
        held.complete && held.entries >= expected.len() as u64,
        "{held:?}"
    );
    check_view_against_reference(view, expected, times);
}

fn check_view_against_reference(
    view: &OpenedView,
    expected: &BTreeMap<(String, String), Vec<Event>>,
    times: &[i64],
) {
    let spec = view.spec();
    let mut checked = 0;
    for ((tenant, user), events) in expected {
        let partials = view.user_partials(tenant, user, None).unwrap();
        for &t in times {
            let want = reference::evaluate(spec, events, t);
            // Read once for any time, and read for t alone (as requests do).
            let at_t = view.user_partials(tenant, user, Some(t)).unwrap();
            for (how, served) in [("all", partials.evaluate(t)), ("at t", at_t.evaluate(t))] {
                if let Err(diff) = compare_profiles(spec, &served, &want) {
                    panic!("{tenant}/{user} at {t}, partials read {how}: {diff}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, expected.len() * times.len());
    assert_eq!(
        view.manifest().counts.users,
        expected.len() as u64,
        "the view holds exactly the expected users"
    );
}

/// The number of distinct (tenant, user, event_id) among events.
pub(crate) fn distinct_events(events: &[Sequenced]) -> u64 {
    let mut seen = HashMap::new();
    for s in events {
        seen.entry((&s.event.tenant, &s.event.user_id, &s.event.event_id))
            .or_insert(());
    }
    seen.len() as u64
}

/// Writes `columns` as one Parquet file (creating its directory).
pub(crate) fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
