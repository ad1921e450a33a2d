-- purpose: One row per offer, member and currency over the dates: clicks, unique clicks
--   (daily unique visitors, summed over the dates), bot clicks, attributed conversions,
--   orders with an amount, revenue, conversion rate (attributed conversions per 100 clicks)
--   and earnings per click (revenue / clicks, rounded half up to the cent). A member paid
--   in two currencies has a row for each; the click and conversion counts are on the first
--   of them (currencies in alphabetical order) and empty on the others, so that summing a
--   column never counts a click twice; the rates use the member's counts on every row. A
--   member without revenue has one row with an empty currency. By currency (never ranked
--   against each other), biggest earners first.
-- param: offer (string, default '') only this offer; empty: every offer
-- param: limit (int, default 1000) rows at most
-- tables: clicks, conversions, revenue
WITH c AS (
    SELECT offer_id, member_id,
           SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks, SUM(bot_clicks) AS bot_clicks
    FROM clicks
    WHERE :offer = '' OR offer_id = :offer
    GROUP BY offer_id, member_id
), v AS (
    SELECT offer_id, member_id, SUM(conversions) AS conversions
    FROM conversions
    WHERE :offer = '' OR offer_id = :offer
    GROUP BY offer_id, member_id
), r AS (
    SELECT offer_id, member_id, currency, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros
    FROM revenue
    WHERE :offer = '' OR offer_id = :offer
    GROUP BY offer_id, member_id, currency
), m AS (
    SELECT offer_id, member_id FROM c
    UNION SELECT offer_id, member_id FROM v
    UNION SELECT offer_id, member_id FROM r
), t AS (
    SELECT m.offer_id, m.member_id, r.currency,
           COALESCE(c.clicks, 0) AS clicks,
           COALESCE(c.unique_clicks, 0) AS unique_clicks,
           COALESCE(c.bot_clicks, 0) AS bot_clicks,
           COALESCE(v.conversions, 0) AS conversions,
           COALESCE(r.orders, 0) AS orders,
           COALESCE(r.revenue_micros, 0) AS revenue_micros
    FROM m
    LEFT JOIN c ON c.offer_id = m.offer_id AND c.member_id = m.member_id
    LEFT JOIN v ON v.offer_id = m.offer_id AND v.member_id = m.member_id
    LEFT JOIN r ON r.offer_id = m.offer_id AND r.member_id = m.member_id
), n AS (
    SELECT t.*, ROW_NUMBER() OVER (PARTITION BY offer_id, member_id ORDER BY COALESCE(currency, '')) AS nth
    FROM t
)
SELECT offer_id, member_id, currency,
       CASE WHEN nth = 1 THEN clicks END AS clicks,
       CASE WHEN nth = 1 THEN unique_clicks END AS unique_clicks,
       CASE WHEN nth = 1 THEN bot_clicks END AS bot_clicks,
       CASE WHEN nth = 1 THEN conversions END AS conversions,
       orders, revenue_micros,
       CASE WHEN clicks = 0 THEN NULL ELSE ROUND(100.0 * conversions / clicks, 2) END AS conversion_rate_pct,
       -- Half up to the cent: floor((revenue + half a cent per click) / (a cent per click)),
       -- in integers (// truncates toward zero, so a negative remainder steps down one).
       CASE WHEN clicks = 0 THEN NULL
            ELSE ((revenue_micros + clicks * 5000) // (clicks * 10000)
                  - CASE WHEN (revenue_micros + clicks * 5000) % (clicks * 10000) < 0 THEN 1 ELSE 0 END) * 10000
       END AS epc_micros
FROM n
ORDER BY CASE WHEN currency IS NULL THEN 1 ELSE 0 END, currency, revenue_micros DESC, conversions DESC, clicks DESC,
         offer_id, member_id
LIMIT :limit
