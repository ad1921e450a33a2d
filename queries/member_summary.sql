-- purpose: One row per offer, member and currency over the dates: clicks, unique clicks
--   (daily unique visitors, summed over the dates), bot clicks, attributed conversions,
--   orders with an amount, revenue, conversion rate (attributed conversions per 100 clicks)
--   and earnings per click (revenue / clicks, rounded half up to the cent). A member paid
--   in two currencies has a row for each, its click and conversion counts repeated; a
--   member without revenue has one row with an empty currency. Biggest earners first.
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
)
SELECT offer_id, member_id, currency, clicks, unique_clicks, bot_clicks, conversions, orders, revenue_micros,
       CASE WHEN clicks = 0 THEN NULL ELSE ROUND(100.0 * conversions / clicks, 2) END AS conversion_rate_pct,
       CASE WHEN clicks = 0 THEN NULL
            ELSE DIV(revenue_micros + clicks * 5000, clicks * 10000) * 10000 END AS epc_micros
FROM t
ORDER BY revenue_micros DESC, conversions DESC, clicks DESC, offer_id, member_id, currency
LIMIT :limit
