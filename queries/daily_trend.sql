-- purpose: One row per date and currency: clicks, unique clicks (sum of the members'
--   daily unique visitors), bot clicks, attributed conversions, orders and revenue. A date
--   with revenue in two currencies has a row for each; its click and conversion counts are
--   on the first (currencies in alphabetical order) and empty on the others, so that
--   summing a column counts each once. A date without revenue has one row with an empty
--   currency. Oldest date first.
-- param: offer (string, default '') only this offer; empty: every offer
-- tables: clicks, conversions, revenue
WITH c AS (
    SELECT date, SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks, SUM(bot_clicks) AS bot_clicks
    FROM clicks WHERE :offer = '' OR offer_id = :offer GROUP BY date
), v AS (
    SELECT date, SUM(conversions) AS conversions
    FROM conversions WHERE :offer = '' OR offer_id = :offer GROUP BY date
), r AS (
    SELECT date, currency, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros
    FROM revenue WHERE :offer = '' OR offer_id = :offer GROUP BY date, currency
), d AS (
    SELECT date FROM c UNION SELECT date FROM v UNION SELECT date FROM r
), t AS (
    SELECT d.date, r.currency,
           COALESCE(c.clicks, 0) AS clicks,
           COALESCE(c.unique_clicks, 0) AS unique_clicks,
           COALESCE(c.bot_clicks, 0) AS bot_clicks,
           COALESCE(v.conversions, 0) AS conversions,
           COALESCE(r.orders, 0) AS orders,
           COALESCE(r.revenue_micros, 0) AS revenue_micros
    FROM d
    LEFT JOIN c ON c.date = d.date
    LEFT JOIN v ON v.date = d.date
    LEFT JOIN r ON r.date = d.date
), n AS (
    SELECT t.*, ROW_NUMBER() OVER (PARTITION BY date ORDER BY COALESCE(currency, '')) AS nth
    FROM t
)
SELECT date, currency,
       CASE WHEN nth = 1 THEN clicks END AS clicks,
       CASE WHEN nth = 1 THEN unique_clicks END AS unique_clicks,
       CASE WHEN nth = 1 THEN bot_clicks END AS bot_clicks,
       CASE WHEN nth = 1 THEN conversions END AS conversions,
       orders, revenue_micros
FROM n
ORDER BY date, currency
