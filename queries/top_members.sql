-- purpose: The members who earned most in one currency, across every offer: rank, member,
--   offers, clicks, unique clicks, attributed conversions, orders, revenue, conversion rate
--   and earnings per click (rounded half up to the cent). Ties in revenue go to more
--   conversions, then to the member id.
-- param: currency (string, default USD) rank by revenue in this currency
-- param: limit (int, default 10) how many members
-- tables: clicks, conversions, revenue
WITH c AS (
    SELECT member_id, COUNT(DISTINCT offer_id) AS offers,
           SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks
    FROM clicks
    GROUP BY member_id
), v AS (
    SELECT member_id, SUM(conversions) AS conversions FROM conversions GROUP BY member_id
), r AS (
    SELECT member_id, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros
    FROM revenue
    WHERE currency = UPPER(:currency)
    GROUP BY member_id
), m AS (
    SELECT member_id FROM c UNION SELECT member_id FROM v UNION SELECT member_id FROM r
), t AS (
    SELECT m.member_id,
           COALESCE(c.offers, 0) AS offers,
           COALESCE(c.clicks, 0) AS clicks,
           COALESCE(c.unique_clicks, 0) AS unique_clicks,
           COALESCE(v.conversions, 0) AS conversions,
           COALESCE(r.orders, 0) AS orders,
           COALESCE(r.revenue_micros, 0) AS revenue_micros
    FROM m
    LEFT JOIN c ON c.member_id = m.member_id
    LEFT JOIN v ON v.member_id = m.member_id
    LEFT JOIN r ON r.member_id = m.member_id
), k AS (
    SELECT *, 0 - revenue_micros AS revenue_key, 0 - conversions AS conversions_key FROM t
)
SELECT ROW_NUMBER() OVER (ORDER BY revenue_key, conversions_key, member_id) AS rank,
       member_id, offers, clicks, unique_clicks, conversions, orders,
       UPPER(:currency) AS currency, revenue_micros,
       CASE WHEN clicks = 0 THEN NULL ELSE ROUND(100.0 * conversions / clicks, 2) END AS conversion_rate_pct,
       -- Half up to the cent: floor((revenue + half a cent per click) / (a cent per click)),
       -- in integers (// truncates toward zero, so a negative remainder steps down one).
       CASE WHEN clicks = 0 THEN NULL
            ELSE ((revenue_micros + clicks * 5000) // (clicks * 10000)
                  - CASE WHEN (revenue_micros + clicks * 5000) % (clicks * 10000) < 0 THEN 1 ELSE 0 END) * 10000
       END AS epc_micros
FROM k
ORDER BY rank
LIMIT :limit
