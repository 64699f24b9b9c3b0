"""The operator page (GET /ops) in Chromium.

    ops_page.py URL KEY STATUS OUT_PNG

Loads URL with KEY as the password of HTTP Basic authentication (as a
person would type it into the browser's prompt), then checks on the DOM:
the tenant's section with its three rate charts (minutes, hours, today),
each with an actual and an expected series; the platform's four charts
(dead letters, lag, view age, p99); and the status STATUS ("ok",
"below" or "no-history"). For "below", the newest samples' actual is
under their expected. Saves a screenshot to OUT_PNG; prints what it saw as
JSON; exits non-zero on the first failed check.
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def main():
    url, key, want, out = sys.argv[1:5]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(http_credentials={"username": "ops", "password": key})
        page = context.new_page()
        response = page.goto(url)
        check(response.status == 200, f"GET /ops answered {response.status}")
        page.screenshot(path=out, full_page=True)
        sections = page.locator("section.tenant")
        check(sections.count() == 1, "one tenant section (the key's tenant)")
        tenant = sections.first.get_attribute("data-tenant")
        charts = {}
        for chart in ["minutes", "hours", "day"]:
            svg = page.locator(f"section.tenant svg[data-chart='{chart}']")
            check(svg.count() == 1, f"{tenant}: the {chart} chart")
            series = svg.locator("text.legend").evaluate_all(
                "els => Object.fromEntries(els.map(e => [e.dataset.series, parseFloat(e.dataset.last)]))")
            check(set(series) == {"actual", "expected"}, f"{tenant} {chart}: actual and expected: {series}")
            check(svg.locator("polyline[data-series='actual']").count() >= 1,
                  f"{tenant} {chart}: the actual line is drawn")
            charts[chart] = series
        for chart in ["dead-letters", "lag", "view-age", "p99"]:
            check(page.locator(f"section.platform svg[data-chart='{chart}']").count() == 1,
                  f"the platform's {chart} chart")
        small = sections.first.get_attribute("data-small")
        status = page.locator("section.tenant .status")
        got = status.get_attribute("data-status")
        actual = float(status.get_attribute("data-actual"))
        expected = float(status.get_attribute("data-expected"))
        check(got == want, f"{tenant}: status {got}, not {want} (actual {actual}, expected {expected})")
        if want == "below":
            check(0 <= actual < expected, f"{tenant}: actual {actual} below expected {expected}")
            check(charts["minutes"]["actual"] < charts["minutes"]["expected"],
                  f"{tenant}: the newest sample is below expected: {charts['minutes']}")
        check(page.locator("script, link[rel=stylesheet], img").count() == 0, "no external assets")
        browser.close()
    print(json.dumps({"tenant": tenant, "status": got, "actual": actual, "expected": expected,
                      "small": small,
                      "charts": charts}))


if __name__ == "__main__":
    main()
