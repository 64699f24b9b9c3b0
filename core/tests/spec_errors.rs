//! Every message the spec reader gives, one case each, as the
//! hand-written reader gave them before the spec became serde structs:
//! a spec with one problem gets the same message, naming the same feature
//! and key.

use weft_core::FeatureSpec;

const CASES: &[(&str, &str)] = &[
    (
        r#"x = 1"#,
        r#"key 'x': unknown top-level key (expected [[feature]] and [[segment]] tables)"#,
    ),
    (r#""#, r#"key 'feature': the spec defines no features"#),
    (
        r#"feature = 1"#,
        r#"key 'feature': expected an array of tables ([[feature]])"#,
    ),
    (
        r#"feature = [1]"#,
        r#"key 'feature': entry #1 is not a table"#,
    ),
    (
        r#"segment = 1
[[feature]]
name = "v"
aggregate = "count"
window = "7d"
"#,
        r#"key 'segment': expected an array of tables ([[segment]])"#,
    ),
    (
        r#"segment = [1]
[[feature]]
name = "v"
aggregate = "count"
window = "7d"
"#,
        r#"key 'segment[0]': is not a table"#,
    ),
    (
        r#"a = 1
[[feature]]
name = "v"
aggregate = "count"
window = "7d"
"#,
        r#"key 'a': unknown top-level key (expected [[feature]] and [[segment]] tables)"#,
    ),
    (
        r#"zz = 1
[[feature]]
name = "v"
aggregate = "count"
window = "7d"
"#,
        r#"key 'zz': unknown top-level key (expected [[feature]] and [[segment]] tables)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
[[feature]]
name = "v"
aggregate = "count"
window = "7d"
"#,
        r#"feature 'v': key 'name': defined more than once"#,
    ),
    (
        r#"[[feature]]
aggregate = "count"
window = "7d"
"#,
        r#"feature '#1': key 'name': required but missing"#,
    ),
    (
        r#"[[feature]]
name = 1
aggregate = "count"
window = "7d"
"#,
        r#"feature '#1': key 'name': expected a string, got integer"#,
    ),
    (
        r#"[[feature]]
name = "Bad"
aggregate = "count"
window = "7d"
"#,
        r#"feature 'Bad': key 'name': 'Bad' must be 1-64 characters of a-z, 0-9 and _, starting with a letter"#,
    ),
    (
        r#"[[feature]]
name = ["v"]
aggregate = "count"
window = "7d"
"#,
        r#"feature '#1': key 'name': expected a string, got array"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
k = 3
window = "7d"
"#,
        r#"feature 'v': key 'k': only top_k takes k"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
n = 5
window = "7d"
"#,
        r#"feature 'v': key 'n': only last_n takes n"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
distinct = true
window = "7d"
"#,
        r#"feature 'v': key 'distinct': only last_n takes distinct"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
k = 0
window = "7d"
"#,
        r#"feature 'v': key 'k': 0 is outside 1..=1000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
n = 1001
window = "7d"
"#,
        r#"feature 'v': key 'n': 1001 is outside 1..=1000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
k = "x"
window = "7d"
"#,
        r#"feature 'v': key 'k': expected an integer, got string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
n = 1.5
window = "7d"
"#,
        r#"feature 'v': key 'n': expected an integer, got float"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
k = 5000000000
window = "7d"
"#,
        r#"feature 'v': key 'k': 5000000000 is outside 1..=1000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
distinct = "yes"
window = "7d"
"#,
        r#"feature 'v': key 'distinct': expected true or false, got string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
n = -1
window = "7d"
"#,
        r#"feature 'v': key 'n': -1 is outside 1..=1000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
field = "revenue"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'count' takes no field, got 'revenue'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
field = "attr."
window = "7d"
"#,
        r#"feature 'v': key 'field': unknown field 'attr.' (expected item_id, category, kind, price, quantity, revenue or attr.<name>)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
field = 1
window = "7d"
"#,
        r#"feature 'v': key 'field': expected a string, got integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
field = true
window = "7d"
"#,
        r#"feature 'v': key 'field': expected a string, got boolean"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "sum"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'sum' needs a numeric field"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "sum"
field = "category"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'sum' needs a numeric field (price, quantity, revenue), got 'category'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "last"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'last' needs a  field"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "last_n"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'last_n' needs a string field"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "last_n"
field = "revenue"
window = "7d"
"#,
        r#"feature 'v': key 'field': aggregate 'last_n' needs a string field (item_id, category, kind, attr.<name>), got 'revenue'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "last_n"
field = "category"
window = "7d"
"#,
        r#"feature 'v': key 'n': aggregate 'last_n' needs n"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "top_k"
field = "category"
window = "7d"
"#,
        r#"feature 'v': key 'k': aggregate 'top_k' needs k"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "median"
window = "7d"
"#,
        r#"feature 'v': key 'aggregate': unknown aggregate 'median' (expected count, sum, min, max, avg, last, last_n, top_k, distinct_count, first_seen, last_seen)"#,
    ),
    (
        r#"[[feature]]
name = "v"
window = "7d"
"#,
        r#"feature 'v': key 'aggregate': required but missing"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = 1
window = "7d"
"#,
        r#"feature 'v': key 'aggregate': expected a string, got integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = "view"
window = "7d"
"#,
        r#"feature 'v': key 'kinds': expected a list of kinds, got string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = []
window = "7d"
"#,
        r#"feature 'v': key 'kinds': empty list; omit the key to match every kind"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = ["nope"]
window = "7d"
"#,
        r#"feature 'v': key 'kinds': String("nope") is not an event kind (expected view, click, add_to_cart, purchase, search)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = [1]
window = "7d"
"#,
        r#"feature 'v': key 'kinds': Integer(1) is not an event kind (expected view, click, add_to_cart, purchase, search)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = [1979-05-27]
window = "7d"
"#,
        r#"feature 'v': key 'kinds': Datetime(Datetime { date: Some(Date { year: 1979, month: 5, day: 27 }), time: None, offset: None }) is not an event kind (expected view, click, add_to_cart, purchase, search)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = ["view", 2]
window = "7d"
"#,
        r#"feature 'v': key 'kinds': Integer(2) is not an event kind (expected view, click, add_to_cart, purchase, search)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = { a = 1 }
window = "7d"
"#,
        r#"feature 'v': key 'kinds': expected a list of kinds, got table"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
kinds = [["view"]]
window = "7d"
"#,
        r#"feature 'v': key 'kinds': Array([String("view")]) is not an event kind (expected view, click, add_to_cart, purchase, search)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = 1
window = "7d"
"#,
        r#"feature 'v': key 'where': expected a list of conditions, got integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [1]
window = "7d"
"#,
        r#"feature 'v': key 'where[0]': expected a table like { field = "category", op = "eq", value = "shoes" }"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = "x"
window = "7d"
"#,
        r#"feature 'v': key 'where': expected a list of conditions, got string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = { field = "price", op = "gt", value = 1 }
window = "7d"
"#,
        r#"feature 'v': key 'where': expected a list of conditions, got table"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "eq", value = 1, extra = 2 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].extra': unknown key (expected field, op, value, values)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ op = "eq", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].field': required string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "colour", op = "eq", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].field': unknown field 'colour'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].op': required string"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "like", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].op': unknown op 'like' (expected eq, ne, in, not_in, gt, gte, lt, lte, exists, missing)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "eq" }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].value': op 'eq' needs a value"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "eq", value = true }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].value': expected a string or an integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "eq", value = "x" }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].value': Str("x") does not have the type of field 'price'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "category", op = "eq", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].value': Int(1) does not have the type of field 'category'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "category", op = "in" }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].values': op 'in' needs a list of values"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "category", op = "in", values = [] }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].values': empty list"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "category", op = "in", values = [true] }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].values': expected strings or integers"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "category", op = "gt", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].op': op 'gt' needs a numeric field, got 'category'"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "gt", value = "x" }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].value': op 'gt' needs an integer value"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ field = "price", op = "gt", value = 1, colour = 2, zebra = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].colour': unknown key (expected field, op, value, values)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
where = [{ aaa = 1, field = "price", op = "gt", value = 1 }]
window = "7d"
"#,
        r#"feature 'v': key 'where[0].aaa': unknown key (expected field, op, value, values)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
"#,
        r#"feature 'v': key 'window': required but missing"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = 7
"#,
        r#"feature 'v': key 'window': expected a string, got integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7x"
"#,
        r#"feature 'v': key 'window': '7x' has unit 'x'; use m (minutes), h, d or w"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "x"
"#,
        r#"feature 'v': key 'window': 'x' is not a duration like 15m, 24h, 7d or 2w"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "0d"
"#,
        r#"feature 'v': key 'window': '0d' must be positive"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "99999999w"
"#,
        r#"feature 'v': key 'window': '99999999w' is longer than 100 years"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "90d"
bucket = "7d"
"#,
        r#"feature 'v': key 'bucket': 1w does not divide the window 90d evenly"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
bucket = 1
"#,
        r#"feature 'v': key 'bucket': expected a string, got integer"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "90d"
bucket = "1m"
"#,
        r#"feature 'v': key 'bucket': 129600 buckets per window; at most 10000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "5200w"
"#,
        r#"feature 'v': key 'bucket': 36400 buckets per window; at most 10000"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
bucket = "0m"
"#,
        r#"feature 'v': key 'bucket': '0m' must be positive"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "lifetime"
bucket = "x"
"#,
        r#"feature 'v': key 'bucket': 'x' is not a duration like 15m, 24h, 7d or 2w"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = 1979-05-27
"#,
        r#"feature 'v': key 'window': expected a string, got datetime"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
colour = 1
"#,
        r#"feature 'v': key 'colour': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
Window = "7d"
"#,
        r#"feature 'v': key 'Window': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
aaa = 1
"#,
        r#"feature 'v': key 'aaa': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
zzz = 1
"#,
        r#"feature 'v': key 'zzz': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
description = "x"
"#,
        r#"feature 'v': key 'description': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
bucket_ms = 1
"#,
        r#"feature 'v': key 'bucket_ms': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "v"
aggregate = "count"
window = "7d"
a = 1
zzz = 2
"#,
        r#"feature 'v': key 'a': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
colour = 1
all = [{ feature = "spend", op = "exists" }]
"#,
        r#"key 'segment[0].colour': unknown key (expected name, all, description)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
all = [{ feature = "spend", op = "exists" }]
"#,
        r#"key 'segment[0].name': expected a non-empty string"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
"#,
        r#"key 'segment[0].all': expected a list of predicates like { feature = "views_7d", op = "gte", value = 3 }"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = []
"#,
        r#"key 'segment[0].all': is empty"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [1]
"#,
        r#"key 'segment[0].all[0]': is not a table"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend", op = "exists", extra = 1 }]
"#,
        r#"key 'segment[0].all[0].extra': unknown key (expected feature, op, value)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ op = "exists" }]
"#,
        r#"key 'segment[0].all[0].feature': expected a feature name"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "nope", op = "exists" }]
"#,
        r#"key 'segment[0].all[0].feature': the spec has no feature 'nope'"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend" }]
"#,
        r#"key 'segment[0].all[0].op': unknown operator None (expected gt, gte, lt, lte, eq, ne, contains, exists, missing)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend", op = "between", value = 1 }]
"#,
        r#"key 'segment[0].all[0].op': unknown operator Some("between") (expected gt, gte, lt, lte, eq, ne, contains, exists, missing)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend", op = "gt", value = true }]
"#,
        r#"key 'segment[0].all[0].value': expected a number or a string"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend", op = "gt" }]
"#,
        r#"key 'segment[0].all[0].value': does not fit the operator (gt/gte/lt/lte: a number; eq/ne: a number or string; contains: a string; exists/missing: no value)"#,
    ),
    (
        r#"[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"
[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
[[segment]]
name = "x"
all = [{ feature = "spend", op = "exists" }]
[[segment]]
name = "x"
all = [{ feature = "spend", op = "exists" }]
"#,
        r#"key 'segment[1].name': defined more than once"#,
    ),
];

#[test]
fn spec_errors_keep_their_messages() {
    for (text, message) in CASES {
        let e = FeatureSpec::parse(text).expect_err(text);
        assert_eq!(e.to_string(), *message, "{text}");
    }
}
