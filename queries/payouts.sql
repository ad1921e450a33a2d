-- purpose: What the brand owes each member as of a day, per currency (SPEC §7): payable is
--   the commission of attributed conversions dated up to as_of whose lock period has
--   closed by the end of that day (lock_ts before the next day starts in the report zone),
--   plus the click payouts of clicks dated up to as_of; pending is the commission of the
--   conversions still in their lock period, which refunds and rejections may yet change.
--   next_lock_ts is when the next pending conversion becomes payable. Amounts in micros;
--   payable is cumulative, so what to pay for a period is payable at its end minus payable
--   at its start. Biggest payable first.
-- param: as_of (date) the day to settle: conversions and clicks up to it, locks closed by its end
-- param: offer (string, default '') only this offer; empty: every offer
-- tables: attributions, earnings, offers
WITH c AS (
    SELECT a.member_id, COALESCE(a.currency, o.currency) AS currency, a.commission_micros,
           CASE WHEN a.lock_ts < :as_of_end THEN 1 ELSE 0 END AS locked, a.lock_ts
    FROM attributions a LEFT JOIN offers o ON o.offer_id = a.offer_id
    WHERE a.status = 'attributed' AND a.commission_micros IS NOT NULL AND a.date <= :as_of
      AND (:offer = '' OR a.offer_id = :offer)
), conv AS (
    SELECT member_id, currency,
           SUM(CASE WHEN locked = 1 THEN commission_micros ELSE 0 END) AS payable_conversion_micros,
           SUM(CASE WHEN locked = 1 THEN 0 ELSE commission_micros END) AS pending_micros,
           SUM(locked) AS payable_conversions,
           SUM(1 - locked) AS pending_conversions,
           MIN(CASE WHEN locked = 1 THEN NULL ELSE lock_ts END) AS next_lock_ts
    FROM c GROUP BY member_id, currency
), clk AS (
    SELECT member_id, currency, SUM(clicks_paid) AS clicks_paid, SUM(click_commission_micros) AS click_micros
    FROM earnings
    WHERE date <= :as_of AND clicks_paid > 0 AND (:offer = '' OR offer_id = :offer)
    GROUP BY member_id, currency
), m AS (
    SELECT member_id, currency FROM conv UNION SELECT member_id, currency FROM clk
)
SELECT m.member_id, m.currency,
       COALESCE(conv.payable_conversion_micros, 0) + COALESCE(clk.click_micros, 0) AS payable_micros,
       COALESCE(conv.pending_micros, 0) AS pending_micros,
       COALESCE(conv.payable_conversions, 0) AS payable_conversions,
       COALESCE(conv.pending_conversions, 0) AS pending_conversions,
       COALESCE(clk.clicks_paid, 0) AS clicks_paid,
       COALESCE(clk.click_micros, 0) AS click_payout_micros,
       CAST(conv.next_lock_ts AS TIMESTAMPTZ) AS next_lock_ts
FROM m
LEFT JOIN conv ON conv.member_id = m.member_id AND conv.currency = m.currency
LEFT JOIN clk ON clk.member_id = m.member_id AND clk.currency = m.currency
ORDER BY payable_micros DESC, pending_micros DESC, m.member_id, m.currency
