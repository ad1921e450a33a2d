-- purpose: One range attributed with two windows, side by side per offer, member and
--   currency: attributed conversions and revenue under --window and under the other
--   window, and the difference (other minus this). Re-run attribution with another
--   window first (`pipeline run --window 7d …`), then compare. Conversions without an
--   amount are counted in the row with an empty currency. Biggest differences first.
-- param: other (window, default 7d) the window to compare with
-- tables: attributions, attributions_other
WITH a AS (
    SELECT offer_id, member_id, currency, 1 AS here, 0 AS there, COALESCE(amount_micros, 0) AS here_micros, 0 AS there_micros
    FROM attributions WHERE status = 'attributed'
    UNION ALL
    SELECT offer_id, member_id, currency, 0 AS here, 1 AS there, 0 AS here_micros, COALESCE(amount_micros, 0) AS there_micros
    FROM attributions_other WHERE status = 'attributed'
), g AS (
    SELECT offer_id, member_id, currency,
           SUM(here) AS conversions, SUM(there) AS other_conversions,
           SUM(here_micros) AS revenue_micros, SUM(there_micros) AS other_revenue_micros
    FROM a GROUP BY offer_id, member_id, currency
)
SELECT offer_id, member_id, currency,
       :window AS this_window, :other AS other_window,
       conversions, other_conversions, other_conversions - conversions AS conversions_diff,
       revenue_micros, other_revenue_micros, other_revenue_micros - revenue_micros AS revenue_diff_micros
FROM g
ORDER BY ABS(other_revenue_micros - revenue_micros) DESC, ABS(other_conversions - conversions) DESC,
         offer_id, member_id, currency
