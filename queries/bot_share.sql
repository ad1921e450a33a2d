-- purpose: How much of each member's traffic is bots and link previews: human clicks, bot
--   clicks, and bots' share of all clicks, per offer and member, most bot-heavy first.
--   Bot clicks are counted apart (bot_clicks, never in clicks or unique clicks); the bot
--   flag does not change attribution, so a conversion after a bot-flagged click is still
--   attributed to it (SPEC §4.2).
-- param: min_clicks (int, default 0) leave out members with fewer clicks than this, bots included
-- tables: clicks
WITH c AS (
    SELECT offer_id, member_id, SUM(clicks) AS clicks, SUM(bot_clicks) AS bot_clicks
    FROM clicks GROUP BY offer_id, member_id
)
SELECT offer_id, member_id, clicks, bot_clicks, clicks + bot_clicks AS all_clicks,
       CASE WHEN clicks + bot_clicks = 0 THEN NULL
            ELSE ROUND(100.0 * bot_clicks / (clicks + bot_clicks), 2) END AS bot_share_pct
FROM c
WHERE clicks + bot_clicks >= :min_clicks
ORDER BY bot_share_pct DESC, all_clicks DESC, offer_id, member_id
