-- purpose: Refunds and rejections per offer, member and currency (SPEC §7), a classic
--   fraud signal: attributed conversions, how many were refunded (fully or in part) and
--   rejected, the gross and refunded amounts, and the refund rate by count and by amount
--   (percent, two decimals). Members with at least min_conversions attributed conversions,
--   the highest refund rate first.
-- param: offer (string, default '') only this offer; empty: every offer
-- param: min_conversions (int, default 1) leave out members with fewer attributed conversions
-- param: limit (int, default 1000) rows at most
-- tables: attributions
WITH a AS (
    SELECT offer_id, member_id, COALESCE(currency, '') AS currency,
           CASE WHEN adjusted_state IN ('refunded', 'partially_refunded') THEN 1 ELSE 0 END AS is_refunded,
           CASE WHEN adjusted_state = 'rejected' THEN 1 ELSE 0 END AS is_rejected,
           COALESCE(amount_micros, 0) AS gross_micros,
           COALESCE(refunded_micros, 0) AS refunded_micros
    FROM attributions
    WHERE status = 'attributed' AND (:offer = '' OR offer_id = :offer)
), g AS (
    SELECT offer_id, member_id, currency, COUNT(*) AS conversions,
           SUM(is_refunded) AS refunded, SUM(is_rejected) AS rejected,
           SUM(gross_micros) AS gross_micros, SUM(refunded_micros) AS refunded_micros
    FROM a GROUP BY offer_id, member_id, currency
)
SELECT offer_id, member_id, currency, conversions, refunded, rejected, gross_micros, refunded_micros,
       ROUND(100.0 * refunded / conversions, 2) AS refund_rate_pct,
       CASE WHEN gross_micros = 0 THEN NULL ELSE ROUND(100.0 * refunded_micros / gross_micros, 2) END AS refunded_amount_pct,
       ROUND(100.0 * rejected / conversions, 2) AS reject_rate_pct
FROM g
WHERE conversions >= :min_conversions
ORDER BY refund_rate_pct DESC, refunded_micros DESC, conversions DESC, offer_id, member_id, currency
LIMIT :limit
