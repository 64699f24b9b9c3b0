//! Durations as the spec writes them (`15m`, `24h`, `7d`, `2w`), and the
//! default bucket of a window.

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// Most buckets one window may span; bounds the work of one evaluation.
pub const MAX_BUCKETS_PER_WINDOW: i64 = 10_000;
/// Bucket sizes the default rule picks from (docs/semantics.md).
pub const STANDARD_BUCKETS_MS: [i64; 6] = [
    MINUTE_MS,
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    HOUR_MS,
    6 * HOUR_MS,
    DAY_MS,
];
/// The default rule aims for at least this many buckets per window, so the
/// trailing edge moves in steps of at most 1/24 of the window.
pub const TARGET_BUCKETS_PER_WINDOW: i64 = 24;

/// Parses `90d`, `24h`, `15m`, `2w` into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 15m, 24h, 7d or 2w"))?;
    let unit_ms = match unit {
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => WEEK_MS,
        _ => {
            return Err(format!(
                "'{s}' has unit '{unit}'; use m (minutes), h, d or w"
            ));
        }
    };
    if n <= 0 {
        return Err(format!("'{s}' must be positive"));
    }
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= 100 * 365 * DAY_MS)
        .ok_or_else(|| format!("'{s}' is longer than 100 years"))
}

/// Formats milliseconds in the largest whole unit (`7d`, `90m`).
pub fn format_duration(ms: i64) -> String {
    for (unit, size) in [
        ("w", WEEK_MS),
        ("d", DAY_MS),
        ("h", HOUR_MS),
        ("m", MINUTE_MS),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The default bucket for a window: the largest standard size that divides
/// it into at least [`TARGET_BUCKETS_PER_WINDOW`] buckets; failing that, the
/// smallest standard size that divides it.
pub fn default_bucket(len_ms: Option<i64>) -> Option<i64> {
    let Some(len) = len_ms else {
        return Some(DAY_MS);
    };
    STANDARD_BUCKETS_MS
        .iter()
        .rev()
        .find(|&&b| len % b == 0 && len / b >= TARGET_BUCKETS_PER_WINDOW)
        .or_else(|| STANDARD_BUCKETS_MS.iter().find(|&&b| len % b == 0))
        .copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_follow_the_rule() {
        let b =
            |w: &str| format_duration(default_bucket(Some(parse_duration(w).unwrap())).unwrap());
        assert_eq!(b("1h"), "1m");
        assert_eq!(b("24h"), "1h");
        assert_eq!(b("7d"), "6h");
        assert_eq!(b("30d"), "1d");
        assert_eq!(b("90d"), "1d");
        assert_eq!(b("2h"), "5m");
        assert_eq!(b("10m"), "1m");
        assert_eq!(default_bucket(None), Some(DAY_MS));
    }
}
