-- purpose: What each member earned over the dates, per currency (SPEC §7): attributed
--   conversions that are not rejected, their gross, refunded and net amounts, the clicks
--   that click rules paid, and the commission on conversions, on clicks and in all, in
--   micros. Refunds and rejections received so far are counted; a date's numbers can
--   still move until its lock period closes (`payouts` tells what is payable). Biggest
--   commission first.
-- param: offer (string, default '') only this offer; empty: every offer
-- param: limit (int, default 1000) rows at most
-- tables: earnings
SELECT member_id, currency,
       SUM(conversions) AS conversions,
       SUM(gross_micros) AS gross_micros,
       SUM(refunded_micros) AS refunded_micros,
       SUM(net_micros) AS net_micros,
       SUM(clicks_paid) AS clicks_paid,
       SUM(conversion_commission_micros) AS conversion_commission_micros,
       SUM(click_commission_micros) AS click_commission_micros,
       SUM(commission_micros) AS commission_micros
FROM earnings
WHERE :offer = '' OR offer_id = :offer
GROUP BY member_id, currency
ORDER BY commission_micros DESC, net_micros DESC, member_id, currency
LIMIT :limit
