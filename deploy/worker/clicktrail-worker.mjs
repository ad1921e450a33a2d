// clicktrail first-party path as an edge worker (Cloudflare Workers' module syntax; the same
// fetch handler runs on any runtime with the Fetch API). Route `shop.example.com/ct/*` to it
// and set the variable CLICKTRAIL_COLLECTOR to the collector's URL (https://track.example.net).
// The brand's origin, not a script, then sets the click cookie (ct_fp, HttpOnly) and
// conversions are first-party requests.
//
// Run the collector with --real-ip-header X-Forwarded-For when it is reached only through
// proxies you run. Only the snippet and the first-party endpoints are exposed.

export const PREFIX = "/ct";
const FORWARDED_HEADERS = ["accept", "accept-language", "content-type", "if-none-match", "referer", "user-agent"];

function cookie(header, name) {
  for (const part of (header || "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return null;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const path = url.pathname.startsWith(PREFIX + "/") ? url.pathname.slice(PREFIX.length) : null;
    if (path !== "/t.js" && !(path && path.startsWith("/fp/"))) {
      return new Response("not found\n", { status: 404 });
    }
    const target = new URL(path + url.search, env.CLICKTRAIL_COLLECTOR);
    const headers = new Headers();
    for (const name of FORWARDED_HEADERS) {
      const v = request.headers.get(name);
      if (v) headers.set(name, v);
    }
    // The brand's other cookies (sessions, carts) never leave its origin: only ct_fp.
    const fp = cookie(request.headers.get("cookie"), "ct_fp");
    if (fp && path !== "/t.js") headers.set("cookie", "ct_fp=" + fp);
    headers.set("x-forwarded-proto", url.protocol.replace(":", ""));
    headers.set("x-forwarded-host", url.host);
    const ip = request.headers.get("cf-connecting-ip");
    if (ip) headers.set("x-forwarded-for", ip);
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer();
    if (body && body.byteLength > 16 * 1024) return new Response("request body is over 16 KiB\n", { status: 413 });
    const answer = await fetch(target, { method: request.method, headers, body, redirect: "manual" });
    // The collector's answer as it is, Set-Cookie included: it is now the brand's origin's.
    return new Response(answer.body, { status: answer.status, statusText: answer.statusText, headers: answer.headers });
  },
};
