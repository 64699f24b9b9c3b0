//! Recommendations against the blend docs/serving.md and serving/src/recs.rs
//! document, recomputed here from the batch view's neighbours and
//! popularity and the reference profile of each user at the answer's
//! `as_of_ms`: for every user over gRPC, with and without a context item
//! and exclusions, and over HTTP for a share of them (the same answer).
//!
//! | source | weight | reason |
//! |---|---|---|
//! | neighbours of the context item | 2.0 × similarity | SIMILAR_TO_CONTEXT |
//! | neighbours of the i-th most recent item | 0.7^i × similarity | SIMILAR_TO_RECENT |
//! | popular in a top category | 0.5 × share × popularity | POPULAR_IN_CATEGORY |
//! | popular in the tenant, only when the others give fewer than n | 0.1 × popularity | POPULAR |
//!
//! Cold start (no batch view, or none for the tenant): no neighbour rows,
//! and both popularity rows draw on the speed layer's trending items
//! (each applied event's kind weight, halved per day of event time, per
//! tenant and per category; recomputed here from the events) with the
//! reason TRENDING.
//!
//! Each source normalised to its best entry; an item's scores add up and
//! it keeps the reason of its largest contribution; excluded: the request's
//! exclusions, the context item, the user's recent and purchased items;
//! ties by item id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use weft_core::agg::FeatureValue;
use weft_core::eval::Profile;
use weft_core::{Event, FeatureSpec, reference};
use weft_proto::v1;
use weft_view::OpenedView;

use crate::serving::{connect, http_get, widget_key, with_key};

/// Where popularity (and neighbours) come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A batch view: neighbours, and its popularity lists.
    View(&'a OpenedView),
    /// No batch view: the speed layer's trending items.
    Trending(&'a Trending),
}

/// Trending items per (tenant, category) (`""`: the whole tenant), best
/// first, relative to the best.
pub(crate) type Trending = HashMap<(String, String), Vec<(String, f64)>>;

/// The trending lists of the events (each (tenant, user, event id) once),
/// as the speed layer documents them: each event's kind weight halved per
/// day of event time, summed per item, the top 100 kept.
pub(crate) fn trending(by_user: &BTreeMap<(String, String), Vec<Event>>) -> Trending {
    let half_life = weft_speed::store::TRENDING_HALF_LIFE_MS as f64;
    let mut seen = HashSet::new();
    // (tenant, category) -> item -> event times and weights
    type Hits = HashMap<String, Vec<(i64, f64)>>;
    let mut scores: HashMap<(String, String), Hits> = HashMap::new();
    for ((tenant, user), events) in by_user {
        for e in events {
            let w = e.kind.popularity_weight();
            if e.item_id.is_empty() || w == 0.0 || !seen.insert((tenant, user, &e.event_id)) {
                continue;
            }
            let mut categories = vec![String::new()];
            if !e.category.is_empty() {
                categories.push(e.category.clone());
            }
            for c in categories {
                scores
                    .entry((tenant.clone(), c))
                    .or_default()
                    .entry(e.item_id.clone())
                    .or_default()
                    .push((e.ts_ms, w));
            }
        }
    }
    scores
        .into_iter()
        .map(|(key, items)| {
            // Every score at the list's newest event time (the data spans a
            // month, 31 half-lives at most: no underflow), by definition.
            let newest = items.values().flatten().map(|(t, _)| *t).max().unwrap();
            let mut ranked: Vec<(String, f64)> = items
                .into_iter()
                .map(|(item, hits)| {
                    let score: f64 = hits
                        .iter()
                        .map(|(t, w)| w * 0.5f64.powf((newest - t) as f64 / half_life))
                        .sum();
                    (item, score)
                })
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(100);
            let top = ranked[0].1;
            for (_, s) in &mut ranked {
                *s /= top;
            }
            (key, ranked)
        })
        .collect()
}

/// One recommendation as compared: item, reason name, because, score.
#[derive(Debug, Clone, PartialEq)]
struct Pick {
    item: String,
    reason: String,
    because: String,
    score: f64,
    /// Expected picks only: every (reason, because) whose contribution
    /// ties the largest within 1e-9 (equal mathematically: then rounding
    /// decides which the server names, and either is right).
    ties: Vec<(String, String)>,
}

fn list(v: Option<&FeatureValue>) -> Vec<String> {
    match v {
        Some(FeatureValue::List(l)) => l.clone(),
        Some(FeatureValue::Str(s)) => vec![s.clone()],
        Some(FeatureValue::Ranked(r)) => r.iter().map(|(v, _)| v.clone()).collect(),
        _ => Vec::new(),
    }
}

fn normalised(ranked: Vec<(String, f64)>) -> Vec<(String, f64)> {
    let top = ranked.first().map_or(1.0, |(_, s)| *s);
    ranked.into_iter().map(|(i, s)| (i, s / top)).collect()
}

/// A popularity list of `source` (`""`: the whole tenant), normalised.
fn popular_in(source: Source<'_>, tenant: &str, category: &str) -> Vec<(String, f64)> {
    match source {
        Source::View(v) => normalised(
            v.popular(tenant, (!category.is_empty()).then_some(category))
                .unwrap(),
        ),
        Source::Trending(t) => t
            .get(&(tenant.to_string(), category.to_string()))
            .cloned()
            .unwrap_or_default(),
    }
}

/// The documented blend for one request.
fn expected(
    source: Source<'_>,
    profile: &Profile,
    tenant: &str,
    n: usize,
    context: Option<&str>,
    exclude: &[String],
) -> Vec<Pick> {
    let mut recent = list(profile.get("recently_viewed"));
    recent.truncate(5);
    let categories = match profile.get("top_categories_30d") {
        Some(FeatureValue::Ranked(r)) => r.clone(),
        _ => Vec::new(),
    };
    let mut excluded: HashSet<String> = exclude.iter().cloned().collect();
    excluded.extend(list(profile.get("purchased_items_90d")));
    excluded.extend(recent.iter().cloned());
    excluded.extend(context.map(str::to_string));

    // item -> (score, its contributions: value, reason, because), in the
    // order the table lists the sources.
    type Picks = HashMap<String, (f64, Vec<(f64, &'static str, String)>)>;
    fn add(
        picks: &mut Picks,
        excluded: &HashSet<String>,
        item: &str,
        score: f64,
        reason: &'static str,
        because: &str,
    ) {
        if excluded.contains(item) || score <= 0.0 || !score.is_finite() {
            return;
        }
        let e = picks.entry(item.to_string()).or_default();
        e.0 += score;
        e.1.push((score, reason, because.to_string()));
    }
    let mut picks = Picks::new();
    let x = &excluded;
    let view = match source {
        Source::View(v) => Some(v),
        Source::Trending(_) => None,
    };
    let popular = |category: &str| popular_in(source, tenant, category);
    let (category_reason, tenant_reason) = match source {
        Source::View(_) => (
            "RECOMMENDATION_REASON_POPULAR_IN_CATEGORY",
            "RECOMMENDATION_REASON_POPULAR",
        ),
        Source::Trending(_) => (
            "RECOMMENDATION_REASON_TRENDING",
            "RECOMMENDATION_REASON_TRENDING",
        ),
    };
    if let (Some(view), Some(c)) = (view, context) {
        for (other, sim) in normalised(view.neighbours(tenant, c).unwrap()) {
            add(
                &mut picks,
                x,
                &other,
                2.0 * sim,
                "RECOMMENDATION_REASON_SIMILAR_TO_CONTEXT",
                c,
            );
        }
    }
    for (i, item) in recent.iter().enumerate().filter(|_| view.is_some()) {
        let view = view.unwrap();
        for (other, sim) in normalised(view.neighbours(tenant, item).unwrap()) {
            let score = 0.7f64.powi(i as i32) * sim;
            add(
                &mut picks,
                x,
                &other,
                score,
                "RECOMMENDATION_REASON_SIMILAR_TO_RECENT",
                item,
            );
        }
    }
    let total: i64 = categories.iter().map(|(_, c)| *c).sum::<i64>().max(1);
    for (category, count) in &categories {
        let share = *count as f64 / total as f64;
        for (item, pop) in popular(category) {
            let score = 0.5 * share * pop;
            add(&mut picks, x, &item, score, category_reason, category);
        }
    }
    if picks.len() < n {
        for (item, pop) in popular("") {
            add(&mut picks, x, &item, 0.1 * pop, tenant_reason, "");
        }
    }
    let mut out: Vec<Pick> = picks
        .into_iter()
        .map(|(item, (score, parts))| {
            // The first of the largest contributions names the reason.
            let best = parts.iter().map(|p| p.0).fold(0.0, f64::max);
            let (_, reason, because) = parts.iter().find(|p| p.0 == best).unwrap().clone();
            let ties = parts
                .iter()
                .filter(|p| (p.0 - best).abs() <= 1e-9 * best)
                .map(|p| (p.1.to_string(), p.2.clone()))
                .collect();
            Pick {
                item,
                reason: reason.to_string(),
                because,
                score,
                ties,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    out.truncate(n);
    out
}

fn same(got: &[Pick], want: &[Pick]) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            // The expected pick of this item: at this place, or at another
            // whose score ties this place's (rounding broke the tie).
            let Some(w) = want
                .iter()
                .find(|o| o.item == g.item && (o.item == w.item || close(o.score, w.score)))
            else {
                return false;
            };
            ((g.reason == w.reason && g.because == w.because)
                || w.ties.contains(&(g.reason.clone(), g.because.clone())))
                && close(g.score, w.score)
        })
}

/// What a request asks besides the user: (n, context item, exclusions).
type Ask = (usize, Option<String>, Vec<String>);

/// The requests made for the `i`-th user: a plain one; one with the
/// context item of its last event (a neighbour source even for users
/// with no recent views); one excluding the two items the plain answer
/// ranks first (the next ones move up).
fn asks(events: &[Event], plain: &[Pick]) -> Vec<Ask> {
    let mut out = vec![(10, None, Vec::new())];
    if let Some(e) = events.iter().rev().find(|e| !e.item_id.is_empty()) {
        out.push((6, Some(e.item_id.clone()), Vec::new()));
    }
    if plain.len() >= 2 {
        out.push((
            10,
            None,
            plain.iter().take(2).map(|p| p.item.clone()).collect(),
        ));
    }
    out
}

fn grpc_picks(r: &v1::GetRecommendationsResponse) -> Vec<Pick> {
    r.items
        .iter()
        .map(|i| Pick {
            item: i.item_id.clone(),
            reason: v1::RecommendationReason::try_from(i.reason)
                .map(|r| r.as_str_name().to_string())
                .unwrap_or_default(),
            because: i.because.clone(),
            score: i.score,
            ties: Vec::new(),
        })
        .collect()
}

/// Every user's recommendations over gRPC (each [`asks`]) and every
/// tenth user's over HTTP equal the documented blend on `source` (the view
/// the server serves, or the trending items before any view) at the
/// answer's time; returns how many answers were checked, by reason of
/// their first pick.
pub(crate) fn assert_recommendations(
    rt: &tokio::runtime::Runtime,
    spec: &FeatureSpec,
    source: Source<'_>,
    grpc: SocketAddr,
    http: SocketAddr,
    by_user: &BTreeMap<(String, String), Vec<Event>>,
) -> BTreeMap<String, usize> {
    let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
    rt.block_on(async {
        let mut client = connect(grpc).await;
        for ((tenant, user), events) in by_user {
            let mut plain: Vec<Pick> = Vec::new();
            let mut k = 0;
            while k < asks(events, &plain).len() {
                let (n, context, exclude) = asks(events, &plain)[k].clone();
                let r = client
                    .get_recommendations(with_key(
                        v1::GetRecommendationsRequest {
                            user_id: user.clone(),
                            n: n as u32,
                            context_item_id: context.clone().unwrap_or_default(),
                            exclude_item_ids: exclude.clone(),
                        },
                        &widget_key(tenant),
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                let t = r.freshness.as_ref().unwrap().as_of_ms;
                let profile = reference::evaluate(spec, events, t);
                let want = expected(source, &profile, tenant, n, context.as_deref(), &exclude);
                let got = grpc_picks(&r);
                assert!(
                    same(&got, &want),
                    "{tenant}/{user} at {t}, n {n}, context {context:?}, exclude {exclude:?}:\n got {got:#?}\nwant {want:#?}"
                );
                if let Some(p) = got.first() {
                    *firsts.entry(p.reason.clone()).or_default() += 1;
                }
                for p in &got {
                    assert!(!exclude.contains(&p.item) && context.as_ref() != Some(&p.item));
                }
                if k == 0 {
                    plain = got;
                }
                k += 1;
            }
        }
    });
    // HTTP: the same blend through the JSON front end.
    for ((tenant, user), events) in by_user.iter().step_by(10) {
        let context = events
            .iter()
            .rev()
            .find(|e| !e.item_id.is_empty())
            .map(|e| e.item_id.clone());
        let mut path = format!("/v1/recommendations?user_id={user}&n=8");
        if let Some(c) = &context {
            path += &format!("&context_item_id={c}");
        }
        let auth = format!("Bearer {}", widget_key(tenant));
        let (status, body) = http_get(http, &path, &[("authorization", &auth)]);
        assert_eq!(status, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let t = v["freshness"]["as_of_ms"].as_i64().unwrap();
        let got: Vec<Pick> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| Pick {
                item: i["item_id"].as_str().unwrap().to_string(),
                reason: i["reason"].as_str().unwrap().to_string(),
                because: i["because"].as_str().unwrap().to_string(),
                score: i["score"].as_f64().unwrap(),
                ties: Vec::new(),
            })
            .collect();
        let profile = reference::evaluate(spec, events, t);
        let want = expected(source, &profile, tenant, 8, context.as_deref(), &[]);
        assert!(
            same(&got, &want),
            "HTTP {path} at {t}:\n got {got:#?}\nwant {want:#?}"
        );
    }
    firsts
}
