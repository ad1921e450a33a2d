-- purpose: One range under two attribution policies, side by side per offer, member and
--   currency: attributed conversions, revenue and commission under --window and under the
--   other window, and the difference (other minus this). The other is another window
--   (`pipeline run --window 7d …`) or a what-if scenario (`pipeline run --window
--   28d+coupons-first --registry-override DIR …`: other offers, commissions or coupons).
--   Conversions without an amount are counted in the row with an empty currency. Biggest
--   differences first.
-- param: other (window, default 7d) the window or scenario to compare with
-- tables: attributions, attributions_other
WITH a AS (
    SELECT offer_id, member_id, currency, 1 AS here, 0 AS there, COALESCE(amount_micros, 0) AS here_micros, 0 AS there_micros,
           COALESCE(commission_micros, 0) AS here_commission, 0 AS there_commission
    FROM attributions WHERE status = 'attributed'
    UNION ALL
    SELECT offer_id, member_id, currency, 0 AS here, 1 AS there, 0 AS here_micros, COALESCE(amount_micros, 0) AS there_micros,
           0 AS here_commission, COALESCE(commission_micros, 0) AS there_commission
    FROM attributions_other WHERE status = 'attributed'
), g AS (
    SELECT offer_id, member_id, currency,
           SUM(here) AS conversions, SUM(there) AS other_conversions,
           SUM(here_micros) AS revenue_micros, SUM(there_micros) AS other_revenue_micros,
           SUM(here_commission) AS commission_micros, SUM(there_commission) AS other_commission_micros
    FROM a GROUP BY offer_id, member_id, currency
)
SELECT offer_id, member_id, currency,
       :window AS this_window, :other AS other_window,
       conversions, other_conversions, other_conversions - conversions AS conversions_diff,
       revenue_micros, other_revenue_micros, other_revenue_micros - revenue_micros AS revenue_diff_micros,
       commission_micros, other_commission_micros, other_commission_micros - commission_micros AS commission_diff_micros
FROM g
ORDER BY ABS(other_revenue_micros - revenue_micros) DESC, ABS(other_conversions - conversions) DESC,
         ABS(other_commission_micros - commission_micros) DESC, offer_id, member_id, currency
