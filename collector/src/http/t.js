/* clicktrail browser SDK (served as /t.js).
 *
 * 1. In the <head> of every page of the brand's site, the loader stub, then the script:
 *
 *   <script>
 *   window.clicktrail=window.clicktrail||{q:[],init:function(o){this.q.push(["init",o])},convert:function(o){this.q.push(["convert",o])}};
 *   </script>
 *   <script async src="https://COLLECTOR/t.js"></script>
 *
 *    The stub lets the page call clicktrail.convert(…) before the script has loaded; the
 *    calls are queued and sent, in order, once it has.
 *
 * 2. On landing (a URL with ct_click_id, added by the tracking link) the click id is kept,
 *    for the click's offer's cookie days (ct_cd, also added by the link), and both are then
 *    removed from the address bar (history.replaceState):
 *    - by default in a cookie ct_click_id set by this script on the brand's registrable
 *      domain (browsers may cap script-set cookies: Safari to 7 days, or 24 hours);
 *    - in first-party mode, by the brand's own origin: the script calls PREFIX/fp/landing,
 *      which the brand reverse-proxies to the collector and whose answer sets an HttpOnly
 *      cookie. Turn it on with data-first-party="/ct" on the script tag, or
 *      clicktrail.init({firstParty: "/ct"}) in the stub (before the script loads).
 *
 * 3. On a conversion:
 *
 *   clicktrail.convert({offer: "OFFER", amount: 19.99, currency: "EUR", orderId: "A-1", event: "purchase", coupon: "ANN10"})
 *
 *    sends it with fetch(…, {keepalive: true}) (it survives the page navigating away), or
 *    navigator.sendBeacon, or an image, to the collector's /p.gif (first-party mode:
 *    PREFIX/fp/convert). Amounts: a decimal string is sent as it is; a number is rounded to
 *    6 decimals (0.1 + 0.2 is sent as 0.3); a negative or non-finite amount is not sent
 *    (console.warn says why), nor is a conversion without an offer. A conversion the collector
 *    refuses is reported with console.warn and the collector's reason.
 *
 * /t.js?offer=OFFER makes OFFER the default offer of convert().
 */
(function (w, d) {
  "use strict";
  var COLLECTOR = __CLICKTRAIL_COLLECTOR__;
  var DEFAULT_OFFER = __CLICKTRAIL_OFFER__;
  var OFFER_COOKIE_DAYS = __CLICKTRAIL_COOKIE_DAYS__;
  var DEFAULT_COOKIE_DAYS = __CLICKTRAIL_DEFAULT_COOKIE_DAYS__;
  var COOKIE = "ct_click_id";
  var DAYS_PARAM = "ct_cd";
  var MAX_COOKIE_DAYS = 400;
  var MAX_AMOUNT = 1e12;
  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  var existing = w.clicktrail;
  if (existing && existing.loaded) return; // the script twice on one page: the first one serves

  var config = { firstParty: null };
  var me = d.currentScript;
  if (me && me.getAttribute && me.getAttribute("data-first-party")) config.firstParty = me.getAttribute("data-first-party");
  var pageClickId = null; // the click id this page landed with, if any

  function warn(msg) {
    if (w.console && typeof w.console.warn === "function") w.console.warn("clicktrail: " + msg);
  }

  function isArray(x) {
    return Object.prototype.toString.call(x) === "[object Array]";
  }

  function readCookie(name) {
    var parts = (d.cookie || "").split(";");
    for (var i = 0; i < parts.length; i++) {
      var kv = parts[i].replace(/^\s+/, "");
      if (kv.indexOf(name + "=") === 0) {
        return decodeURIComponent(kv.substring(name.length + 1));
      }
    }
    return null;
  }

  // Set the cookie on the widest domain the browser accepts (the registrable domain, so
  // www.shop.com and checkout.shop.com share it); browsers refuse public suffixes.
  function writeCookie(name, value, days) {
    var attrs = "; Max-Age=" + days * 86400 + "; Path=/; SameSite=Lax" + (w.location.protocol === "https:" ? "; Secure" : "");
    var labels = (w.location.hostname || "").split(".");
    for (var i = labels.length - 2; i >= 0; i--) {
      d.cookie = name + "=" + encodeURIComponent(value) + attrs + "; Domain=" + labels.slice(i).join(".");
      if (readCookie(name) === value) return;
    }
    d.cookie = name + "=" + encodeURIComponent(value) + attrs;
  }

  function decode(s) {
    try {
      return decodeURIComponent(s.replace(/\+/g, " "));
    } catch (e) {
      return s;
    }
  }

  function param(search, name) {
    var q = search.replace(/^\?/, "").split("&");
    for (var i = 0; i < q.length; i++) {
      var kv = q[i].split("=");
      if (decode(kv[0]) === name && kv.length > 1) return decode(kv.slice(1).join("="));
    }
    return null;
  }

  // Takes our parameters out of the address bar, leaving every other one exactly as written.
  function stripParams(names) {
    var h = w.history, loc = w.location;
    if (!h || typeof h.replaceState !== "function" || typeof loc.pathname !== "string") return;
    var segs = (loc.search || "").replace(/^\?/, "").split("&");
    var kept = [];
    for (var i = 0; i < segs.length; i++) {
      if (segs[i] && names.indexOf(decode(segs[i].split("=")[0])) < 0) kept.push(segs[i]);
    }
    try {
      h.replaceState(h.state, "", loc.pathname + (kept.length ? "?" + kept.join("&") : "") + (loc.hash || ""));
    } catch (e) {
      // A sandboxed frame may refuse; the click id is kept all the same.
    }
  }

  function reason(text) {
    try {
      var j = JSON.parse(text);
      return j.error ? j.error + (j.field ? " (field " + j.field + ")" : "") : text;
    } catch (e) {
      return text;
    }
  }

  // POSTs a form to url so that it outlives the page: fetch with keepalive (whose answer
  // is read, to warn about a refusal), else sendBeacon, else an image (GET).
  function send(url, body, what) {
    if (typeof w.fetch === "function") {
      try {
        w.fetch(url, {
          method: "POST",
          body: body,
          keepalive: true,
          credentials: "include",
          headers: { "Content-Type": "application/x-www-form-urlencoded" }
        }).then(function (r) {
          if (!r.ok) {
            return r.text().then(function (t) {
              warn(what + " refused by the collector (" + r.status + "): " + reason(t));
            });
          }
        }, function (e) {
          warn(what + " could not be sent: " + e);
        });
        return true;
      } catch (e) {
        // An old browser without keepalive or a page that replaced fetch: try the others.
      }
    }
    var n = w.navigator;
    if (n && typeof n.sendBeacon === "function") {
      try {
        if (n.sendBeacon(url, body)) return true;
      } catch (e) {
        // fall through to the image
      }
    }
    var img = new w.Image(1, 1);
    img.src = url + "?" + body;
    return true;
  }

  function firstPartyBase() {
    return String(config.firstParty).replace(/\/+$/, "");
  }

  function cookieDays(search) {
    var cd = param(search, DAYS_PARAM);
    if (cd && /^[0-9]{1,3}$/.test(cd) && +cd >= 1 && +cd <= MAX_COOKIE_DAYS) return +cd;
    return OFFER_COOKIE_DAYS || DEFAULT_COOKIE_DAYS;
  }

  function capture() {
    var search = w.location.search || "";
    var id = param(search, COOKIE);
    if (!id || !UUID.test(id)) return;
    pageClickId = id.toLowerCase();
    var days = cookieDays(search);
    if (config.firstParty) {
      send(firstPartyBase() + "/fp/landing", "click_id=" + encodeURIComponent(pageClickId) + "&cookie_days=" + days, "landing");
    } else {
      writeCookie(COOKIE, pageClickId, days);
    }
    stripParams([COOKIE, DAYS_PARAM]);
  }

  // The amount as the collector takes it, or why it cannot be sent.
  function amountText(a) {
    if (a === undefined || a === null || a === "") return { text: null };
    if (typeof a === "number") {
      if (!isFinite(a) || a < 0) return { error: "amount " + a + " is not a finite, non-negative number" };
      if (a > MAX_AMOUNT) return { error: "amount " + a + " is over 10^12" };
      return { text: a.toFixed(6).replace(/\.?0+$/, "") };
    }
    if (typeof a === "string") return { text: a }; // exact as written; the collector checks it
    return { error: "amount must be a number or a decimal string, not " + typeof a };
  }

  function convert(o) {
    o = o || {};
    var offer = o.offer || DEFAULT_OFFER;
    if (!offer) {
      warn("convert: offer is required; conversion not sent");
      return false;
    }
    var amount = amountText(o.amount);
    if (amount.error) {
      warn("convert: " + amount.error + "; conversion not sent");
      return false;
    }
    var q = ["offer=" + encodeURIComponent(offer)];
    function add(key, value) {
      if (value !== undefined && value !== null && value !== "") q.push(key + "=" + encodeURIComponent(String(value)));
    }
    add("amount", amount.text);
    add("currency", o.currency);
    add("order_id", o.orderId);
    add("event", o.event);
    add("coupon", o.coupon);
    if (config.firstParty) {
      // The brand's origin holds the click id in its HttpOnly cookie; on the landing page
      // itself the id is sent too, in case the landing call has not come back yet.
      add("click_id", pageClickId);
      return send(firstPartyBase() + "/fp/convert", q.join("&"), "conversion");
    }
    add("click_id", readCookie(COOKIE));
    return send(COLLECTOR + "/p.gif", q.join("&"), "conversion");
  }

  function init(o) {
    o = o || {};
    if (o.firstParty !== undefined) config.firstParty = o.firstParty || null;
  }

  function run(call) {
    if (!isArray(call)) return convert(call); // clicktrail.q.push({...}) of earlier snippets
    if (call[0] === "init") return init(call[1]);
    if (call[0] === "convert") return convert(call[1]);
    warn("unknown call " + call[0]);
  }

  var api = existing || {};
  var queued = (existing && isArray(existing.q)) ? existing.q : [];
  // Configuration first (it decides how the landing is kept), then the landing, then the
  // queued conversions in the order they were made.
  for (var i = 0; i < queued.length; i++) if (isArray(queued[i]) && queued[i][0] === "init") init(queued[i][1]);
  capture();
  api.loaded = true;
  api.init = init;
  api.convert = convert;
  api.clickId = function () {
    return pageClickId || readCookie(COOKIE);
  };
  api.q = {
    push: function () {
      for (var j = 0; j < arguments.length; j++) run(arguments[j]);
    }
  };
  w.clicktrail = api;
  for (var k = 0; k < queued.length; k++) if (!(isArray(queued[k]) && queued[k][0] === "init")) run(queued[k]);
})(window, document);
