-- purpose: Conversions that were not attributed, by status and offer: how many, how many
--   carried an amount, the amounts by currency, and the earliest of them as an example
--   (hit id, time, click id, visitor id, order id) to look up. Statuses: duplicate,
--   unknown_click, offer_mismatch, outside_window, no_click.
-- tables: attributions
WITH u AS (
    SELECT status, offer_id, COALESCE(currency, '') AS cur, amount_micros,
           hit_id, ts, click_id, visitor_id, order_id
    FROM attributions WHERE status <> 'attributed'
), g AS (
    SELECT status, offer_id, cur, COUNT(*) AS conversions,
           SUM(CASE WHEN amount_micros IS NULL THEN 0 ELSE 1 END) AS with_amount,
           COALESCE(SUM(amount_micros), 0) AS amount_micros
    FROM u GROUP BY status, offer_id, cur
), e AS (
    SELECT status, offer_id, cur, hit_id, ts, click_id, visitor_id, order_id,
           ROW_NUMBER() OVER (PARTITION BY status, offer_id, cur ORDER BY ts, hit_id) AS n
    FROM u
), first AS (
    SELECT * FROM e WHERE n = 1
)
SELECT g.status, g.offer_id, NULLIF(g.cur, '') AS currency, g.conversions, g.with_amount, g.amount_micros,
       first.hit_id AS example_hit_id, CAST(first.ts AS TIMESTAMPTZ) AS example_ts, first.click_id AS example_click_id,
       first.visitor_id AS example_visitor_id, first.order_id AS example_order_id
FROM g
JOIN first ON first.status = g.status AND first.offer_id = g.offer_id AND first.cur = g.cur
ORDER BY g.status, g.offer_id, currency
