//! The shipped example spec parses and means what it says.

use weft_core::FeatureSpec;
use weft_core::spec::{Aggregate, DAY_MS, Field, HOUR_MS, MINUTE_MS};

#[test]
fn example_spec_parses() {
    let text = include_str!("../../deploy/features.example.toml");
    let spec =
        FeatureSpec::parse(text).unwrap_or_else(|e| panic!("deploy/features.example.toml: {e}"));
    assert!(
        spec.features.len() >= 12,
        "about a dozen features, got {}",
        spec.features.len()
    );

    let views_1h = spec.feature("views_1h").expect("views_1h");
    assert_eq!(views_1h.aggregate, Aggregate::Count);
    assert_eq!(
        (views_1h.window.len_ms, views_1h.window.bucket_ms),
        (Some(HOUR_MS), MINUTE_MS)
    );

    let spend = spec.feature("spend_90d").expect("spend_90d");
    assert_eq!(spend.aggregate, Aggregate::Sum(Field::Revenue));
    assert_eq!(
        (spend.window.len_ms, spend.window.bucket_ms),
        (Some(90 * DAY_MS), DAY_MS)
    );

    let recent = spec.feature("recently_viewed").expect("recently_viewed");
    assert_eq!(
        recent.aggregate,
        Aggregate::LastN {
            field: Field::ItemId,
            n: 20,
            distinct: true
        }
    );

    assert_eq!(
        spec.feature("top_categories_30d").map(|f| &f.aggregate),
        Some(&Aggregate::TopK {
            field: Field::Category,
            k: 5
        })
    );
    assert!(
        spec.feature("distinct_items_30d")
            .expect("distinct")
            .aggregate
            .is_approximate()
    );
    for name in [
        "views_24h",
        "views_7d",
        "carts_7d",
        "purchases_90d",
        "first_seen",
        "last_seen",
    ] {
        assert!(spec.feature(name).is_some(), "{name} is defined");
    }
    assert_eq!(spec.hash().len(), 16);
}

/// Views record the spec hash, and a serving process refuses a view whose
/// hash differs from its spec's: the hash of the same text must never
/// change. This is the value the spec reader computed before it became
/// serde structs.
#[test]
fn example_spec_hash_is_pinned() {
    let spec = FeatureSpec::parse(include_str!("../../deploy/features.example.toml")).unwrap();
    assert_eq!(spec.hash(), "c5b447cf9d4108ea");
}
