-- bench/attribution_v1.sql — the first SQL twin (queries/attribution.sql before the tuning of
-- issue 14), kept only so that bench/pipeline.sh can time it beside the tuned one
-- (TWIN_SQL=bench/attribution_v1.sql bench/duckdb_attribution.py …). Not maintained: the
-- reference is queries/attribution.sql.
--
-- attribution.sql — SPEC §4–5, §7 and §8 (coupons, the fraud floor) written a second
-- time, in plain DuckDB SQL.
--
-- Purpose: the reference the pipeline is checked against. `pipeline`'s integration test
-- runs this on generated lakes and compares the tables row for row; `bench/pipeline.sh`
-- times it against the pipeline. Not a named analyst query: it is a script of several
-- statements that leaves six temporary tables behind. The §7 rules (and the decisions
-- where the spec is silent) are those of the last section of pipeline/README.md.
--
-- Parameters (set before running, `SET VARIABLE name = value;`):
--   hits_glob        VARCHAR  the hits files, e.g. '/lake/hits/*/*/*.parquet'
--   window_us        BIGINT   the window W in microseconds (28d = 2419200000000)
--   tz               VARCHAR  report time zone, IANA name (needs DuckDB's bundled ICU)
--   date_from        DATE     first report date
--   date_to          DATE     last report date (inclusive)
--   offers_csv       VARCHAR  registry/offers.csv (a file with only a header when there is none)
--   commissions_csv  VARCHAR  registry/commissions.csv (likewise)
--   coupons_csv      VARCHAR  registry/coupons.csv (likewise)
--
-- Tables created: attributions, clicks, conversions, revenue, earnings, adjustments
-- (columns as in lake/src/reports.rs, in that order; timestamps as TIMESTAMPTZ in UTC;
-- money BIGINT micros, computed in integers). Every rule is applied over all hits read;
-- the scan is limited to [date_from − 1 day − L − 2W, date_to + 2 days + L) in local
-- time (L: the greatest lock_days, at least the default 30), which contains every hit any
-- rule can reach: an adjustment of the range looks L + W back for its target and the
-- target's duplicate flag and session W further; a conversion of the range is changed by
-- adjustments up to L after it. Clicks are read only up to date_to + 2 days.
--
-- Registry files are read by column name; a column missing from a file (older files)
-- reads as its default, and a hits file without action, adjustment_id or coupon reads
-- them as null (even when no file has them).

-- Timestamps are UTC whatever the session's zone (click_ts is built from microseconds).
SET TimeZone = 'UTC';

-- Registry: offers.csv and commissions.csv, by column name (a missing column is null).
CREATE OR REPLACE TEMP TABLE offers AS
WITH r AS (
    SELECT row_number() OVER () AS rn, *
    FROM read_csv(getvariable('offers_csv'), header = true, all_varchar = true, null_padding = true)
), kv AS (
    SELECT rn, name, nullif(trim(value), '') AS value
    FROM (UNPIVOT r ON COLUMNS(* EXCLUDE rn) INTO NAME name VALUE value)
), o AS (
    SELECT rn,
        max(CASE WHEN name = 'offer_id' THEN value END) AS offer_id,
        max(CASE WHEN name = 'currency' THEN value END) AS currency,
        max(CASE WHEN name = 'lock_days' THEN value END) AS lock_days,
        max(CASE WHEN name = 'min_lag_seconds' THEN value END) AS min_lag_seconds,
        max(CASE WHEN name = 'coupon_priority' THEN value END) AS coupon_priority
    FROM kv GROUP BY rn
)
SELECT DISTINCT ON (offer_id) offer_id, upper(coalesce(currency, 'USD')) AS o_currency,
    coalesce(lock_days::BIGINT, 30) * 86400000000 AS lock_us,
    coalesce(min_lag_seconds::BIGINT, 0) AS min_lag_s,
    coalesce(lower(coupon_priority) = 'coupon', false) AS coupon_first
FROM o WHERE offer_id IS NOT NULL
ORDER BY offer_id, rn;

-- §8 coupons: code (upper-cased), offer, member, validity dates in the report zone.
CREATE OR REPLACE TEMP TABLE coupons AS
WITH r AS (
    SELECT row_number() OVER () AS rn, *
    FROM read_csv(getvariable('coupons_csv'), header = true, all_varchar = true, null_padding = true)
), kv AS (
    SELECT rn, name, nullif(trim(value), '') AS value
    FROM (UNPIVOT r ON COLUMNS(* EXCLUDE rn) INTO NAME name VALUE value)
)
SELECT upper(max(CASE WHEN name = 'code' THEN value END)) AS k_code,
    max(CASE WHEN name = 'offer_id' THEN value END) AS k_offer,
    max(CASE WHEN name = 'member_id' THEN value END) AS k_member,
    max(CASE WHEN name = 'valid_from' THEN value END)::DATE AS k_from,
    max(CASE WHEN name = 'valid_to' THEN value END)::DATE AS k_to
FROM kv GROUP BY rn;

-- percent as units of 10⁻⁴ percent and flat as micros, both parsed from the decimal text.
CREATE OR REPLACE TEMP TABLE rules AS
WITH r AS (
    SELECT row_number() OVER () AS rn, *
    FROM read_csv(getvariable('commissions_csv'), header = true, all_varchar = true, null_padding = true)
), kv AS (
    SELECT rn, name, nullif(trim(value), '') AS value
    FROM (UNPIVOT r ON COLUMNS(* EXCLUDE rn) INTO NAME name VALUE value)
), c AS (
    SELECT rn,
        max(CASE WHEN name = 'offer_id' THEN value END) AS offer_id,
        max(CASE WHEN name = 'member_id' THEN value END) AS member_id,
        max(CASE WHEN name = 'event' THEN value END) AS event,
        max(CASE WHEN name = 'percent' THEN value END) AS percent,
        max(CASE WHEN name = 'flat' THEN value END) AS flat,
        max(CASE WHEN name = 'valid_from' THEN value END) AS valid_from
    FROM kv GROUP BY rn
)
SELECT rn + 1 AS line, offer_id AS r_offer, member_id AS r_member, event AS r_event, valid_from::DATE AS r_from,
    CASE WHEN percent IS NOT NULL THEN
        split_part(percent, '.', 1)::BIGINT * 10000 + rpad(split_part(percent || '.', '.', 2), 4, '0')::BIGINT END AS percent_e4,
    CASE WHEN flat IS NOT NULL THEN
        split_part(flat, '.', 1)::BIGINT * 1000000 + rpad(split_part(flat || '.', '.', 2), 6, '0')::BIGINT END AS flat_micros
FROM c WHERE offer_id IS NOT NULL;

-- Two rules equal in offer, member, event and valid_from are an error naming both lines.
SELECT error('commissions.csv line ' || max(line) || ' repeats the rule of line ' || min(line)
             || ' (same offer ' || r_offer || ', member ' || coalesce(r_member, '') || ', event '
             || coalesce(r_event, '') || ' and valid_from ' || coalesce(r_from::VARCHAR, '') || ')')
FROM rules GROUP BY r_offer, r_member, r_event, r_from HAVING count(*) > 1;

SET VARIABLE lock_max_us = (SELECT greatest(30 * 86400000000, coalesce(max(lock_us), 0)) FROM offers);
SET VARIABLE scan_lo_us = epoch_us(timezone(getvariable('tz'), (getvariable('date_from') - INTERVAL 1 DAY)::TIMESTAMP))
    - getvariable('lock_max_us') - 2 * getvariable('window_us');
SET VARIABLE clicks_hi_us = epoch_us(timezone(getvariable('tz'), (getvariable('date_to') + INTERVAL 2 DAY)::TIMESTAMP));
SET VARIABLE scan_hi_us = getvariable('clicks_hi_us') + getvariable('lock_max_us');

CREATE OR REPLACE TEMP TABLE hits AS
SELECT DISTINCT ON (hit_id)
    hit_id, kind, epoch_us(ts) AS t, ts, offer_id, member_id, link_code, click_id, visitor_id,
    event, order_id, amount_micros, currency, user_agent, action, adjustment_id, coupon
FROM (
    -- the three §7–8 columns, null when no file has them
    SELECT NULL::VARCHAR AS action, NULL::VARCHAR AS adjustment_id, NULL::VARCHAR AS coupon WHERE false
    UNION ALL BY NAME
    SELECT * FROM read_parquet(getvariable('hits_glob'), union_by_name = true, hive_partitioning = false)
)
WHERE epoch_us(ts) >= getvariable('scan_lo_us')
  AND epoch_us(ts) < CASE WHEN kind = 'click' THEN getvariable('clicks_hi_us') ELSE getvariable('scan_hi_us') END;

-- §4.3 conversions and their order duplicates: the latest earlier twin (by ts, hit_id)
-- within W makes a conversion a duplicate.
CREATE OR REPLACE TEMP TABLE conv AS
SELECT *,
    coalesce(order_id IS NOT NULL AND order_id <> ''
             AND lag(t) OVER (PARTITION BY offer_id, ev, order_id ORDER BY t, hit_id) >= t - getvariable('window_us'),
             false) AS dup
FROM (
    SELECT hit_id, kind, t, ts, offer_id, coalesce(nullif(event, ''), 'purchase') AS ev, order_id, amount_micros, upper(currency) AS currency,
        click_id, visitor_id, coupon,
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

-- §4.4–5 over every conversion read (adjustments of the range need their targets' status
-- and member); `attributions` keeps the range's dates below. Then §8: a valid coupon
-- (listed for the offer, the conversion's date in its days) attributes a conversion that
-- the session leaves unknown_click, outside_window, offer_mismatch or no_click, or, for an
-- offer whose coupon_priority is coupon, every conversion that is not a duplicate; a
-- conversion attributed through its session faster than the offer's min_lag_seconds is
-- too_fast (it keeps member, link, click_ts and lag).
CREATE OR REPLACE TEMP TABLE att AS
WITH st AS (
    SELECT c.*, s.c_click_id, s.c_offer, s.c_member, s.c_link, s.ct,
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
        END AS s_status,
        CAST(timezone(getvariable('tz'), c.ts) AS DATE) AS day,
        coalesce(o.min_lag_s, 0) AS min_lag_s, coalesce(o.coupon_first, false) AS coupon_first
    FROM conv c LEFT JOIN sess s USING (hit_id) LEFT JOIN offers o USING (offer_id)
), cp AS (
    SELECT st.*, k.k_member,
        k.k_member IS NOT NULL AND (k.k_from IS NULL OR k.k_from <= st.day) AND (k.k_to IS NULL OR st.day <= k.k_to) AS coupon_valid
    FROM st LEFT JOIN coupons k ON k.k_offer = st.offer_id AND k.k_code = upper(nullif(st.coupon, ''))
), dec AS (
    SELECT *,
        coupon_valid AND NOT dup
            AND (coupon_first OR s_status IN ('unknown_click', 'outside_window', 'offer_mismatch', 'no_click')) AS by_coupon
    FROM cp
), fin AS (
    SELECT *, NOT by_coupon AND s_status = 'attributed' AS kept,
        NOT by_coupon AND s_status = 'attributed' AND (t - ct) // 1000000 < min_lag_s AS too_fast
    FROM dec
)
SELECT hit_id, ts, day AS date, kind, offer_id, ev AS event, order_id,
    amount_micros, currency,
    CASE WHEN (click_id IS NULL OR click_id = '') AND kept THEN c_click_id ELSE click_id END AS click_id,
    visitor_id,
    CASE WHEN by_coupon THEN 'attributed' WHEN too_fast THEN 'too_fast' ELSE s_status END AS status,
    CASE WHEN by_coupon THEN k_member WHEN kept THEN c_member END AS member_id,
    CASE WHEN kept THEN c_link END AS link_code,
    CASE WHEN kept THEN make_timestamp(ct)::TIMESTAMPTZ END AS click_ts,
    CASE WHEN kept THEN (t - ct) // 1000000 END AS lag_seconds,
    upper(nullif(coupon, '')) AS coupon,
    CASE WHEN by_coupon THEN 'coupon' WHEN kept AND NOT too_fast THEN CASE WHEN ckey IS NOT NULL THEN 'click' ELSE 'visitor' END END AS via,
    t, dup
FROM fin;

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

-- §7 adjustments: the key of §4.3, `event` defaulting to purchase, currency kept only when sent.
CREATE OR REPLACE TEMP TABLE adj AS
SELECT h.hit_id, h.ts, h.t, h.offer_id, coalesce(nullif(h.event, ''), 'purchase') AS event, h.order_id, h.action,
    h.amount_micros, upper(nullif(h.currency, '')) AS currency, h.adjustment_id,
    coalesce(o.lock_us, 30 * 86400000000) AS lock_us
FROM hits h LEFT JOIN offers o USING (offer_id)
WHERE h.kind = 'adjustment';

-- Target: same key, not duplicate, ts in [adj.ts − (L + W), adj.ts], greatest (ts, hit_id).
CREATE OR REPLACE TEMP TABLE adj_target AS
SELECT * EXCLUDE (rn) FROM (
    SELECT a.hit_id, c.hit_id AS target_hit_id, c.t AS target_t, c.currency AS target_currency,
        c.status AS target_status, c.member_id AS target_member,
        row_number() OVER (PARTITION BY a.hit_id ORDER BY c.t DESC, c.hit_id DESC) AS rn
    FROM adj a JOIN att c
      ON c.offer_id = a.offer_id AND c.event = a.event AND c.order_id = a.order_id
    WHERE a.order_id IS NOT NULL AND a.order_id <> '' AND NOT c.dup
      AND c.t BETWEEN a.t - (a.lock_us + getvariable('window_us')) AND a.t
) WHERE rn = 1;

-- Duplicate: an earlier adjustment (ts, hit_id) of the offer with the same non-empty
-- adjustment_id, at most L + W before.
CREATE OR REPLACE TEMP TABLE adj_status AS
SELECT a.*, tg.target_hit_id, tg.target_t, tg.target_status, tg.target_member,
    CASE
        WHEN tg.target_hit_id IS NULL THEN 'no_conversion'
        WHEN a.adjustment_id IS NOT NULL AND a.adjustment_id <> '' AND EXISTS (
            SELECT 1 FROM adj e
            WHERE e.offer_id = a.offer_id AND e.adjustment_id = a.adjustment_id
              AND (e.t < a.t OR (e.t = a.t AND e.hit_id < a.hit_id))
              AND e.t >= a.t - (a.lock_us + getvariable('window_us'))) THEN 'duplicate'
        WHEN a.t > tg.target_t + a.lock_us THEN 'late'
        WHEN a.currency IS NOT NULL AND (tg.target_currency IS NULL OR tg.target_currency <> a.currency)
            THEN 'currency_mismatch'
        ELSE 'applied'
    END AS status
FROM adj a LEFT JOIN adj_target tg USING (hit_id);

-- §7.3 the state of every conversion over its applied adjustments.
CREATE OR REPLACE TEMP TABLE conv_state AS
WITH ap AS (
    SELECT target_hit_id AS hit_id, t, hit_id AS adj_hit, action, amount_micros
    FROM adj_status WHERE status = 'applied'
), agg AS (
    SELECT c.hit_id,
        coalesce(c.amount_micros, 0) AS gross,
        sum(CASE WHEN ap.action = 'refund' THEN coalesce(ap.amount_micros, coalesce(c.amount_micros, 0)) ELSE 0 END)::HUGEINT AS refunds,
        bool_or(ap.action = 'refund' AND ap.amount_micros IS NULL) AS full_refund,
        arg_max(ap.action, (ap.t, ap.adj_hit)) FILTER (WHERE ap.action IN ('reject', 'restore')) AS last_rr
    FROM att c JOIN ap USING (hit_id)
    GROUP BY c.hit_id, c.amount_micros
)
SELECT c.hit_id,
    least(coalesce(agg.gross, coalesce(c.amount_micros, 0))::HUGEINT, coalesce(agg.refunds, 0))::BIGINT AS refunded_micros,
    coalesce(agg.full_refund, false) AS full_refund,
    coalesce(agg.last_rr = 'reject', false) AS rejected
FROM att c LEFT JOIN agg USING (hit_id);

-- Commission rules of a conversion: offer's rules, member and event empty or equal (never
-- `click`), valid_from empty or ≤ the conversion's local date; the most specific, then the
-- greatest valid_from (empty the oldest).
CREATE OR REPLACE TEMP TABLE conv_rule AS
SELECT * EXCLUDE (rn) FROM (
    SELECT c.hit_id, r.percent_e4, r.flat_micros,
        row_number() OVER (PARTITION BY c.hit_id
            ORDER BY (r.r_member IS NOT NULL)::INT * 2 + (r.r_event IS NOT NULL)::INT DESC, r.r_from DESC NULLS LAST) AS rn
    FROM att c JOIN rules r
      ON r.r_offer = c.offer_id AND (r.r_member IS NULL OR r.r_member = c.member_id)
     AND (r.r_event IS NULL OR (r.r_event = c.event AND r.r_event <> 'click'))
     AND (r.r_from IS NULL OR r.r_from <= c.date)
    WHERE c.status = 'attributed' AND (r.r_event IS NULL OR r.r_event <> 'click')
) WHERE rn = 1;

CREATE OR REPLACE TEMP TABLE attributions AS
WITH s AS (
    SELECT a.*, cs.refunded_micros, cs.full_refund, cs.rejected,
        coalesce(o.lock_us, 30 * 86400000000) AS lock_us,
        a.amount_micros - cs.refunded_micros AS net,
        r.percent_e4, r.flat_micros, r.hit_id IS NOT NULL AS has_rule
    FROM att a JOIN conv_state cs USING (hit_id)
    LEFT JOIN offers o USING (offer_id)
    LEFT JOIN conv_rule r USING (hit_id)
    WHERE a.date BETWEEN getvariable('date_from') AND getvariable('date_to')
), p AS (
    -- n = net × percent_e4 (the percent part is n / 10⁶, rounded half to even)
    SELECT *, net::HUGEINT * percent_e4::HUGEINT AS n FROM s
)
SELECT hit_id, ts, date, kind, offer_id, event, order_id, amount_micros, currency, click_id, visitor_id, status,
    member_id, link_code, click_ts, lag_seconds, coupon, via,
    CASE WHEN rejected THEN 'rejected'
         WHEN full_refund OR (refunded_micros = coalesce(amount_micros, 0) AND refunded_micros > 0) THEN 'refunded'
         WHEN refunded_micros > 0 THEN 'partially_refunded'
         ELSE 'valid' END AS adjusted_state,
    refunded_micros,
    net AS net_amount_micros,
    make_timestamp(t + lock_us)::TIMESTAMPTZ AS lock_ts,
    CASE WHEN status <> 'attributed' THEN NULL
         WHEN rejected OR full_refund OR (refunded_micros = coalesce(amount_micros, 0) AND refunded_micros > 0) THEN 0
         WHEN NOT has_rule THEN 0
         ELSE (coalesce(
                  CASE WHEN n IS NOT NULL THEN
                      n // 1000000
                      + CASE WHEN 2 * (n % 1000000) > 1000000
                               OR (2 * (n % 1000000) = 1000000 AND (n // 1000000) % 2 = 1) THEN 1 ELSE 0 END
                  END, 0)
               + coalesce(flat_micros, 0))::BIGINT
    END AS commission_micros
FROM p;

CREATE OR REPLACE TEMP TABLE conversions AS
SELECT date, offer_id, member_id, event, count(*) AS conversions
FROM attributions WHERE status = 'attributed'
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE revenue AS
SELECT date, offer_id, member_id, currency, count(*) AS orders, sum(amount_micros)::BIGINT AS revenue_micros,
    coalesce(sum(refunded_micros) FILTER (WHERE adjusted_state <> 'rejected'), 0)::BIGINT AS refunded_micros,
    coalesce(sum(net_amount_micros) FILTER (WHERE adjusted_state <> 'rejected'), 0)::BIGINT AS net_revenue_micros
FROM attributions WHERE status = 'attributed' AND amount_micros IS NOT NULL
GROUP BY ALL;

-- Per-click payouts: the offer's `click` rules, member empty or the row's, valid_from ≤
-- the click's date; member-specific first, then the greatest valid_from.
CREATE OR REPLACE TEMP TABLE click_pay AS
SELECT * EXCLUDE (rn) FROM (
    SELECT k.date, k.offer_id, k.member_id, coalesce(o.o_currency, 'USD') AS currency,
        k.clicks AS clicks_paid, k.clicks * coalesce(r.flat_micros, 0) AS click_commission_micros,
        row_number() OVER (PARTITION BY k.date, k.offer_id, k.member_id
            ORDER BY (r.r_member IS NOT NULL)::INT DESC, r.r_from DESC NULLS LAST) AS rn
    FROM clicks k
    JOIN rules r ON r.r_offer = k.offer_id AND r.r_event = 'click'
     AND (r.r_member IS NULL OR r.r_member = k.member_id) AND (r.r_from IS NULL OR r.r_from <= k.date)
    LEFT JOIN offers o ON o.offer_id = k.offer_id
    WHERE k.clicks > 0
) WHERE rn = 1;

CREATE OR REPLACE TEMP TABLE earnings AS
WITH cv AS (
    SELECT a.date, a.offer_id, a.member_id, coalesce(nullif(a.currency, ''), o.o_currency, 'USD') AS currency,
        count(*) AS conversions,
        sum(coalesce(a.amount_micros, 0)) AS gross_micros,
        sum(a.refunded_micros) AS refunded_micros,
        sum(coalesce(a.net_amount_micros, 0)) AS net_micros,
        sum(a.commission_micros) AS conversion_commission_micros
    FROM attributions a LEFT JOIN offers o USING (offer_id)
    WHERE a.status = 'attributed' AND a.adjusted_state <> 'rejected'
    GROUP BY ALL
)
SELECT date, offer_id, member_id, currency,
    coalesce(cv.conversions, 0)::BIGINT AS conversions,
    coalesce(cv.gross_micros, 0)::BIGINT AS gross_micros,
    coalesce(cv.refunded_micros, 0)::BIGINT AS refunded_micros,
    coalesce(cv.net_micros, 0)::BIGINT AS net_micros,
    coalesce(cp.clicks_paid, 0)::BIGINT AS clicks_paid,
    coalesce(cv.conversion_commission_micros, 0)::BIGINT AS conversion_commission_micros,
    coalesce(cp.click_commission_micros, 0)::BIGINT AS click_commission_micros,
    (coalesce(cv.conversion_commission_micros, 0) + coalesce(cp.click_commission_micros, 0))::BIGINT AS commission_micros
FROM cv FULL OUTER JOIN click_pay cp USING (date, offer_id, member_id, currency);

CREATE OR REPLACE TEMP TABLE adjustments AS
SELECT hit_id, ts, CAST(timezone(getvariable('tz'), ts) AS DATE) AS date, offer_id, event, order_id, action,
    amount_micros, currency, adjustment_id, status,
    CASE WHEN status <> 'no_conversion' THEN target_hit_id END AS target_hit_id,
    CASE WHEN status <> 'no_conversion' AND target_status = 'attributed' THEN target_member END AS member_id
FROM adj_status
WHERE CAST(timezone(getvariable('tz'), ts) AS DATE) BETWEEN getvariable('date_from') AND getvariable('date_to');
