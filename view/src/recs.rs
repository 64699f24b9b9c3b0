//! The read side of the recommendation data stored with each view:
//! item-to-item neighbours from co-occurrence in user histories, and item
//! popularity per tenant and per (tenant, category).
//!
//! Stored in the view's `recs` SST file, keyed
//! `b'n' ‖ str(tenant) ‖ str(item)` (neighbours) and
//! `b'q' ‖ str(tenant) ‖ str(category)` (popularity; the empty category is
//! the whole tenant), each value `[version] ‖ postcard(Vec<(item, score)>)`
//! ranked best first.
//!
//! How the scores are computed (and the builder that computes them from the
//! archive) is `weft_batch::recs`.

use serde::{Deserialize, Serialize};
use weft_core::keys::push_str;

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
