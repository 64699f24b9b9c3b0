//! The key layout of the speed store's column families: generation
//! prefixes, offsets, the per-user bucket-record keys of `partials` (and
//! their prefix, which RocksDB's prefix extractor and the holder set use),
//! and the `meta` keys.

use weft_core::keys::push_str;
use weft_core::spec::DAY_MS;

use super::Generation;

pub(super) const CF_PARTIALS: &str = "partials";
pub(super) const CF_OFFSETS: &str = "offsets";
pub(super) const CF_DEDUP: &str = "dedup";
pub(super) const CF_META: &str = "meta";
pub(super) const CF_TRENDING: &str = "trending";
pub(super) const META_SPEC_HASH: &[u8] = b"spec_hash";
pub(super) const META_FORMAT: &[u8] = b"format";
/// The store layout: 4 = bucket records per user and day, dedup ids packed
/// per batch (3 stored one dedup key per event, 2 one partials key per
/// bucket group, 1 one per feature).
pub(super) const STORE_FORMAT: u8 = 4;
pub(super) const META_READY: &[u8] = b"ready_generation";
pub(super) const META_BUILDING: &[u8] = b"building_generation";

/// The `meta` key recording which batch view generation `g` was built
/// from (absent in stores written before rollbacks reached serving: then
/// the view is the generation's number).
pub(super) fn view_key(g: Generation) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..5].copy_from_slice(b"view/");
    k[5..].copy_from_slice(&gen_prefix(g));
    k
}

pub(super) fn gen_prefix(g: Generation) -> [u8; 4] {
    g.to_be_bytes()
}

pub(super) fn offset_key(g: Generation, partition: i32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&gen_prefix(g));
    k[4..].copy_from_slice(&partition.to_be_bytes());
    k
}

/// The generation a key of any column family starts with.
pub(super) fn key_generation(key: &[u8]) -> Option<Generation> {
    key.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Generation::from_be_bytes)
}

/// Key tag of bucket records in the `partials` column family.
pub(super) const GROUP_TAG: u8 = b'u';

/// The length of a bucket record key's [`group_user_prefix`] (generation,
/// tag, tenant, user), or None for other keys: the prefix extractor of the
/// `partials` column family. A seek key that is itself a user prefix maps
/// to itself.
pub(super) fn group_user_prefix_len(key: &[u8]) -> Option<usize> {
    if key.get(4) != Some(&GROUP_TAG) {
        return None;
    }
    weft_core::keys::escaped_strings_end(key, 5, 2)
}

/// A [`SpeedStore::holders`] entry: the generation and a hash of the rest
/// of a [`group_user_prefix`] (tenant and user).
pub(super) fn holder(prefix: &[u8]) -> (Generation, u64) {
    use std::hash::BuildHasher;
    let g = key_generation(prefix).unwrap_or(0);
    let rest = prefix.get(4..).unwrap_or_default();
    (g, foldhash::fast::FixedState::default().hash_one(rest))
}

/// The key prefix of one user's bucket records in generation `g`.
pub(super) fn group_user_prefix(g: Generation, tenant: &str, user: &str) -> Vec<u8> {
    let mut k = gen_prefix(g).to_vec();
    k.push(GROUP_TAG);
    push_str(&mut k, tenant);
    push_str(&mut k, user);
    k
}

/// The day (UTC) a bucket group's bucket starts on: the last part of the
/// key of the record holding it.
pub(super) fn record_day(size: i64, bucket: i64) -> i64 {
    bucket.saturating_mul(size).div_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::keys::push_i64;

    #[test]
    fn the_prefix_extractor_maps_a_group_key_and_its_user_prefix_alike() {
        let prefix = group_user_prefix(7, "acme", "u\u{0}01");
        let mut key = prefix.clone();
        push_i64(&mut key, 86_400_000);
        push_i64(&mut key, 20_000);
        assert_eq!(group_user_prefix_len(&key), Some(prefix.len()));
        assert_eq!(group_user_prefix_len(&prefix), Some(prefix.len()));
        assert_eq!(group_user_prefix_len(&gen_prefix(7)), None);
        assert_eq!(group_user_prefix_len(&offset_key(7, 3)), None);
    }
}
