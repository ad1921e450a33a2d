#!/usr/bin/env python3
"""clicktrail attribution on Apache Spark: SPEC §4–5, §7 and §8, the rules of the polars
pipeline (pipeline/src/stages, rules.rs, settle.rs) and of its SQL twin
(queries/attribution.sql), written in Spark SQL.

The statements below follow queries/attribution.sql one for one (same names, same order),
translated by hand rather than by a transpiler: the twin leans on DuckDB-only forms
(UNPIVOT over a CSV, DISTINCT ON, EXCLUDE, getvariable, error(), HUGEINT, list lambdas)
that have no mechanical Spark equivalent. pipeline/tests/spark.rs runs both engines on the
same lakes and compares every table row for row and type for type, and checks that the
shared parts (bot tokens, statuses, table columns) equal the Rust constants.

Usually started by `pipeline run --engine spark`, which lists the hits files, passes them
with --hits-list (a file in the staging folder), and publishes the staged tables (one object per date, replaced by a
single put) and the run manifest. It can also be run by spark-submit alone (README, "When
one machine is not enough"); it then finds the hits by date folder and only stages.

usage: spark-submit clicktrail_spark.py --lake URL --window-name 28d --window-us N --tz ZONE
         --from D --to D --staging URL [--hits-list FILE] [--registry URL]

Output: STAGING/<table>/_d=YYYY-MM-DD/part-*.parquet (exactly one file per date that has
rows; each file keeps its own `date` column, unlike partitionBy("date")) and
STAGING/_job.json. A date without rows has no file: the launcher writes its empty file.
"""

import argparse
import csv
import io
import json
import sys
import time as _clock
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# §4.2: the same tokens, in the same order, as pipeline/src/stages/bots.rs (a test checks).
BOT_TOKENS = [
    "bot", "crawl", "spider", "slurp", "facebookexternalhit", "whatsapp", "preview", "headless", "curl", "wget",
    "python-requests",
    "mediapartners-google", "google-inspectiontool", "feedfetcher", "ia_archiver", "scrapy", "archive.org",
    "meta-externalagent", "meta-externalfetcher", "facebookcatalog", "chatgpt-user", "perplexity",
    "embedly", "vkshare", "skypeuripreview", "redditbot", "iframely",
    "pingdom", "uptime", "lighthouse", "phantomjs", "puppeteer", "playwright", "selenium", "python-urllib",
    "go-http-client", "libwww-perl", "apache-httpclient", "okhttp", "java/", "node-fetch", "axios/",
]
# Statuses, as in lake/src/schema.rs (a test checks).
STATUSES = ["attributed", "duplicate", "unknown_click", "offer_mismatch", "outside_window", "no_click", "too_fast"]
ADJUSTMENT_STATUSES = ["applied", "late", "no_conversion", "currency_mismatch", "duplicate"]
ADJUSTED_STATES = ["valid", "partially_refunded", "refunded", "rejected"]

DAY_US = 86_400_000_000
DEFAULT_LOCK_DAYS = 30

# §2, every column with its type: passed explicitly, because without a schema Spark takes
# one file's footer and silently drops the columns other files have.
HIT_COLUMNS = [
    ("hit_id", "string"), ("kind", "string"), ("ts", "timestamp"), ("offer_id", "string"), ("member_id", "string"),
    ("link_code", "string"), ("click_id", "string"), ("visitor_id", "string"), ("event", "string"),
    ("order_id", "string"), ("amount_micros", "bigint"), ("currency", "string"), ("user_agent", "string"),
    ("referer", "string"), ("ip_hash", "string"), ("params", "string"), ("action", "string"),
    ("adjustment_id", "string"), ("coupon", "string"),
]

# Read by no rule: never cached.
UNUSED_HIT_COLUMNS = {"referer", "ip_hash", "params"}

# The report tables, columns in file order with their types (lake/src/reports.rs; a test checks).
_S, _I, _D, _T = "string", "bigint", "date", "timestamp"
TABLES = {
    "clicks": [("date", _D), ("offer_id", _S), ("member_id", _S), ("clicks", _I), ("unique_clicks", _I), ("bot_clicks", _I)],
    "conversions": [("date", _D), ("offer_id", _S), ("member_id", _S), ("event", _S), ("conversions", _I)],
    "revenue": [
        ("date", _D), ("offer_id", _S), ("member_id", _S), ("currency", _S), ("orders", _I), ("revenue_micros", _I),
        ("refunded_micros", _I), ("net_revenue_micros", _I),
    ],
    "attributions": [
        ("hit_id", _S), ("ts", _T), ("date", _D), ("kind", _S), ("offer_id", _S), ("event", _S), ("order_id", _S),
        ("amount_micros", _I), ("currency", _S), ("click_id", _S), ("visitor_id", _S), ("status", _S),
        ("member_id", _S), ("link_code", _S), ("click_ts", _T), ("lag_seconds", _I), ("coupon", _S), ("via", _S),
        ("adjusted_state", _S), ("refunded_micros", _I), ("net_amount_micros", _I), ("lock_ts", _T),
        ("commission_micros", _I),
    ],
    "earnings": [
        ("date", _D), ("offer_id", _S), ("member_id", _S), ("currency", _S), ("conversions", _I), ("gross_micros", _I),
        ("refunded_micros", _I), ("net_micros", _I), ("clicks_paid", _I), ("conversion_commission_micros", _I),
        ("click_commission_micros", _I), ("commission_micros", _I),
    ],
    "adjustments": [
        ("hit_id", _S), ("ts", _T), ("date", _D), ("offer_id", _S), ("event", _S), ("order_id", _S), ("action", _S),
        ("amount_micros", _I), ("currency", _S), ("adjustment_id", _S), ("status", _S), ("target_hit_id", _S),
        ("member_id", _S),
    ],
}

# What a date needs from the session: UTC everywhere. Spark's session zone defaults to the
# machine's, and Parquet output to INT96 timestamps; both would change the files.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.sources.partitionOverwriteMode": "static",
}


class JobError(Exception):
    """A bad input the job names in one line (exit 2)."""


STARTED = _clock.monotonic()


def log(message):
    """One progress line on stderr, which `pipeline run --engine spark` streams."""
    print(f"clicktrail-spark [{_clock.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def sql_str(text):
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def local_midnight_us(tz, d):
    """µs of 00:00 of date d in zone tz (Python's zoneinfo, as chrono-tz in the pipeline)."""
    return int(datetime.combine(d, time(0), tzinfo=ZoneInfo(tz)).timestamp()) * 1_000_000


def hadoop_path(spark, url):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(url)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def read_text(spark, url):
    """A registry file's text, or None when it is missing or empty."""
    p, fs = hadoop_path(spark, url)
    if not fs.exists(p) or fs.getFileStatus(p).getLen() == 0:
        return None
    return "\n".join(r[0] for r in spark.read.text(url, wholetext=True).collect())


def csv_rows(text):
    """Rows of a registry CSV by column name; a missing column or an empty cell is None."""
    if text is None:
        return []
    reader = csv.DictReader(io.StringIO(text))
    out = []
    for row in reader:
        clean = {}
        for k, v in row.items():
            if k is None:
                continue
            v = (v or "").strip() if isinstance(v, str) else None
            clean[k.strip()] = v if v else None
        out.append(clean)
    return out


def decimal_units(text, digits):
    """`split_part(x, '.', 1) * 10^digits + rpad(fraction, digits, '0')` of the twin."""
    whole, _, frac = text.partition(".")
    return int(whole) * 10 ** digits + int((frac + "0" * digits)[:digits])


def load_registry(spark, registry):
    offers, seen = [], set()
    for r in csv_rows(read_text(spark, registry + "/offers.csv")):
        oid = r.get("offer_id")
        if oid is None or oid in seen:
            continue
        seen.add(oid)
        lock = r.get("lock_days")
        lag = r.get("min_lag_seconds")
        offers.append((
            oid, (r.get("currency") or "USD").upper(),
            (int(lock) if lock is not None else DEFAULT_LOCK_DAYS) * DAY_US,
            int(lag) if lag is not None else 0,
            (r.get("coupon_priority") or "").lower() == "coupon",
        ))
    coupons = []
    for r in csv_rows(read_text(spark, registry + "/coupons.csv")):
        code = r.get("code")
        coupons.append((
            code.upper() if code else None, r.get("offer_id"), r.get("member_id"),
            date.fromisoformat(r["valid_from"]) if r.get("valid_from") else None,
            date.fromisoformat(r["valid_to"]) if r.get("valid_to") else None,
        ))
    rules = []
    for i, r in enumerate(csv_rows(read_text(spark, registry + "/commissions.csv"))):
        if r.get("offer_id") is None:
            continue
        rules.append((
            i + 2, r["offer_id"], r.get("member_id"), r.get("event"),
            date.fromisoformat(r["valid_from"]) if r.get("valid_from") else None,
            decimal_units(r["percent"], 4) if r.get("percent") else None,
            decimal_units(r["flat"], 6) if r.get("flat") else None,
        ))
    # Two rules equal in offer, member, event and valid_from are an error naming both lines.
    first = {}
    for line, o, m, e, f, _, _ in rules:
        key = (o, m, e, f)
        if key in first:
            raise JobError(
                f"commissions.csv line {line} repeats the rule of line {first[key]} (same offer {o}, member {m or ''}, "
                f"event {e or ''} and valid_from {f or ''})"
            )
        first[key] = line
    spark.createDataFrame(
        offers, "offer_id string, o_currency string, lock_us bigint, min_lag_s bigint, coupon_first boolean"
    ).createOrReplaceTempView("offers")
    spark.createDataFrame(
        coupons, "k_code string, k_offer string, k_member string, k_from date, k_to date"
    ).createOrReplaceTempView("coupons")
    spark.createDataFrame(
        rules,
        "line bigint, r_offer string, r_member string, r_event string, r_from date, percent_e4 bigint, flat_micros bigint",
    ).createOrReplaceTempView("rules")
    return max([DEFAULT_LOCK_DAYS * DAY_US] + [o[2] for o in offers])


def hit_paths(spark, args, lo_us, hi_us):
    """The hits files to read: the launcher's list, or every `.parquet` in the date folders
    the scan can touch (the glob is Hadoop's, so it works on s3a://, gs://, hdfs://)."""
    if args.hits_list:
        return [r[0].strip() for r in spark.read.text(args.hits_list).collect() if r[0].strip()]
    first = datetime.utcfromtimestamp(lo_us // 1_000_000).date() - timedelta(days=1)
    last = datetime.utcfromtimestamp(hi_us // 1_000_000).date() + timedelta(days=1)
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    out = []
    for day in days:
        p, fs = hadoop_path(spark, f"{args.lake}/hits/date={day}")
        if not fs.exists(p):
            continue
        for st in fs.globStatus(spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"{args.lake}/hits/date={day}/hour=*/*.parquet")) or []:
            out.append(st.getPath().toString())
    return out


def statements(w, tz, date_from, date_to):
    """The twin's statements after `hits`, in Spark SQL (W in µs; tz, dates as SQL text)."""
    tzs = sql_str(tz)
    local_date = lambda ts: f"to_date(convert_timezone('UTC', {tzs}, CAST({ts} AS TIMESTAMP_NTZ)))"  # noqa: E731
    bots = ", ".join(sql_str(t) for t in BOT_TOKENS)
    uuid7 = r"'^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\\z'"
    uuid_ms = "CAST(conv(concat(substr(c.ckey, 1, 8), substr(c.ckey, 10, 4)), 16, 10) AS BIGINT) * 1000"
    d_from, d_to = f"DATE {sql_str(date_from)}", f"DATE {sql_str(date_to)}"
    return [
        # §4.3 conversions and their order duplicates. Conversions without an order id are
        # never duplicates; their own partition key (the hit id) keeps them from all
        # landing in one window partition.
        ("conv", f"""
        SELECT *,
            coalesce(order_id IS NOT NULL AND order_id <> ''
                     AND lag(t) OVER (PARTITION BY offer_id, ev, order_id,
                                      CASE WHEN order_id IS NULL OR order_id = '' THEN hit_id END
                                      ORDER BY t, hit_id) >= t - {w},
                     false) AS dup
        FROM (
            SELECT hit_id, kind, t, ts, offer_id, coalesce(nullif(event, ''), 'purchase') AS ev, order_id, amount_micros,
                upper(currency) AS currency, click_id, visitor_id, coupon,
                CASE WHEN click_id = '' THEN NULL ELSE lower(click_id) END AS ckey,
                CASE WHEN visitor_id = '' THEN NULL ELSE visitor_id END AS vkey
            FROM hits WHERE kind IN ('pixel', 'postback')
        ) x""", True),
        ("clk", """
        SELECT hit_id AS c_hit, click_id AS c_click_id, lower(click_id) AS ckey, offer_id AS c_offer,
            visitor_id AS c_visitor, member_id AS c_member, link_code AS c_link, t AS ct
        FROM hits WHERE kind = 'click'""", False),
        # §4.4 sessions: by click_id, else by visitor on the offer; latest click in [t − W, t].
        ("sess", f"""
        SELECT hit_id, c_hit, c_click_id, ckey, c_offer, c_visitor, c_member, c_link, ct FROM (
            SELECT c.hit_id, k.*,
                row_number() OVER (PARTITION BY c.hit_id ORDER BY k.ct DESC, k.c_click_id DESC NULLS LAST, k.c_hit DESC) AS rn
            FROM conv c JOIN clk k ON k.ckey = c.ckey
            WHERE NOT c.dup AND c.ckey IS NOT NULL AND k.ct BETWEEN c.t - {w} AND c.t
            UNION ALL
            SELECT c.hit_id, k.*,
                row_number() OVER (PARTITION BY c.hit_id ORDER BY k.ct DESC, k.c_click_id DESC NULLS LAST, k.c_hit DESC) AS rn
            FROM conv c JOIN clk k ON k.c_offer = c.offer_id AND k.c_visitor = c.vkey
            WHERE NOT c.dup AND c.ckey IS NULL AND c.vkey IS NOT NULL AND k.ct BETWEEN c.t - {w} AND c.t
        ) x WHERE rn = 1""", False),
        # §4.4–5 and §8 over every conversion read; `attributions` keeps the range's dates.
        ("att", f"""
        WITH st AS (
            SELECT c.*, s.c_click_id, s.c_offer, s.c_member, s.c_link, s.ct,
                CASE
                    WHEN c.dup THEN 'duplicate'
                    WHEN c.ckey IS NOT NULL THEN CASE
                        WHEN s.ct IS NOT NULL AND s.c_offer = c.offer_id THEN 'attributed'
                        WHEN s.ct IS NOT NULL THEN 'offer_mismatch'
                        WHEN c.ckey RLIKE {uuid7}
                             AND ({uuid_ms} < c.t - {w} OR {uuid_ms} > c.t)
                             THEN 'outside_window'
                        ELSE 'unknown_click' END
                    WHEN s.ct IS NOT NULL THEN 'attributed'
                    ELSE 'no_click'
                END AS s_status,
                {local_date('c.ts')} AS day,
                coalesce(o.min_lag_s, 0) AS min_lag_s, coalesce(o.coupon_first, false) AS coupon_first
            FROM conv c LEFT JOIN sess s ON s.hit_id = c.hit_id LEFT JOIN offers o ON o.offer_id = c.offer_id
        ), cp AS (
            SELECT st.*, k.k_member,
                k.k_member IS NOT NULL AND (k.k_from IS NULL OR k.k_from <= st.day) AND (k.k_to IS NULL OR st.day <= k.k_to) AS coupon_valid
            FROM st LEFT JOIN coupons k ON k.k_offer = st.offer_id AND k.k_code = upper(nullif(st.coupon, ''))
        ), dec AS (
            SELECT *,
                coalesce(coupon_valid, false) AND NOT dup
                    AND (coupon_first OR s_status IN ('unknown_click', 'outside_window', 'offer_mismatch', 'no_click')) AS by_coupon
            FROM cp
        ), fin AS (
            SELECT *, NOT by_coupon AND s_status = 'attributed' AS kept,
                NOT by_coupon AND s_status = 'attributed' AND (t - ct) div 1000000 < min_lag_s AS too_fast
            FROM dec
        )
        SELECT hit_id, ts, day AS `date`, kind, offer_id, ev AS event, order_id,
            amount_micros, currency,
            CASE WHEN (click_id IS NULL OR click_id = '') AND kept THEN c_click_id ELSE click_id END AS click_id,
            visitor_id,
            CASE WHEN by_coupon THEN 'attributed' WHEN too_fast THEN 'too_fast' ELSE s_status END AS status,
            CASE WHEN by_coupon THEN k_member WHEN kept THEN c_member END AS member_id,
            CASE WHEN kept THEN c_link END AS link_code,
            CASE WHEN kept THEN timestamp_micros(ct) END AS click_ts,
            CASE WHEN kept THEN (t - ct) div 1000000 END AS lag_seconds,
            upper(nullif(coupon, '')) AS coupon,
            CASE WHEN by_coupon THEN 'coupon' WHEN kept AND NOT too_fast THEN CASE WHEN ckey IS NOT NULL THEN 'click' ELSE 'visitor' END END AS via,
            t, dup
        FROM fin""", True),
        # §4.2 bots: the same token list as pipeline/src/stages/bots.rs, matched as substrings
        # (no regular expression: RLIKE matches anywhere and Java's $ before a newline).
        ("clicks", f"""
        SELECT `date`, offer_id, member_id,
            count(*) FILTER (WHERE NOT bot) AS clicks,
            count(DISTINCT visitor_id) FILTER (WHERE NOT bot) AS unique_clicks,
            count(*) FILTER (WHERE bot) AS bot_clicks
        FROM (
            SELECT {local_date('ts')} AS `date`, offer_id, member_id, visitor_id,
                user_agent IS NULL OR user_agent = ''
                    OR exists(array({bots}), tok -> contains(lower(user_agent), tok)) AS bot
            FROM hits WHERE kind = 'click'
        ) x
        WHERE `date` BETWEEN {d_from} AND {d_to}
        GROUP BY `date`, offer_id, member_id""", True),
        # §7 adjustments.
        ("adj", f"""
        SELECT h.hit_id, h.ts, h.t, h.offer_id, coalesce(nullif(h.event, ''), 'purchase') AS event, h.order_id, h.action,
            h.amount_micros, upper(nullif(h.currency, '')) AS currency, h.adjustment_id,
            coalesce(o.lock_us, {DEFAULT_LOCK_DAYS * DAY_US}) AS lock_us
        FROM hits h LEFT JOIN offers o ON o.offer_id = h.offer_id
        WHERE h.kind = 'adjustment'""", True),
        ("adj_target", f"""
        SELECT hit_id, target_hit_id, target_t, target_currency, target_status, target_member FROM (
            SELECT a.hit_id, c.hit_id AS target_hit_id, c.t AS target_t, c.currency AS target_currency,
                c.status AS target_status, c.member_id AS target_member,
                row_number() OVER (PARTITION BY a.hit_id ORDER BY c.t DESC, c.hit_id DESC) AS rn
            FROM adj a JOIN att c
              ON c.offer_id = a.offer_id AND c.event = a.event AND c.order_id = a.order_id
            WHERE a.order_id IS NOT NULL AND a.order_id <> '' AND NOT c.dup
              AND c.t BETWEEN a.t - (a.lock_us + {w}) AND a.t
        ) x WHERE rn = 1""", False),
        # The twin's EXISTS, as a semi join.
        ("adj_dup", f"""
        SELECT a.hit_id FROM adj a LEFT SEMI JOIN adj e
          ON e.offer_id = a.offer_id AND e.adjustment_id = a.adjustment_id
         AND (e.t < a.t OR (e.t = a.t AND e.hit_id < a.hit_id))
         AND e.t >= a.t - (a.lock_us + {w})
        WHERE a.adjustment_id IS NOT NULL AND a.adjustment_id <> ''""", False),
        ("adj_status", """
        SELECT a.*, tg.target_hit_id, tg.target_t, tg.target_status, tg.target_member,
            CASE
                WHEN tg.target_hit_id IS NULL THEN 'no_conversion'
                WHEN d.hit_id IS NOT NULL THEN 'duplicate'
                WHEN a.t > tg.target_t + a.lock_us THEN 'late'
                WHEN a.currency IS NOT NULL AND (tg.target_currency IS NULL OR tg.target_currency <> a.currency)
                    THEN 'currency_mismatch'
                ELSE 'applied'
            END AS status
        FROM adj a LEFT JOIN adj_target tg ON tg.hit_id = a.hit_id LEFT JOIN adj_dup d ON d.hit_id = a.hit_id""", True),
        # §7.3 the state of every conversion over its applied adjustments (sums in
        # DECIMAL(38,0), the twin's HUGEINT).
        ("conv_state", """
        WITH ap AS (
            SELECT target_hit_id AS hit_id, t, hit_id AS adj_hit, action, amount_micros
            FROM adj_status WHERE status = 'applied'
        ), agg AS (
            SELECT c.hit_id,
                coalesce(c.amount_micros, 0) AS gross,
                sum(CASE WHEN ap.action = 'refund' THEN CAST(coalesce(ap.amount_micros, coalesce(c.amount_micros, 0)) AS DECIMAL(38, 0))
                         ELSE CAST(0 AS DECIMAL(38, 0)) END) AS refunds,
                bool_or(ap.action = 'refund' AND ap.amount_micros IS NULL) AS full_refund,
                max_by(ap.action, struct(ap.t, ap.adj_hit)) FILTER (WHERE ap.action IN ('reject', 'restore')) AS last_rr
            FROM att c JOIN ap ON ap.hit_id = c.hit_id
            GROUP BY c.hit_id, c.amount_micros
        )
        SELECT c.hit_id,
            CAST(least(CAST(coalesce(agg.gross, coalesce(c.amount_micros, 0)) AS DECIMAL(38, 0)),
                       coalesce(agg.refunds, CAST(0 AS DECIMAL(38, 0)))) AS BIGINT) AS refunded_micros,
            coalesce(agg.full_refund, false) AS full_refund,
            coalesce(agg.last_rr = 'reject', false) AS rejected
        FROM att c LEFT JOIN agg ON agg.hit_id = c.hit_id""", False),
        ("conv_rule", """
        SELECT hit_id, percent_e4, flat_micros FROM (
            SELECT c.hit_id, r.percent_e4, r.flat_micros,
                row_number() OVER (PARTITION BY c.hit_id
                    ORDER BY CAST(r.r_member IS NOT NULL AS INT) * 2 + CAST(r.r_event IS NOT NULL AS INT) DESC, r.r_from DESC NULLS LAST) AS rn
            FROM att c JOIN rules r
              ON r.r_offer = c.offer_id AND (r.r_member IS NULL OR r.r_member = c.member_id)
             AND (r.r_event IS NULL OR (r.r_event = c.event AND r.r_event <> 'click'))
             AND (r.r_from IS NULL OR r.r_from <= c.`date`)
            WHERE c.status = 'attributed' AND (r.r_event IS NULL OR r.r_event <> 'click')
        ) x WHERE rn = 1""", False),
        ("attributions", f"""
        WITH s AS (
            SELECT a.*, cs.refunded_micros, cs.full_refund, cs.rejected,
                coalesce(o.lock_us, {DEFAULT_LOCK_DAYS * DAY_US}) AS lock_us,
                a.amount_micros - cs.refunded_micros AS net,
                r.percent_e4, r.flat_micros, r.hit_id IS NOT NULL AS has_rule
            FROM att a JOIN conv_state cs ON cs.hit_id = a.hit_id
            LEFT JOIN offers o ON o.offer_id = a.offer_id
            LEFT JOIN conv_rule r ON r.hit_id = a.hit_id
            WHERE a.`date` BETWEEN {d_from} AND {d_to}
        ), p AS (
            -- n = net × percent_e4 (the percent part is n / 10⁶, rounded half to even)
            SELECT *, CAST(net AS DECIMAL(38, 0)) * CAST(percent_e4 AS DECIMAL(38, 0)) AS n FROM s
        ), q AS (
            SELECT *, CAST(floor(n / 1000000) AS DECIMAL(38, 0)) AS nq, n - CAST(floor(n / 1000000) AS DECIMAL(38, 0)) * 1000000 AS nr FROM p
        )
        SELECT hit_id, ts, `date`, kind, offer_id, event, order_id, amount_micros, currency, click_id, visitor_id, status,
            member_id, link_code, click_ts, lag_seconds, coupon, via,
            CASE WHEN rejected THEN 'rejected'
                 WHEN full_refund OR (refunded_micros = coalesce(amount_micros, 0) AND refunded_micros > 0) THEN 'refunded'
                 WHEN refunded_micros > 0 THEN 'partially_refunded'
                 ELSE 'valid' END AS adjusted_state,
            refunded_micros,
            net AS net_amount_micros,
            timestamp_micros(t + lock_us) AS lock_ts,
            CASE WHEN status <> 'attributed' THEN NULL
                 WHEN rejected OR full_refund OR (refunded_micros = coalesce(amount_micros, 0) AND refunded_micros > 0) THEN 0
                 WHEN NOT has_rule THEN 0
                 ELSE CAST(coalesce(
                          CASE WHEN n IS NOT NULL THEN
                              nq + CASE WHEN 2 * nr > 1000000 OR (2 * nr = 1000000 AND pmod(nq, 2) = 1) THEN 1 ELSE 0 END
                          END, 0)
                       + coalesce(flat_micros, 0) AS BIGINT)
            END AS commission_micros
        FROM q""", True),
        ("conversions", """
        SELECT `date`, offer_id, member_id, event, count(*) AS conversions
        FROM attributions WHERE status = 'attributed'
        GROUP BY `date`, offer_id, member_id, event""", False),
        ("revenue", """
        SELECT `date`, offer_id, member_id, currency, count(*) AS orders, CAST(sum(amount_micros) AS BIGINT) AS revenue_micros,
            CAST(coalesce(sum(refunded_micros) FILTER (WHERE adjusted_state <> 'rejected'), 0) AS BIGINT) AS refunded_micros,
            CAST(coalesce(sum(net_amount_micros) FILTER (WHERE adjusted_state <> 'rejected'), 0) AS BIGINT) AS net_revenue_micros
        FROM attributions WHERE status = 'attributed' AND amount_micros IS NOT NULL
        GROUP BY `date`, offer_id, member_id, currency""", False),
        ("click_pay", """
        SELECT `date`, offer_id, member_id, currency, clicks_paid, click_commission_micros FROM (
            SELECT k.`date`, k.offer_id, k.member_id, coalesce(o.o_currency, 'USD') AS currency,
                k.clicks AS clicks_paid, k.clicks * coalesce(r.flat_micros, 0) AS click_commission_micros,
                row_number() OVER (PARTITION BY k.`date`, k.offer_id, k.member_id
                    ORDER BY CAST(r.r_member IS NOT NULL AS INT) DESC, r.r_from DESC NULLS LAST) AS rn
            FROM clicks k
            JOIN rules r ON r.r_offer = k.offer_id AND r.r_event = 'click'
             AND (r.r_member IS NULL OR r.r_member = k.member_id) AND (r.r_from IS NULL OR r.r_from <= k.`date`)
            LEFT JOIN offers o ON o.offer_id = k.offer_id
            WHERE k.clicks > 0
        ) x WHERE rn = 1""", False),
        ("earnings", """
        WITH cv AS (
            SELECT a.`date`, a.offer_id, a.member_id, coalesce(nullif(a.currency, ''), o.o_currency, 'USD') AS currency,
                count(*) AS conversions,
                sum(coalesce(a.amount_micros, 0)) AS gross_micros,
                sum(a.refunded_micros) AS refunded_micros,
                sum(coalesce(a.net_amount_micros, 0)) AS net_micros,
                sum(a.commission_micros) AS conversion_commission_micros
            FROM attributions a LEFT JOIN offers o ON o.offer_id = a.offer_id
            WHERE a.status = 'attributed' AND a.adjusted_state <> 'rejected'
            GROUP BY a.`date`, a.offer_id, a.member_id, coalesce(nullif(a.currency, ''), o.o_currency, 'USD')
        )
        SELECT `date`, offer_id, member_id, currency,
            CAST(coalesce(cv.conversions, 0) AS BIGINT) AS conversions,
            CAST(coalesce(cv.gross_micros, 0) AS BIGINT) AS gross_micros,
            CAST(coalesce(cv.refunded_micros, 0) AS BIGINT) AS refunded_micros,
            CAST(coalesce(cv.net_micros, 0) AS BIGINT) AS net_micros,
            CAST(coalesce(cp.clicks_paid, 0) AS BIGINT) AS clicks_paid,
            CAST(coalesce(cv.conversion_commission_micros, 0) AS BIGINT) AS conversion_commission_micros,
            CAST(coalesce(cp.click_commission_micros, 0) AS BIGINT) AS click_commission_micros,
            CAST(coalesce(cv.conversion_commission_micros, 0) + coalesce(cp.click_commission_micros, 0) AS BIGINT) AS commission_micros
        FROM cv FULL OUTER JOIN click_pay cp USING (`date`, offer_id, member_id, currency)""", False),
        ("adjustments", f"""
        SELECT hit_id, ts, {local_date('ts')} AS `date`, offer_id, event, order_id, action,
            amount_micros, currency, adjustment_id, status,
            CASE WHEN status <> 'no_conversion' THEN target_hit_id END AS target_hit_id,
            CASE WHEN status <> 'no_conversion' AND target_status = 'attributed' THEN target_member END AS member_id
        FROM adj_status
        WHERE {local_date('ts')} BETWEEN {d_from} AND {d_to}""", False),
    ]


def nullable(spark, df, table):
    """`df` with the table's columns in file order, its types, and every field nullable (as
    the polars pipeline writes them; Spark would mark counts and literals required)."""
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    cols = TABLES[table]
    shaped = df.selectExpr(*[f"CAST(`{c}` AS {t}) AS `{c}`" for c, t in cols])
    schema = StructType([StructField(c, _parse_datatype_string(t), True) for c, t in cols])
    jschema = spark._jsparkSession.parseDataType(schema.json())
    return DataFrame(spark._jsparkSession.createDataFrame(shaped._jdf.rdd(), jschema), spark)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="the lake as Hadoop names it: file:///…, s3a://…, gs://…, hdfs://…")
    ap.add_argument("--registry", help="registry folder (default LAKE/registry)")
    ap.add_argument("--window-name", required=True, help="the window as written in report paths (28d)")
    ap.add_argument("--window-us", required=True, type=int)
    ap.add_argument("--tz", default="UTC")
    ap.add_argument("--from", dest="date_from", required=True)
    ap.add_argument("--to", dest="date_to", required=True)
    ap.add_argument("--staging", required=True, help="where the tables are staged (Hadoop URL)")
    ap.add_argument("--hits-list", help="a text file (Hadoop URL) naming the hits files to read, one URL a line")
    args = ap.parse_args(argv)
    args.lake = args.lake.rstrip("/")
    registry = (args.registry or args.lake + "/registry").rstrip("/")
    try:
        ZoneInfo(args.tz)
        d_from, d_to = date.fromisoformat(args.date_from), date.fromisoformat(args.date_to)
    except Exception as e:  # noqa: BLE001 — any bad flag is one line
        raise JobError(f"bad flag: {e}") from e
    if d_to < d_from:
        raise JobError(f"--to {d_to} is before --from {d_from}")

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"clicktrail attribution {args.window_name} {d_from}..{d_to}")
    for k, v in SESSION_CONF.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    w = args.window_us

    lock_max = load_registry(spark, registry)
    scan_lo = local_midnight_us(args.tz, d_from - timedelta(days=1)) - lock_max - 2 * w
    clicks_hi = local_midnight_us(args.tz, d_to + timedelta(days=2))
    scan_hi = clicks_hi + lock_max

    paths = hit_paths(spark, args, scan_lo, scan_hi)
    schema = ", ".join(f"`{c}` {t}" for c, t in HIT_COLUMNS)
    if paths:
        raw = spark.read.schema(schema).parquet(*paths)
    else:
        raw = spark.createDataFrame([], schema)
    raw.createOrReplaceTempView("raw_hits")
    log(f"reading {len(paths)} hits files")
    input_rows = raw.count()
    used = ", ".join(c for c, _ in HIT_COLUMNS if c not in UNUSED_HIT_COLUMNS)
    kept = spark.sql(f"""
        SELECT {used}, unix_micros(ts) AS t FROM raw_hits
        WHERE unix_micros(ts) >= {scan_lo}
          AND unix_micros(ts) < CASE WHEN kind = 'click' THEN {clicks_hi} ELSE {scan_hi} END
    """)
    # §4.1: a retried upload repeats whole rows, so any one of them stands for the hit.
    # Each table more than one statement reads is computed once, here: a local checkpoint
    # (kept in the executors' memory and disk) cuts its lineage, so no later statement
    # can re-plan it from the hits files (cached plans are only matched, not guaranteed).
    kept.dropDuplicates(["hit_id"]).localCheckpoint().createOrReplaceTempView("hits")

    for name, sql, shared in statements(w, args.tz, args.date_from, args.date_to):
        log(f"planning {name}" + (" (computed once)" if shared else ""))
        df = spark.sql(sql)
        (df.localCheckpoint() if shared else df).createOrReplaceTempView(name)

    staging = args.staging.rstrip("/")
    for table in TABLES:
        log(f"writing {table}")
        df = nullable(spark, spark.table(table), table)
        # One file per date with its `date` column kept: partition by a copy of it.
        (df.withColumn("_d", df["date"]).repartition("_d").write.mode("overwrite")
           .partitionBy("_d").parquet(f"{staging}/{table}"))

    summary = {"engine": "spark", "spark_version": spark.version, "input_rows": input_rows,
               "input_files": len(paths), "master": spark.sparkContext.master}
    p, fs = hadoop_path(spark, f"{staging}/_job.json")
    out = fs.create(p, True)
    out.write(bytearray(json.dumps(summary).encode()))
    out.close()
    log("staged")
    spark.stop()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
