"""The recommendations widget in Chromium, on the demo storefront `weft up`
serves on its own origin (cross-origin from the API).

    browser_widget.py STORE_URL SERVER_KEY OUT_DIR

STORE_URL is a store's front page (http://host:port/demo/TENANT). Checks,
on the DOM (screenshots go to OUT_DIR for people, not for asserts):

1. A product page renders recommendations with reason text, and its
   "Recommended for you" widget too.
2. Clicking a recommended product opens its page, whose "Recommended for
   you" widget (rendered once, no reload) recommends items similar to the
   clicked one ("Because you viewed X") and not the clicked one itself;
   the time from the click to that render is printed.
3. A widget with a wrong key, and one with a server-side key, render
   nothing, and the console shows the 401 and the 403.
4. An item id holding markup is shown as text by the widget (an injected
   answer) and by the store's own pages (no script runs, no element made).

Prints one JSON line with what it saw; exits non-zero on the first failed
check.
"""

import json
import os
import sys
import time
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium")
RENDER_TIMEOUT_MS = 15_000


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def widget_items(page, heading):
    """The rendered items of the widget under `heading`."""
    section = page.locator("section", has=page.locator("h2", has_text=heading))
    widget = section.locator("[data-weft-recs]")
    widget.locator("xpath=self::*[@data-weft-state='rendered']").wait_for(timeout=RENDER_TIMEOUT_MS)
    return widget.locator("li.weft-rec").evaluate_all(
        """els => els.map(e => ({item: e.dataset.item, reason: e.dataset.reason,
                                 because: e.dataset.because,
                                 text: e.querySelector('.weft-rec-reason').textContent}))"""
    )


def main():
    store_url, server_key, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    origin = "{0.scheme}://{0.netloc}".format(urlparse(store_url))
    seen = {}
    with sync_playwright() as p:
        # Pages the test answers itself (page.route) have no address space
        # Chromium can place, so its local-network checks would block their
        # requests to the loopback API; the store's own pages need no flag.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox",
            "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
            "BlockInsecurePrivateNetworkRequests",
        ])
        context = browser.new_context()
        page = context.new_page()
        console = []
        page.on("console", lambda m: console.append(m.text))
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # 1. A product page of the store.
        page.goto(store_url)
        api = page_api(page)
        check(api, "the store loads the widget from the API's origin")
        product = page.locator("a.product").first
        product_url = product.get_attribute("href")
        page.goto(origin + product_url)
        title = page.locator("h1.product-title").text_content()
        similar = widget_items(page, "Similar items")
        for_you = widget_items(page, "Recommended for you")
        page.screenshot(path=os.path.join(out, "1-product.png"), full_page=True)
        check(len(similar) > 0, f"the product page of {title} shows similar items")
        check(all(i["text"] for i in similar), f"every item has reason text: {similar}")
        check(len(for_you) > 0, "the product page shows recommendations for the shopper")
        seen["product"] = title
        seen["similar"] = similar

        # 2. Click a recommended product: its page reflects the click.
        target = similar[0]["item"]
        start = time.monotonic()
        with page.expect_navigation():
            page.locator(f"section:has(h2:text('Similar items')) li.weft-rec").first.click()
        check(page.locator("h1.product-title").text_content() == target,
              f"the click opened {target}'s page")
        next_for_you = widget_items(page, "Recommended for you")
        elapsed_ms = (time.monotonic() - start) * 1000
        page.screenshot(path=os.path.join(out, "2-after-click.png"), full_page=True)
        check(next_for_you, "the next page has recommendations")
        # The clicked product is now the shopper's newest view: picks come
        # from its neighbours ("Because you viewed X"; the newest recent
        # item weighs most, though an item near both viewed products may
        # name the other), and it is no longer recommended itself.
        because = [i for i in next_for_you
                   if i["reason"] == "RECOMMENDATION_REASON_SIMILAR_TO_RECENT" and i["because"] == target]
        check(because, f"the next page recommends items similar to the clicked {target}: {next_for_you}")
        check(because[0]["text"] == f"Because you viewed {target}", f"reason text: {because[0]}")
        check(all(i["item"] != target for i in next_for_you),
              f"the clicked {target} is not recommended on its own page: {next_for_you}")
        seen["clicked"] = target
        seen["after_click"] = next_for_you
        seen["click_to_render_ms"] = round(elapsed_ms)

        # 3. Wrong and server-side keys: nothing rendered, the status in the
        #    console. The pages are served as the store's origin.
        for name, key, status in [("wrong-key", "pk_not_a_key", 401), ("server-key", server_key, 403)]:
            url = f"{origin}/__test/{name}"
            html = f"""<!doctype html><html><body><h2>{name}</h2>
<div id="w" data-weft-recs data-key="{key}" data-n="4" data-context-item="{target}"></div>
<script src="{api}/widget.js"></script></body></html>"""
            page.route(url, html_page(html))
            console.clear()
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('w').dataset.weftState && "
                "document.getElementById('w').dataset.weftState.startsWith('error')",
                timeout=RENDER_TIMEOUT_MS,
            )
            page.wait_for_timeout(200)
            page.screenshot(path=os.path.join(out, f"3-{name}.png"))
            check(page.locator("#w li").count() == 0, f"{name}: the widget renders nothing")
            state = page.locator("#w").get_attribute("data-weft-state")
            check(state == f"error {status}", f"{name}: the widget saw {status}, not {state}")
            check(any(str(status) in m for m in console), f"{name}: the console shows {status}: {console}")
            seen[name] = [m for m in console if str(status) in m]

        # 4. Markup in an item id is text: in the widget (an injected answer)
        #    and in the store's pages.
        evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
        url = f"{origin}/__test/escaping"
        html = f"""<!doctype html><html><body>
<div id="w" data-weft-recs data-key="pk_any" data-n="4" data-item-url="/p/{{item}}"></div>
<script src="{api}/widget.js"></script></body></html>"""
        page.route(url, html_page(html))
        page.route("**/v1/recommendations?*", lambda route: route.fulfill(
            status=200, content_type="application/json",
            headers={"access-control-allow-origin": origin},
            body=json.dumps({"items": [{"item_id": evil, "score": 1.0,
                                        "reason": "RECOMMENDATION_REASON_SIMILAR_TO_RECENT",
                                        "because": evil}]})))
        page.goto(url)
        page.wait_for_function("document.getElementById('w').dataset.weftState === 'rendered'",
                               timeout=RENDER_TIMEOUT_MS)
        page.wait_for_timeout(200)
        page.screenshot(path=os.path.join(out, "4-escaping.png"))
        check(page.locator("#w .weft-rec-item").text_content() == evil, "the item id is shown as text")
        check(page.locator("#w .weft-rec-reason").text_content() == f"Because you viewed {evil}",
              "the reason's item id is shown as text")
        check(page.locator("#w img, #w script").count() == 0, "no element made from an id")
        href = page.locator("#w a").get_attribute("href")
        check("<" not in href, f"the link's id is URL-encoded: {href}")
        page.unroute("**/v1/recommendations?*")
        page.goto(store_url + "/p/" + evil.replace("/", "%2F"))
        page.wait_for_timeout(200)
        text = page.locator("body").text_content()
        check("<img src=x" in text and "<script>alert(2)" in text,
              f"the store shows the unknown id as text: {text}")
        check(page.locator("body img, body script:not([src])").count() == 0,
              "the store made no element from the id")
        check(not dialogs, f"no script ran: {dialogs}")
        seen["escaped"] = True
        browser.close()
    print(json.dumps(seen))


def html_page(html):
    """A route handler answering with `html` (as the store's origin)."""
    return lambda route: route.fulfill(status=200, content_type="text/html", body=html)


def page_api(page):
    """The API origin the store's pages load the widget from."""
    return page.evaluate("""() => {
        const s = [...document.scripts].find(s => s.src.endsWith('/widget.js'));
        return s ? new URL(s.src).origin : '';
    }""")

if __name__ == "__main__":
    main()
