-- purpose: One row per offer and currency: members with clicks, clicks, unique clicks, bot
--   clicks, conversion hits reported, attributed conversions, the share attributed, orders
--   and revenue. An offer with revenue in two currencies has a row for each; its member,
--   click and conversion counts are on the first (currencies in alphabetical order) and
--   empty on the others, so that summing a column counts each once (the share attributed
--   is on every row). An offer without revenue has one row with an empty currency.
-- tables: clicks, attributions, revenue
WITH c AS (
    SELECT offer_id, COUNT(DISTINCT member_id) AS members,
           SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks, SUM(bot_clicks) AS bot_clicks
    FROM clicks GROUP BY offer_id
), a AS (
    SELECT offer_id, COUNT(*) AS reported,
           SUM(CASE WHEN status = 'attributed' THEN 1 ELSE 0 END) AS attributed
    FROM attributions GROUP BY offer_id
), r AS (
    SELECT offer_id, currency, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros
    FROM revenue GROUP BY offer_id, currency
), o AS (
    SELECT offer_id FROM c UNION SELECT offer_id FROM a UNION SELECT offer_id FROM r
), t AS (
    SELECT o.offer_id, r.currency,
           COALESCE(c.members, 0) AS members,
           COALESCE(c.clicks, 0) AS clicks,
           COALESCE(c.unique_clicks, 0) AS unique_clicks,
           COALESCE(c.bot_clicks, 0) AS bot_clicks,
           COALESCE(a.reported, 0) AS conversions_reported,
           COALESCE(a.attributed, 0) AS conversions_attributed,
           CASE WHEN COALESCE(a.reported, 0) = 0 THEN NULL
                ELSE ROUND(100.0 * a.attributed / a.reported, 2) END AS attributed_pct,
           COALESCE(r.orders, 0) AS orders,
           COALESCE(r.revenue_micros, 0) AS revenue_micros
    FROM o
    LEFT JOIN c ON c.offer_id = o.offer_id
    LEFT JOIN a ON a.offer_id = o.offer_id
    LEFT JOIN r ON r.offer_id = o.offer_id
), n AS (
    SELECT t.*, ROW_NUMBER() OVER (PARTITION BY offer_id ORDER BY COALESCE(currency, '')) AS nth
    FROM t
)
SELECT offer_id, currency,
       CASE WHEN nth = 1 THEN members END AS members,
       CASE WHEN nth = 1 THEN clicks END AS clicks,
       CASE WHEN nth = 1 THEN unique_clicks END AS unique_clicks,
       CASE WHEN nth = 1 THEN bot_clicks END AS bot_clicks,
       CASE WHEN nth = 1 THEN conversions_reported END AS conversions_reported,
       CASE WHEN nth = 1 THEN conversions_attributed END AS conversions_attributed,
       attributed_pct, orders, revenue_micros
FROM n
ORDER BY offer_id, currency
