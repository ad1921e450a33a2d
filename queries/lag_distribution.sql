-- purpose: How long after the click people convert: attributed conversions by lag
--   (conversion time minus click time) in buckets from under an hour to over 28 days,
--   with each bucket's share of the total and the running share. Buckets without
--   conversions are left out.
-- param: offer (string, default '') only this offer; empty: every offer
-- tables: attributions
WITH a AS (
    SELECT CASE
               WHEN lag_seconds < 3600 THEN 1
               WHEN lag_seconds < 86400 THEN 2
               WHEN lag_seconds < 3 * 86400 THEN 3
               WHEN lag_seconds < 7 * 86400 THEN 4
               WHEN lag_seconds < 14 * 86400 THEN 5
               WHEN lag_seconds <= 28 * 86400 THEN 6
               ELSE 7
           END AS bucket_order,
           lag_seconds
    FROM attributions
    WHERE status = 'attributed' AND (:offer = '' OR offer_id = :offer)
), b AS (
    SELECT bucket_order, COUNT(*) AS conversions,
           MIN(lag_seconds) AS min_lag_seconds, MAX(lag_seconds) AS max_lag_seconds
    FROM a GROUP BY bucket_order
), total AS (
    SELECT SUM(conversions) AS n FROM b
)
SELECT b.bucket_order,
       CASE b.bucket_order
           WHEN 1 THEN 'under 1 hour'
           WHEN 2 THEN '1 hour to 1 day'
           WHEN 3 THEN '1 to 3 days'
           WHEN 4 THEN '3 to 7 days'
           WHEN 5 THEN '7 to 14 days'
           WHEN 6 THEN '14 to 28 days'
           ELSE 'over 28 days'
       END AS lag,
       b.conversions,
       ROUND(100.0 * b.conversions / total.n, 2) AS share_pct,
       ROUND(100.0 * SUM(b.conversions) OVER (ORDER BY b.bucket_order) / total.n, 2) AS cumulative_pct,
       b.min_lag_seconds, b.max_lag_seconds
FROM b CROSS JOIN total
ORDER BY b.bucket_order
