/* clicktrail conversion snippet.
 *
 * On every page of the brand's site:
 *   <script async src="https://COLLECTOR/t.js?offer=OFFER"></script>
 * On landing it keeps `ct_click_id` from the URL in a first-party cookie on the brand's
 * own domain. On a conversion:
 *   clicktrail.convert({offer: "OFFER", amount: "19.99", currency: "EUR", orderId: "A-1", event: "purchase", coupon: "ANN10"})
 * sends it to the collector's /p.gif with that click id. Pass amounts as strings to keep
 * them exact. Calls made before the script loaded can be queued:
 *   window.clicktrail = window.clicktrail || {q: []}; clicktrail.q.push({...});
 */
(function (w, d) {
  "use strict";
  var COLLECTOR = __CLICKTRAIL_COLLECTOR__;
  var DEFAULT_OFFER = __CLICKTRAIL_OFFER__;
  var COOKIE_DAYS = __CLICKTRAIL_COOKIE_DAYS__;
  var COOKIE = "ct_click_id";
  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
    var labels = w.location.hostname.split(".");
    for (var i = labels.length - 2; i >= 0; i--) {
      d.cookie = name + "=" + encodeURIComponent(value) + attrs + "; Domain=" + labels.slice(i).join(".");
      if (readCookie(name) === value) return;
    }
    d.cookie = name + "=" + encodeURIComponent(value) + attrs;
  }

  function param(search, name) {
    var q = search.replace(/^\?/, "").split("&");
    for (var i = 0; i < q.length; i++) {
      var kv = q[i].split("=");
      if (decodeURIComponent(kv[0]) === name && kv.length > 1) {
        return decodeURIComponent(kv.slice(1).join("=").replace(/\+/g, " "));
      }
    }
    return null;
  }

  function capture() {
    var id = param(w.location.search || "", COOKIE);
    if (id && UUID.test(id)) writeCookie(COOKIE, id.toLowerCase(), COOKIE_DAYS);
  }

  function convert(o) {
    o = o || {};
    var offer = o.offer || DEFAULT_OFFER;
    if (!offer) throw new Error("clicktrail.convert: offer is required");
    var q = ["offer=" + encodeURIComponent(offer)];
    function add(key, value) {
      if (value !== undefined && value !== null && value !== "") q.push(key + "=" + encodeURIComponent(String(value)));
    }
    add("amount", o.amount);
    add("currency", o.currency);
    add("order_id", o.orderId);
    add("event", o.event);
    add("coupon", o.coupon);
    add("click_id", readCookie(COOKIE));
    var img = new w.Image(1, 1);
    img.src = COLLECTOR + "/p.gif?" + q.join("&");
    return img;
  }

  capture();
  var api = w.clicktrail || {};
  var queued = api.q || [];
  api.convert = convert;
  api.clickId = function () { return readCookie(COOKIE); };
  api.q = { push: convert };
  w.clicktrail = api;
  for (var i = 0; i < queued.length; i++) convert(queued[i]);
})(window, document);
