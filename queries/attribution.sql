-- attribution.sql — SPEC §4–5 written a second time, in plain DuckDB SQL.
--
-- Purpose: the reference the pipeline is checked against. `pipeline`'s integration test
-- runs this on generated lakes and compares the four tables row for row; `bench/pipeline.sh`
-- times it against the pipeline. Not a named analyst query: it is a script of several
-- statements that leaves four temporary tables behind.
--
-- Parameters (set before running, `SET VARIABLE name = value;`):
--   hits_glob  VARCHAR  the hits files, e.g. '/lake/hits/*/*/*.parquet'
--   window_us  BIGINT   the window W in microseconds (28d = 2419200000000)
--   tz         VARCHAR  report time zone, IANA name (needs DuckDB's bundled ICU)
--   date_from  DATE     first report date
--   date_to    DATE     last report date (inclusive)
--
-- Tables created: attributions, clicks, conversions, revenue (columns as in SPEC §5;
-- timestamps as TIMESTAMPTZ in UTC). Every rule is applied over all hits read; the scan is
-- limited to [date_from − 1 day − W, date_to + 2 days) in local time, which contains every
-- hit any rule can reach.

-- Timestamps are UTC whatever the session's zone (click_ts is built from microseconds).
SET TimeZone = 'UTC';

CREATE OR REPLACE TEMP TABLE hits AS
SELECT DISTINCT ON (hit_id)
    hit_id, kind, epoch_us(ts) AS t, ts, offer_id, member_id, link_code, click_id, visitor_id,
    event, order_id, amount_micros, currency, user_agent
FROM read_parquet(getvariable('hits_glob'), union_by_name = true, hive_partitioning = false)
WHERE epoch_us(ts) >= epoch_us(timezone(getvariable('tz'), (getvariable('date_from') - INTERVAL 1 DAY)::TIMESTAMP))
                     - getvariable('window_us')
  AND epoch_us(ts) < epoch_us(timezone(getvariable('tz'), (getvariable('date_to') + INTERVAL 2 DAY)::TIMESTAMP));

-- §4.3 conversions and their order duplicates: the latest earlier twin (by ts, hit_id)
-- within W makes a conversion a duplicate.
CREATE OR REPLACE TEMP TABLE conv AS
SELECT *,
    coalesce(order_id IS NOT NULL AND order_id <> ''
             AND lag(t) OVER (PARTITION BY offer_id, ev, order_id ORDER BY t, hit_id) >= t - getvariable('window_us'),
             false) AS dup
FROM (
    SELECT hit_id, kind, t, ts, offer_id, coalesce(nullif(event, ''), 'purchase') AS ev, order_id, amount_micros, upper(currency) AS currency,
        click_id, visitor_id,
        CASE WHEN click_id = '' THEN NULL ELSE lower(click_id) END AS ckey,
        CASE WHEN visitor_id = '' THEN NULL ELSE visitor_id END AS vkey
    FROM hits WHERE kind IN ('pixel', 'postback')
);

CREATE OR REPLACE TEMP TABLE clk AS
SELECT hit_id AS c_hit, click_id AS c_click_id, lower(click_id) AS ckey, offer_id AS c_offer,
    visitor_id AS c_visitor, member_id AS c_member, link_code AS c_link, t AS ct
FROM hits WHERE kind = 'click';

-- §4.4 sessions: by click_id, else by visitor on the offer; latest click in
-- [t − W, t], ties to the greater click_id.
CREATE OR REPLACE TEMP TABLE sess AS
SELECT * EXCLUDE (rn) FROM (
    SELECT c.hit_id, k.*,
        row_number() OVER (PARTITION BY c.hit_id ORDER BY k.ct DESC, k.c_click_id DESC NULLS LAST, k.c_hit DESC) AS rn
    FROM conv c JOIN clk k ON k.ckey = c.ckey
    WHERE NOT c.dup AND c.ckey IS NOT NULL AND k.ct BETWEEN c.t - getvariable('window_us') AND c.t
    UNION ALL
    SELECT c.hit_id, k.*,
        row_number() OVER (PARTITION BY c.hit_id ORDER BY k.ct DESC, k.c_click_id DESC NULLS LAST, k.c_hit DESC) AS rn
    FROM conv c JOIN clk k ON k.c_offer = c.offer_id AND k.c_visitor = c.vkey
    WHERE NOT c.dup AND c.ckey IS NULL AND c.vkey IS NOT NULL AND k.ct BETWEEN c.t - getvariable('window_us') AND c.t
) WHERE rn = 1;

CREATE OR REPLACE TEMP TABLE attributions AS
WITH st AS (
    SELECT c.*, s.c_click_id, s.c_offer, s.c_member, s.c_link, s.ct,
        CASE WHEN regexp_full_match(c.ckey, '[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}')
             THEN ('0x' || substr(c.ckey, 1, 8) || substr(c.ckey, 10, 4))::BIGINT * 1000 END AS embedded_us,
        CASE
            WHEN c.dup THEN 'duplicate'
            WHEN c.ckey IS NOT NULL THEN CASE
                WHEN s.ct IS NOT NULL AND s.c_offer = c.offer_id THEN 'attributed'
                WHEN s.ct IS NOT NULL THEN 'offer_mismatch'
                WHEN regexp_full_match(c.ckey, '[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}')
                     AND (('0x' || substr(c.ckey, 1, 8) || substr(c.ckey, 10, 4))::BIGINT * 1000 < c.t - getvariable('window_us')
                          OR ('0x' || substr(c.ckey, 1, 8) || substr(c.ckey, 10, 4))::BIGINT * 1000 > c.t)
                     THEN 'outside_window'
                ELSE 'unknown_click' END
            WHEN s.ct IS NOT NULL THEN 'attributed'
            ELSE 'no_click'
        END AS status
    FROM conv c LEFT JOIN sess s USING (hit_id)
)
SELECT hit_id, ts, CAST(timezone(getvariable('tz'), ts) AS DATE) AS date, kind, offer_id, ev AS event, order_id,
    amount_micros, currency,
    CASE WHEN (click_id IS NULL OR click_id = '') AND status = 'attributed' THEN c_click_id ELSE click_id END AS click_id,
    visitor_id, status,
    CASE WHEN status = 'attributed' THEN c_member END AS member_id,
    CASE WHEN status = 'attributed' THEN c_link END AS link_code,
    CASE WHEN status = 'attributed' THEN make_timestamp(ct)::TIMESTAMPTZ END AS click_ts,
    CASE WHEN status = 'attributed' THEN (t - ct) // 1000000 END AS lag_seconds
FROM st
WHERE CAST(timezone(getvariable('tz'), ts) AS DATE) BETWEEN getvariable('date_from') AND getvariable('date_to');

-- §4.2 bots: the same token list as pipeline/src/stages/bots.rs (a test checks they agree).
CREATE OR REPLACE TEMP TABLE clicks AS
SELECT date, offer_id, member_id,
    count(*) FILTER (WHERE NOT bot) AS clicks,
    count(DISTINCT visitor_id) FILTER (WHERE NOT bot) AS unique_clicks,
    count(*) FILTER (WHERE bot) AS bot_clicks
FROM (
    SELECT CAST(timezone(getvariable('tz'), ts) AS DATE) AS date, offer_id, member_id, visitor_id,
        user_agent IS NULL OR user_agent = '' OR len(list_filter([
            'bot', 'crawl', 'spider', 'slurp', 'facebookexternalhit', 'whatsapp', 'preview', 'headless', 'curl', 'wget',
            'python-requests',
            'mediapartners-google', 'google-inspectiontool', 'feedfetcher', 'ia_archiver', 'scrapy', 'archive.org',
            'meta-externalagent', 'meta-externalfetcher', 'facebookcatalog', 'chatgpt-user', 'perplexity',
            'embedly', 'vkshare', 'skypeuripreview', 'redditbot', 'iframely',
            'pingdom', 'uptime', 'lighthouse', 'phantomjs', 'puppeteer', 'playwright', 'selenium', 'python-urllib',
            'go-http-client', 'libwww-perl', 'apache-httpclient', 'okhttp', 'java/', 'node-fetch', 'axios/'
        ], lambda tok: contains(lower(user_agent), tok))) > 0 AS bot
    FROM hits WHERE kind = 'click'
)
WHERE date BETWEEN getvariable('date_from') AND getvariable('date_to')
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE conversions AS
SELECT date, offer_id, member_id, event, count(*) AS conversions
FROM attributions WHERE status = 'attributed'
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE revenue AS
SELECT date, offer_id, member_id, currency, count(*) AS orders, sum(amount_micros)::BIGINT AS revenue_micros
FROM attributions WHERE status = 'attributed' AND amount_micros IS NOT NULL
GROUP BY ALL;
