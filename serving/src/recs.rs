//! Recommendations: the batch view's item neighbours and popularity,
//! blended with the user's merged (batch ⊕ speed) profile, so an item
//! viewed a second ago already steers the picks.
//!
//! Scores, each source normalised to its best entry:
//!
//! | source | weight | reason |
//! |---|---|---|
//! | neighbours of the context item | 2.0 × similarity | `SIMILAR_TO_CONTEXT` |
//! | neighbours of the i-th most recent item (i = 0, 1, ..) | 0.7^i × similarity | `SIMILAR_TO_RECENT` |
//! | popular in a top category, by the category's share of the user's top list | 0.5 × share × popularity | `POPULAR_IN_CATEGORY` |
//! | popular in the tenant (fills up to n; all an unknown user gets) | 0.1 × popularity | `POPULAR` |
//!
//! Cold start: when the batch view has no popularity for the tenant (there
//! is no view yet, or the tenant is newer than it), both popularity rows
//! draw on the speed layer's trending items instead (decayed counts per
//! tenant and category of the events after the view's boundary,
//! `weft_speed::store` `trending`), with the same weights and the reason
//! `TRENDING` (`because`: the category, empty for the whole tenant).
//! Neighbours need a batch view; without one the neighbour rows add
//! nothing.
//!
//! An item reached from several sources adds the scores and keeps the
//! reason of its largest contribution. Excluded: the items the user bought
//! (the purchased-items feature), the request's exclusions, the context item,
//! and the user's recent items. Ties rank by item id, so answers are
//! deterministic.

use std::collections::{HashMap, HashSet};

use weft_core::agg::FeatureValue;
use weft_proto::v1::{Recommendation, RecommendationReason};

use crate::config::RecsConfig;
use crate::error::ApiError;
use crate::state::{Pair, Serving};

const CONTEXT_WEIGHT: f64 = 2.0;
const RECENT_DECAY: f64 = 0.7;
const CATEGORY_WEIGHT: f64 = 0.5;
const POPULAR_WEIGHT: f64 = 0.1;
/// How many trending items a cold-start answer draws on per list (as many
/// as a batch view keeps per popularity list by default).
const TRENDING_ITEMS: usize = 100;

/// Positions in the spec of the features recommendations read.
#[derive(Debug, Clone, Default)]
pub struct RecsFeatures {
    recent: Option<usize>,
    categories: Option<usize>,
    purchased: Option<usize>,
    recent_items: usize,
}

impl RecsFeatures {
    /// Resolves the configured feature names; a name the spec lacks is an
    /// error naming the key.
    pub fn resolve(serving: &Serving, config: &RecsConfig) -> Result<RecsFeatures, String> {
        let find = |key: &str, name: &Option<String>| -> Result<Option<usize>, String> {
            match name {
                None => Ok(None),
                Some(n) => serving.feature_index(n).map(Some).ok_or_else(|| {
                    format!(
                        "recommendations.{key}: the feature spec has no feature {n:?} (set it to one of its features, or remove it)"
                    )
                }),
            }
        };
        Ok(RecsFeatures {
            recent: find("recent_items_feature", &config.recent_items_feature)?,
            categories: find("top_categories_feature", &config.top_categories_feature)?,
            purchased: find("purchased_items_feature", &config.purchased_items_feature)?,
            recent_items: config.recent_items,
        })
    }

    fn indices(&self) -> Vec<usize> {
        [self.recent, self.categories, self.purchased]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// What a recommendation request asks for (validated).
#[derive(Debug)]
pub struct RecsRequest<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub n: usize,
    pub context_item: Option<&'a str>,
    pub exclude: &'a [String],
    pub t_ms: i64,
}

#[derive(Default)]
struct Candidate {
    score: f64,
    best: f64,
    reason: i32,
    because: String,
}

fn list(v: Option<&FeatureValue>) -> Vec<String> {
    match v {
        Some(FeatureValue::List(l)) => l.clone(),
        Some(FeatureValue::Str(s)) => vec![s.clone()],
        Some(FeatureValue::Ranked(r)) => r.iter().map(|(v, _)| v.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Picks up to `req.n` items for the user.
pub fn recommend(
    serving: &Serving,
    features: &RecsFeatures,
    pair: &Pair,
    req: &RecsRequest<'_>,
) -> Result<Vec<Recommendation>, ApiError> {
    let indices = features.indices();
    let profile = serving.profile(pair, req.tenant, req.user, req.t_ms, Some(&indices))?;
    let value = |i: Option<usize>| i.and_then(|i| profile.value(i));

    let mut recent = list(value(features.recent));
    recent.truncate(features.recent_items);
    let categories: Vec<(String, i64)> = match value(features.categories) {
        Some(FeatureValue::Ranked(r)) => r.clone(),
        _ => Vec::new(),
    };
    let mut excluded: HashSet<&str> = req.exclude.iter().map(String::as_str).collect();
    let purchased = list(value(features.purchased));
    excluded.extend(purchased.iter().map(String::as_str));
    excluded.extend(recent.iter().map(String::as_str));
    excluded.extend(req.context_item);

    let mut picks: HashMap<String, Candidate> = HashMap::new();
    let add = |picks: &mut HashMap<String, Candidate>,
               item: &str,
               score: f64,
               reason: RecommendationReason,
               because: &str| {
        if excluded.contains(item) || score <= 0.0 || !score.is_finite() {
            return;
        }
        let c = picks.entry(item.to_string()).or_default();
        c.score += score;
        if score > c.best {
            c.best = score;
            c.reason = reason as i32;
            c.because = because.to_string();
        }
    };
    let normalised = |ranked: &[(String, f64)]| {
        let top = ranked
            .first()
            .map_or(1.0, |(_, s)| *s)
            .max(f64::MIN_POSITIVE);
        ranked
            .iter()
            .map(|(i, s)| (i.clone(), s / top))
            .collect::<Vec<_>>()
    };

    // Popularity: the batch view's, or the speed layer's trending items
    // when the view has none for the tenant (no view yet, or a tenant newer
    // than the view).
    let view = pair.view.as_deref();
    let batch_popular = match view {
        Some(v) => v.popular(req.tenant, None)?,
        None => Vec::new(),
    };
    let cold = batch_popular.is_empty();
    let popular = |category: &str| -> Result<Vec<(String, f64)>, ApiError> {
        match view {
            Some(v) if !cold => Ok(normalised(
                &v.popular(req.tenant, (!category.is_empty()).then_some(category))?,
            )),
            _ => serving
                .speed()
                .trending(pair.generation, req.tenant, category, TRENDING_ITEMS)
                .map_err(ApiError::from),
        }
    };
    let (category_reason, tenant_reason) = if cold {
        (
            RecommendationReason::Trending,
            RecommendationReason::Trending,
        )
    } else {
        (
            RecommendationReason::PopularInCategory,
            RecommendationReason::Popular,
        )
    };

    if let Some(view) = view {
        if let Some(item) = req.context_item {
            for (other, sim) in normalised(&view.neighbours(req.tenant, item)?) {
                add(
                    &mut picks,
                    &other,
                    CONTEXT_WEIGHT * sim,
                    RecommendationReason::SimilarToContext,
                    item,
                );
            }
        }
        let mut weight = 1.0;
        for item in &recent {
            for (other, sim) in normalised(&view.neighbours(req.tenant, item)?) {
                add(
                    &mut picks,
                    &other,
                    weight * sim,
                    RecommendationReason::SimilarToRecent,
                    item,
                );
            }
            weight *= RECENT_DECAY;
        }
    }
    let total: i64 = categories.iter().map(|(_, c)| *c).sum::<i64>().max(1);
    for (category, count) in &categories {
        let share = *count as f64 / total as f64;
        for (item, pop) in popular(category)? {
            add(
                &mut picks,
                &item,
                CATEGORY_WEIGHT * share * pop,
                category_reason,
                category,
            );
        }
    }
    if picks.len() < req.n {
        let tenant_wide = if cold {
            popular("")?
        } else {
            normalised(&batch_popular)
        };
        for (item, pop) in tenant_wide {
            add(&mut picks, &item, POPULAR_WEIGHT * pop, tenant_reason, "");
        }
    }
    let mut out: Vec<Recommendation> = picks
        .into_iter()
        .map(|(item_id, c)| Recommendation {
            item_id,
            score: c.score,
            reason: c.reason,
            because: c.because,
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.item_id.cmp(&b.item_id))
    });
    out.truncate(req.n);
    Ok(out)
}
