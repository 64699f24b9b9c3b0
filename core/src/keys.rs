//! Order-preserving key encoding for the speed view and batch views.
//!
//! A partial's key is
//! `b'p' ‖ str(tenant) ‖ str(user_id) ‖ str(feature) ‖ i64(bucket)`, where
//! `str` escapes `0x00` as `0x00 0xFF` and ends with `0x00 0x01`, and `i64` is
//! big-endian with the sign bit flipped. Byte order therefore equals the order
//! of the tuple (tenant, user, feature, bucket) with strings compared
//! bytewise and buckets numerically, and every tenant's and every user's keys
//! form one contiguous range with a prefix of its own: a point lookup of a
//! profile is a single prefix scan, and a tenant's data can never be read
//! through another tenant's prefix.

/// The keyspace tag of partials. Other keyspaces (offsets, dedup state)
/// use other tags, so they never interleave with profile data.
pub const PARTIAL_TAG: u8 = b'p';

/// A key that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed key at byte {at}: {problem}")]
pub struct KeyError {
    pub at: usize,
    pub problem: &'static str,
}

/// Appends an order-preserving, self-delimiting encoding of `s`.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Ids never hold a NUL (they are validated): copy them whole.
    if !bytes.contains(&0) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Appends an order-preserving encoding of `v`.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

/// Decodes an integer written by [`push_i64`].
pub fn decode_i64(raw: [u8; 8]) -> i64 {
    (u64::from_be_bytes(raw) ^ (1 << 63)) as i64
}

/// The exclusive upper bound of the keys starting with `prefix`, a prefix
/// made of [`push_str`] fields (it ends with the terminator `0x00 0x01`, so
/// bumping its last byte cannot overflow and bounds exactly its keys).
pub fn prefix_upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut upper = prefix.to_vec();
    if let Some(last) = upper.last_mut() {
        *last += 1;
    }
    upper
}

/// The prefix of every key of one tenant.
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = vec![PARTIAL_TAG];
    push_str(&mut k, tenant);
    k
}

/// The prefix of every key of one user.
pub fn user_prefix(tenant: &str, user_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + user_id.len() + 5);
    push_user_prefix(&mut k, tenant, user_id);
    k
}

/// Appends [`user_prefix`] to `out` (no allocation when `out` has room).
pub fn push_user_prefix(out: &mut Vec<u8>, tenant: &str, user_id: &str) {
    out.push(PARTIAL_TAG);
    push_str(out, tenant);
    push_str(out, user_id);
}

/// The key of one feature's partial for one bucket.
pub fn partial_key(tenant: &str, user_id: &str, feature: &str, bucket: i64) -> Vec<u8> {
    let mut k = user_prefix(tenant, user_id);
    push_str(&mut k, feature);
    push_i64(&mut k, bucket);
    k
}

/// A decoded partial key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartialKey {
    pub tenant: String,
    pub user_id: String,
    pub feature: String,
    pub bucket: i64,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn err(&self, problem: &'static str) -> KeyError {
        KeyError {
            at: self.at,
            problem,
        }
    }

    fn string(&mut self) -> Result<String, KeyError> {
        let mut out = Vec::new();
        loop {
            match self.bytes.get(self.at..self.at + 1) {
                None => return Err(self.err("unterminated string")),
                Some([0]) => {
                    match self.bytes.get(self.at + 1) {
                        Some(0xFF) => out.push(0),
                        Some(0x01) => {
                            self.at += 2;
                            return String::from_utf8(out)
                                .map_err(|_| self.err("string is not UTF-8"));
                        }
                        _ => return Err(self.err("bad escape after 0x00")),
                    }
                    self.at += 2;
                }
                Some([b]) => {
                    out.push(*b);
                    self.at += 1;
                }
                Some(_) => unreachable!("a one-byte slice"),
            }
        }
    }

    fn i64(&mut self) -> Result<i64, KeyError> {
        let raw: [u8; 8] = self
            .bytes
            .get(self.at..self.at + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.err("truncated integer"))?;
        self.at += 8;
        Ok(decode_i64(raw))
    }
}

/// The length of a partial key's [`user_prefix`] (tag, tenant, user), or
/// None for other keys: the prefix extractor of batch views, so a lookup
/// skips every SST file whose prefix bloom filter lacks the user.
pub fn user_prefix_len(key: &[u8]) -> Option<usize> {
    if key.first() != Some(&PARTIAL_TAG) {
        return None;
    }
    escaped_strings_end(key, 1, 2)
}

/// Where `count` strings encoded by [`push_str`] from `at` end in `key`
/// (None if the key ends first).
pub fn escaped_strings_end(key: &[u8], mut at: usize, count: usize) -> Option<usize> {
    for _ in 0..count {
        loop {
            match key.get(at..at + 2)? {
                [0, 0x01] => {
                    at += 2;
                    break;
                }
                [0, _] => at += 2,
                _ => at += 1,
            }
        }
    }
    Some(at)
}

/// Decodes the `str(feature) ‖ i64(bucket)` end of a partial key (what
/// follows [`user_prefix`]), borrowing the name when it needs no unescaping:
/// the read path of a point lookup allocates nothing per entry.
pub fn decode_partial_suffix(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, str>, i64), KeyError> {
    let mut r = Reader { bytes, at: 0 };
    let feature = match bytes.iter().position(|&b| b == 0) {
        Some(end) if bytes.get(end + 1) == Some(&0x01) => {
            r.at = end + 2;
            std::borrow::Cow::Borrowed(
                std::str::from_utf8(&bytes[..end]).map_err(|_| r.err("string is not UTF-8"))?,
            )
        }
        _ => std::borrow::Cow::Owned(r.string()?),
    };
    let bucket = r.i64()?;
    if r.at != bytes.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok((feature, bucket))
}

/// Decodes a key made by [`partial_key`].
pub fn decode_partial_key(bytes: &[u8]) -> Result<PartialKey, KeyError> {
    let mut r = Reader { bytes, at: 1 };
    if bytes.first() != Some(&PARTIAL_TAG) {
        return Err(KeyError {
            at: 0,
            problem: "not a partial key",
        });
    }
    let key = PartialKey {
        tenant: r.string()?,
        user_id: r.string()?,
        feature: r.string()?,
        bucket: r.i64()?,
    };
    if r.at != bytes.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok(key)
}

/// Appends one entry to a packed user value (batch view format 2: one
/// value per user under [`user_prefix`], holding every partial of the
/// user): `u32 len ‖ str(feature) ‖ i64(bucket) ‖ u32 len ‖ partial`.
pub fn push_packed(out: &mut Vec<u8>, feature: &str, bucket: i64, partial: &[u8]) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    push_str(out, feature);
    push_i64(out, bucket);
    let suffix = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&suffix.to_be_bytes());
    out.extend_from_slice(&(partial.len() as u32).to_be_bytes());
    out.extend_from_slice(partial);
}

/// The entries of a packed user value ([`push_packed`]): feature (borrowed
/// unless escaped), bucket and the encoded partial.
pub fn unpack(bytes: &[u8]) -> Unpacked<'_> {
    Unpacked { bytes, at: 0 }
}

/// Iterator of [`unpack`].
#[derive(Debug)]
pub struct Unpacked<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Unpacked<'a> {
    fn chunk(&mut self) -> Result<&'a [u8], KeyError> {
        let err = |problem| KeyError {
            at: self.at,
            problem,
        };
        let len: [u8; 4] = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| err("truncated length"))?;
        let start = self.at + 4;
        let end = start + u32::from_be_bytes(len) as usize;
        let chunk = self
            .bytes
            .get(start..end)
            .ok_or_else(|| err("truncated entry"))?;
        self.at = end;
        Ok(chunk)
    }
}

impl<'a> Iterator for Unpacked<'a> {
    type Item = Result<(std::borrow::Cow<'a, str>, i64, &'a [u8]), KeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let entry = self.chunk().and_then(|suffix| {
            let (feature, bucket) = decode_partial_suffix(suffix)?;
            Ok((feature, bucket, self.chunk()?))
        });
        if entry.is_err() {
            self.at = self.bytes.len(); // stop after the first error
        }
        Some(entry)
    }
}

// ------------------------------------------------- grouped (view format 3)

/// Starts feature `index`'s group in a grouped user value (batch view
/// format 3: one value per user under [`user_prefix`], holding every
/// partial of the user, feature by feature). A group is
/// `varint(index) ‖ u32le(length of the entries) ‖ entries`, each entry
/// `varint(zigzag(bucket)) ‖ varint(len) ‖ partial`, newest bucket first.
/// `index` is the feature's position in the spec, whose hash the view
/// records. Returns where [`end_group`] writes the length.
pub fn begin_group(out: &mut Vec<u8>, index: usize) -> usize {
    push_varint(out, index as u64);
    out.extend_from_slice(&[0; 4]);
    out.len() - 4
}

/// Appends one entry to the group begun last; entries go in descending
/// bucket order.
pub fn push_group_entry(out: &mut Vec<u8>, bucket: i64, partial: &[u8]) {
    push_varint(out, ((bucket << 1) ^ (bucket >> 63)) as u64);
    push_varint(out, partial.len() as u64);
    out.extend_from_slice(partial);
}

/// Closes the group begun by [`begin_group`] at `at`.
pub fn end_group(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn push_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}

/// Reads a LEB128 varint at `*at` (prost's, as protobuf writes them).
fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, KeyError> {
    let mut rest = bytes.get(*at..).unwrap_or_default();
    let before = rest.len();
    let v = prost::encoding::decode_varint(&mut rest).map_err(|_| KeyError {
        at: *at,
        problem: "truncated or overlong varint",
    })?;
    *at += before - rest.len();
    Ok(v)
}

/// The groups of a grouped user value ([`begin_group`]): each feature
/// index with its entries.
pub fn groups(bytes: &[u8]) -> Groups<'_> {
    Groups { bytes, at: 0 }
}

/// Iterator of [`groups`].
#[derive(Debug)]
pub struct Groups<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Groups<'a> {
    type Item = Result<(usize, GroupEntries<'a>), KeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let group = (|| {
            let index = read_varint(self.bytes, &mut self.at)?;
            let err = |at, problem| KeyError { at, problem };
            let len: [u8; 4] = self
                .bytes
                .get(self.at..self.at + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or(err(self.at, "truncated group length"))?;
            let start = self.at + 4;
            let end = start + u32::from_le_bytes(len) as usize;
            let entries = self
                .bytes
                .get(start..end)
                .ok_or(err(start, "truncated group"))?;
            self.at = end;
            let index =
                usize::try_from(index).map_err(|_| err(start, "feature index too large"))?;
            Ok((
                index,
                GroupEntries {
                    bytes: entries,
                    at: 0,
                },
            ))
        })();
        if group.is_err() {
            self.at = self.bytes.len(); // stop after the first error
        }
        Some(group)
    }
}

/// The (bucket, partial) entries of one group, newest bucket first.
#[derive(Debug)]
pub struct GroupEntries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for GroupEntries<'a> {
    type Item = Result<(i64, &'a [u8]), KeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let entry = (|| {
            let zz = read_varint(self.bytes, &mut self.at)?;
            let bucket = (zz >> 1) as i64 ^ -((zz & 1) as i64);
            let len = read_varint(self.bytes, &mut self.at)?;
            let start = self.at;
            let partial = usize::try_from(len)
                .ok()
                .and_then(|len| self.bytes.get(start..start.checked_add(len)?))
                .ok_or(KeyError {
                    at: start,
                    problem: "truncated partial",
                })?;
            self.at = start + partial.len();
            Ok((bucket, partial))
        })();
        if entry.is_err() {
            self.at = self.bytes.len();
        }
        Some(entry)
    }
}

/// Decodes a key made by [`user_prefix`] into (tenant, user).
pub fn decode_user_key(bytes: &[u8]) -> Result<(String, String), KeyError> {
    let mut r = Reader { bytes, at: 1 };
    if bytes.first() != Some(&PARTIAL_TAG) {
        return Err(KeyError {
            at: 0,
            problem: "not a user key",
        });
    }
    let user = (r.string()?, r.string()?);
    if r.at != bytes.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok(user)
}

#[cfg(test)]
mod packed_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn packed_values_round_trip_and_truncation_is_an_error() {
        let entries = [
            ("views_7d", 3_i64, vec![1_u8, 2]),
            ("odd\u{0}name", -1, vec![]),
            ("x", 9, vec![7; 300]),
        ];
        let mut packed = Vec::new();
        for (f, b, p) in &entries {
            push_packed(&mut packed, f, *b, p);
        }
        let back: Vec<(String, i64, Vec<u8>)> = unpack(&packed)
            .map(|e| e.map(|(f, b, p)| (f.into_owned(), b, p.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<(String, i64, Vec<u8>)> = entries
            .iter()
            .map(|(f, b, p)| (f.to_string(), *b, p.clone()))
            .collect();
        assert_eq!(back, want);
        for cut in [1, 5, packed.len() - 1] {
            assert!(unpack(&packed[..cut]).any(|e| e.is_err()), "cut at {cut}");
        }
        let key = user_prefix("t\u{0}", "u");
        assert_eq!(
            decode_user_key(&key).unwrap(),
            ("t\u{0}".into(), "u".into())
        );
        assert!(decode_user_key(&partial_key("t", "u", "f", 1)).is_err());
    }

    /// Feature index and its (bucket, partial) entries.
    type Group = (usize, Vec<(i64, Vec<u8>)>);

    #[test]
    fn grouped_values_round_trip_and_damage_is_an_error() {
        let groups_in: Vec<Group> = vec![
            (
                0,
                vec![(i64::MAX, vec![1, 2]), (5, vec![]), (-1, vec![9; 200])],
            ),
            (300, vec![(i64::MIN, vec![7])]),
            (2, vec![(63, vec![0; 130]), (-64, vec![3])]),
        ];
        let (mut packed, mut ends) = (Vec::new(), Vec::new());
        for (index, entries) in &groups_in {
            let at = begin_group(&mut packed, *index);
            for (bucket, p) in entries {
                push_group_entry(&mut packed, *bucket, p);
            }
            end_group(&mut packed, at);
            ends.push(packed.len());
        }
        let back: Vec<Group> = groups(&packed)
            .map(|g| {
                let (index, entries) = g.unwrap();
                let entries = entries.map(|e| e.map(|(b, p)| (b, p.to_vec())).unwrap());
                (index, entries.collect())
            })
            .collect();
        assert_eq!(back, groups_in);
        // Cut anywhere but between groups: an error, never a panic or a
        // silent short read.
        for cut in (1..packed.len()).filter(|c| !ends.contains(c)) {
            let damaged = groups(&packed[..cut]).any(|g| match g {
                Err(_) => true,
                Ok((_, mut entries)) => entries.any(|e| e.is_err()),
            });
            assert!(damaged, "cut at {cut}");
        }
        assert!(groups(&[0x80; 11]).any(|g| g.is_err()), "overlong varint");
    }
}

#[cfg(test)]
mod suffix_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn suffixes_decode_with_and_without_escapes() {
        for feature in ["views_7d", "odd\u{0}name", ""] {
            let key = partial_key("t", "u", feature, -42);
            let prefix = user_prefix("t", "u");
            let (f, b) = decode_partial_suffix(&key[prefix.len()..]).unwrap();
            assert_eq!((f.as_ref(), b), (feature, -42));
            assert_eq!(
                matches!(f, std::borrow::Cow::Borrowed(_)),
                !feature.contains('\0')
            );
        }
        let key = partial_key("t", "u", "f", 1);
        let prefix = user_prefix("t", "u");
        assert!(decode_partial_suffix(&key[prefix.len()..key.len() - 1]).is_err());
        for (t, u) in [("t", "u"), ("a\u{0}b", ""), ("", "x\u{0}")] {
            let prefix = user_prefix(t, u);
            assert_eq!(user_prefix_len(&prefix), Some(prefix.len()));
            assert_eq!(
                user_prefix_len(&partial_key(t, u, "f", 3)),
                Some(prefix.len())
            );
        }
        assert_eq!(user_prefix_len(b"n\x00\x01"), None);
        assert_eq!(user_prefix_len(&prefix[..prefix.len() - 1]), None);
    }
}
