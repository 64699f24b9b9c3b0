/*! Weft recommendations widget v1.0.0 | served by weft serve at /widget.js and /widget/v1.js */
// Markup: <div data-weft-recs data-key="pk_..." data-n="6"
//              data-context-item="sku-1" data-context-category="shoes"
//              data-item-url="/p/{item}"></div>
// The widget renders recommendations with their reason, records a view of
// the context item and a click on a recommendation through the collector
// (POST /v1/events), and keeps the shopper's first-party id in this page's
// localStorage. It writes the DOM with textContent only: ids are shown as
// text, never parsed as HTML. Failures go to the console and render nothing.
(function () {
  "use strict";
  var VERSION = "1.0.0";
  var script = document.currentScript;
  var BASE = script && script.src ? new URL(script.src).origin : "";
  var ID_KEY = "weft_uid";
  var AFTER_KEY = "weft_after";

  function randomHex(bytes) {
    var a = new Uint8Array(bytes);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return Array.prototype.map.call(a, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  // The first-party id: one per browser and site, kept in localStorage
  // (a fresh one per page view when storage is unavailable).
  function userId(el) {
    if (el.dataset.userId) return el.dataset.userId;
    try {
      var id = window.localStorage.getItem(ID_KEY);
      if (!id) {
        id = "fp-" + randomHex(12);
        window.localStorage.setItem(ID_KEY, id);
      }
      return id;
    } catch (e) {
      return "fp-" + randomHex(12);
    }
  }

  function send(key, events, keepalive) {
    return fetch(BASE + "/v1/events", {
      method: "POST",
      mode: "cors",
      keepalive: !!keepalive,
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({ events: events })
    }).then(function (r) {
      if (r.status !== 202) {
        console.error("weft: POST /v1/events answered " + r.status);
        return r;
      }
      // Read-your-writes: the next recommendations wait for these events.
      return r.json().then(function (body) {
        if (body.read_after) remember(AFTER_KEY, body.read_after);
        return r;
      });
    });
  }

  function remember(key, value) {
    try { window.sessionStorage.setItem(key, value); } catch (e) { /* storage off */ }
  }

  function recalled(key) {
    try { return window.sessionStorage.getItem(key) || ""; } catch (e) { return ""; }
  }

  // The page's view of each context item, recorded once whatever the
  // number of widgets; every widget asks for recommendations after them.
  var pageViews = {};
  function recordView(key, user, item, category) {
    if (!pageViews[item]) {
      pageViews[item] = send(key, [event(user, "view", item, category)], false)
        .catch(function (e) { console.error("weft: " + e); });
    }
    return pageViews[item];
  }

  function event(user, kind, item, category) {
    var e = { event_id: "w-" + randomHex(10), user_id: user, ts_ms: Date.now(), kind: kind };
    if (item) e.item_id = item;
    if (category) e.category = category;
    return e;
  }

  var REASONS = {
    RECOMMENDATION_REASON_SIMILAR_TO_CONTEXT: function (b) { return "Similar to " + b; },
    RECOMMENDATION_REASON_SIMILAR_TO_RECENT: function (b) { return "Because you viewed " + b; },
    RECOMMENDATION_REASON_POPULAR_IN_CATEGORY: function (b) { return "Popular in " + b; },
    RECOMMENDATION_REASON_POPULAR: function () { return "Popular now"; },
    RECOMMENDATION_REASON_TRENDING: function (b) { return b ? "Trending in " + b : "Trending now"; }
  };

  function reasonText(item) {
    var f = REASONS[item.reason];
    return f ? f(item.because || "") : "";
  }

  function itemUrl(el, item) {
    var template = el.dataset.itemUrl;
    return template ? template.split("{item}").join(encodeURIComponent(item)) : null;
  }

  function render(el, key, user, items) {
    var list = document.createElement("ol");
    list.className = "weft-recs";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.className = "weft-rec";
      li.dataset.item = item.item_id;
      li.dataset.reason = item.reason;
      li.dataset.because = item.because || "";
      var url = itemUrl(el, item.item_id);
      var name = document.createElement(url ? "a" : "span");
      name.className = "weft-rec-item";
      name.textContent = item.item_id;
      if (url) name.href = url;
      var why = document.createElement("small");
      why.className = "weft-rec-reason";
      why.textContent = reasonText(item);
      li.appendChild(name);
      li.appendChild(why);
      li.addEventListener("click", function (ev) {
        var click = send(key, [event(user, "click", item.item_id, "")], true);
        if (url && ev.button === 0 && !ev.metaKey && !ev.ctrlKey) {
          // Follow the link once the click is recorded (or after 300 ms).
          ev.preventDefault();
          var go = function () { window.location.href = url; };
          Promise.race([click, new Promise(function (r) { setTimeout(r, 300); })]).then(go, go);
        }
      });
      list.appendChild(li);
    });
    el.replaceChildren(list);
    el.dataset.weftState = "rendered";
  }

  function mount(el) {
    if (el.dataset.weftState) return;
    el.dataset.weftState = "loading";
    var key = el.dataset.key || "";
    var n = parseInt(el.dataset.n || "6", 10) || 6;
    var context = el.dataset.contextItem || "";
    var user = userId(el);
    if (context && el.dataset.recordView !== "false") {
      recordView(key, user, context, el.dataset.contextCategory || "");
    }
    // Recommendations after the page's views are recorded, so they count
    // them (and the last click of the previous page: `after`).
    var views = Object.keys(pageViews).map(function (k) { return pageViews[k]; });
    Promise.all(views).then(function () {
      var q = "user_id=" + encodeURIComponent(user) + "&n=" + n;
      if (context) q += "&context_item_id=" + encodeURIComponent(context);
      var after = recalled(AFTER_KEY);
      if (after) q += "&after=" + encodeURIComponent(after);
      return fetch(BASE + "/v1/recommendations?" + q, {
        mode: "cors",
        headers: { "Authorization": "Bearer " + key }
      });
    }).then(function (r) {
      if (!r.ok) {
        console.error("weft: GET /v1/recommendations answered " + r.status);
        el.dataset.weftState = "error " + r.status;
        return;
      }
      return r.json().then(function (body) { render(el, key, user, body.items || []); });
    }).catch(function (e) {
      console.error("weft: " + e);
      el.dataset.weftState = "error";
    });
  }

  function mountAll() {
    var all = document.querySelectorAll("[data-weft-recs]");
    // Views first, so that every widget of the page waits for all of them.
    Array.prototype.forEach.call(all, function (el) {
      var context = el.dataset.contextItem;
      if (!el.dataset.weftState && context && el.dataset.recordView !== "false") {
        recordView(el.dataset.key || "", userId(el), context, el.dataset.contextCategory || "");
      }
    });
    Array.prototype.forEach.call(all, mount);
  }

  window.Weft = { version: VERSION, mount: mount, refresh: mountAll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountAll);
  } else {
    mountAll();
  }
})();
