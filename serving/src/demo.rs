//! The demo storefront `weft up` serves on its own origin (`--demo-listen`):
//! product pages from the generator's catalogue with the recommendations
//! widget on each, so a newcomer sees personalisation happen, and the
//! widget runs as on a retailer's page, cross-origin from the API.
//!
//! * `GET /demo`: the tenants.
//! * `GET /demo/{tenant}`: the store's front page ("Recommended for you",
//!   and the catalogue's most popular items per category).
//! * `GET /demo/{tenant}/p/{item}`: a product page ("Similar items" with
//!   the product as the context item, which records its view, and
//!   "Recommended for you").
//!
//! Every id is HTML-escaped where it is written into a page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use weft_core::generator::CatalogueItem;

/// Items listed per category on a store's front page.
const FRONT_PAGE_ITEMS: usize = 6;

/// One tenant's store.
#[derive(Debug, Clone)]
pub struct DemoTenant {
    pub name: String,
    /// A publishable key with `recommendations:read` and `events:write`.
    pub widget_key: String,
    pub catalogue: Vec<CatalogueItem>,
}

/// The storefront: where the API (and `/widget.js`) is, and the stores.
#[derive(Debug)]
pub struct DemoStore {
    /// The API's origin, e.g. `http://127.0.0.1:8080`.
    pub api_base: String,
    pub tenants: Vec<DemoTenant>,
}

/// The storefront's routes.
pub fn router(store: DemoStore) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo") }))
        .route("/demo", get(index))
        .route("/demo/", get(index))
        .route("/demo/{tenant}", get(front_page))
        .route("/demo/{tenant}/p/{item}", get(product_page))
        .with_state(Arc::new(store))
}

/// Serves the storefront on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: std::net::TcpListener,
    store: DemoStore,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(store))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// `s` with the characters HTML gives meaning to escaped, for text and
/// attribute values alike.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn page(store: &DemoStore, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Weft demo store</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem 1.5rem; color: #1d232a; }}
header {{ display: flex; gap: 1rem; align-items: baseline; border-bottom: 1px solid #d8dde3; margin-bottom: 1rem; }}
a {{ color: #0b5cad; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .6rem; padding: 0; list-style: none; }}
.grid li, .weft-rec {{ border: 1px solid #d8dde3; border-radius: 6px; padding: .5rem .7rem; }}
.weft-recs {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .6rem; padding: 0; list-style: none; }}
.weft-rec {{ cursor: pointer; }}
.weft-rec-reason {{ display: block; color: #5b6670; }}
.price {{ color: #2d6a2d; }}
</style></head>
<body><header><strong>Weft demo store</strong><a href="/demo">all stores</a></header>
{body}
<script src="{api}/widget.js" defer></script>
</body></html>
"#,
        title = escape_html(title),
        api = escape_html(&store.api_base),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn not_found(store: &DemoStore, what: &str) -> Response {
    let mut r = page(store, "Not found", &format!("<p>{}</p>", escape_html(what)));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

fn widget(tenant: &DemoTenant, heading: &str, context: Option<&CatalogueItem>) -> String {
    let mut attrs = format!(
        r#"data-weft-recs data-key="{}" data-n="6" data-item-url="/demo/{}/p/{{item}}""#,
        escape_html(&tenant.widget_key),
        escape_html(&segment(&tenant.name)),
    );
    if let Some(item) = context {
        let _ = write!(
            attrs,
            r#" data-context-item="{}" data-context-category="{}""#,
            escape_html(&item.item_id),
            escape_html(&item.category)
        );
    }
    format!(
        "<section><h2>{}</h2><div {attrs}></div></section>\n",
        escape_html(heading)
    )
}

fn price(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

async fn index(State(store): State<Arc<DemoStore>>) -> Response {
    let mut body = String::from("<h1>Stores</h1><ul>");
    for t in &store.tenants {
        let _ = write!(
            body,
            r#"<li><a href="/demo/{}">{}</a> ({} products)</li>"#,
            escape_html(&segment(&t.name)),
            escape_html(&t.name),
            t.catalogue.len()
        );
    }
    body.push_str("</ul>");
    page(&store, "Stores", &body)
}

fn tenant<'s>(store: &'s DemoStore, name: &str) -> Option<&'s DemoTenant> {
    store.tenants.iter().find(|t| t.name == name)
}

async fn front_page(State(store): State<Arc<DemoStore>>, Path(name): Path<String>) -> Response {
    let Some(t) = tenant(&store, &name) else {
        return not_found(&store, &format!("no store {name:?}"));
    };
    let mut body = format!("<h1>{}</h1>\n", escape_html(&t.name));
    body.push_str(&widget(t, "Recommended for you", None));
    let mut by_category: BTreeMap<&str, Vec<&CatalogueItem>> = BTreeMap::new();
    for item in &t.catalogue {
        by_category.entry(&item.category).or_default().push(item);
    }
    for (category, mut items) in by_category {
        items.sort_by_key(|i| i.rank);
        let _ = write!(
            body,
            r#"<section><h2>{}</h2><ul class="grid">"#,
            escape_html(category)
        );
        for item in items.into_iter().take(FRONT_PAGE_ITEMS) {
            let _ = write!(
                body,
                r#"<li><a class="product" href="/demo/{}/p/{}">{}</a> <span class="price">{}</span></li>"#,
                escape_html(&segment(&t.name)),
                escape_html(&segment(&item.item_id)),
                escape_html(&item.item_id),
                price(item.price_minor)
            );
        }
        body.push_str("</ul></section>\n");
    }
    page(&store, &t.name, &body)
}

async fn product_page(
    State(store): State<Arc<DemoStore>>,
    Path((name, item_id)): Path<(String, String)>,
) -> Response {
    let Some(t) = tenant(&store, &name) else {
        return not_found(&store, &format!("no store {name:?}"));
    };
    let Some(item) = t.catalogue.iter().find(|i| i.item_id == item_id) else {
        return not_found(&store, &format!("{name} has no product {item_id:?}"));
    };
    let mut body = format!(
        r#"<p><a href="/demo/{}">{}</a> › {}</p><h1 class="product-title">{}</h1><p>{} · <span class="price">{}</span></p>"#,
        escape_html(&segment(&t.name)),
        escape_html(&t.name),
        escape_html(&item.category),
        escape_html(&item.item_id),
        escape_html(&item.category),
        price(item.price_minor)
    );
    body.push('\n');
    body.push_str(&widget(t, "Similar items", Some(item)));
    body.push_str(&widget(t, "Recommended for you", None));
    page(&store, &item.item_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_in_text_attributes_and_paths() {
        assert_eq!(
            escape_html(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
