-- purpose: The fraud floor (SPEC §8): per offer and member, the conversions that came
--   through the member's clicks (attributed by click or visitor, plus too_fast), how many
--   were too_fast (faster after the click than the offer's min_lag_seconds), their share
--   (percent, two decimals), the fastest lag, and the earliest too_fast conversion as an
--   example (hit id, time, click id, lag) to look up with `queries explain`. Members with a
--   too_fast conversion, the highest share first.
-- param: offer (string, default '') only this offer; empty: every offer
-- param: limit (int, default 1000) rows at most
-- tables: attributions
WITH t AS (
    SELECT offer_id, member_id, status, hit_id, ts, click_id, lag_seconds
    FROM attributions
    WHERE (status = 'too_fast' OR (status = 'attributed' AND via IN ('click', 'visitor')))
      AND (:offer = '' OR offer_id = :offer)
), g AS (
    SELECT offer_id, member_id, COUNT(*) AS conversions,
           SUM(CASE WHEN status = 'too_fast' THEN 1 ELSE 0 END) AS too_fast,
           MIN(lag_seconds) AS fastest_lag_seconds
    FROM t GROUP BY offer_id, member_id
), e AS (
    SELECT offer_id, member_id, hit_id, ts, click_id, lag_seconds,
           ROW_NUMBER() OVER (PARTITION BY offer_id, member_id ORDER BY ts, hit_id) AS n
    FROM t WHERE status = 'too_fast'
), first AS (
    SELECT * FROM e WHERE n = 1
)
SELECT g.offer_id, g.member_id, g.conversions, g.too_fast,
       ROUND(100.0 * g.too_fast / g.conversions, 2) AS too_fast_pct,
       g.fastest_lag_seconds,
       first.hit_id AS example_hit_id, CAST(first.ts AS TIMESTAMPTZ) AS example_ts, first.click_id AS example_click_id,
       first.lag_seconds AS example_lag_seconds
FROM g JOIN first ON first.offer_id = g.offer_id AND first.member_id = g.member_id
WHERE g.too_fast > 0
ORDER BY too_fast_pct DESC, g.too_fast DESC, g.offer_id, g.member_id
LIMIT :limit
