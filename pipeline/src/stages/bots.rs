//! Bot clicks (SPEC §4.2): a missing or empty `user_agent`, or one containing a known
//! crawler, monitor, scripted client or link-preview token, case-insensitively. In-app
//! browsers (Instagram, TikTok, Facebook `FBAN`/`FBAV`) carry none of these tokens and
//! count as people. The flag only splits `clicks` from `bot_clicks`; it never changes
//! attribution.

use lake::schema::hit;
use polars::prelude::*;

use super::work;
use crate::params::Params;

/// The project's bot list: the spec's tokens first, then common crawlers, link
/// unfurlers, uptime monitors, headless browsers and HTTP libraries. Matched as lower-case
/// substrings. `queries/attribution.sql` carries the same list (a test checks it).
pub const BOT_TOKENS: &[&str] = &[
    // SPEC §4.2
    "bot", "crawl", "spider", "slurp", "facebookexternalhit", "whatsapp", "preview", "headless", "curl", "wget",
    "python-requests",
    // crawlers and fetchers without "bot" in their name
    "mediapartners-google", "google-inspectiontool", "feedfetcher", "ia_archiver", "scrapy", "archive.org",
    "meta-externalagent", "meta-externalfetcher", "facebookcatalog", "chatgpt-user", "perplexity",
    // link unfurlers
    "embedly", "vkshare", "skypeuripreview", "redditbot", "iframely",
    // monitors and scripted clients
    "pingdom", "uptime", "lighthouse", "phantomjs", "puppeteer", "playwright", "selenium", "python-urllib",
    "go-http-client", "libwww-perl", "apache-httpclient", "okhttp", "java/", "node-fetch", "axios/",
];

fn escape(token: &str) -> String {
    token.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] }).collect()
}

/// The tokens as one case-insensitive pattern.
fn pattern() -> String {
    format!("(?i){}", BOT_TOKENS.iter().map(|t| escape(t)).collect::<Vec<_>>().join("|"))
}

/// The bot expression over `user_agent`.
pub fn is_bot() -> Expr {
    let pattern = pattern();
    let ua = col(hit::USER_AGENT);
    ua.clone()
        .is_null()
        .or(ua.clone().eq(lit("")))
        .or(ua.str().contains(lit(pattern), true).fill_null(lit(true)))
}

/// The bot test of [`is_bot`] as a compiled expression: the same pattern, compiled once.
fn bot_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    // The tokens are escaped literals: the pattern always compiles.
    RE.get_or_init(|| regex::Regex::new(&pattern()).unwrap_or_else(|_| unreachable!("the bot pattern compiles")))
}

/// [`is_bot`] over `user_agent`, with each distinct user agent of a batch tested once: a
/// day's clicks carry far fewer user agents than rows, and the 42-token case-insensitive
/// test is the costly part. Same answers as [`is_bot`] (the same pattern through the same
/// `regex` crate polars uses; a test compares them).
fn is_bot_per_agent() -> Expr {
    col(hit::USER_AGENT).map(
        |c: Column| {
            let agents = c.as_materialized_series().str()?;
            let re = bot_regex();
            let mut seen: PlHashMap<&str, bool> = PlHashMap::new();
            let flags: NoNull<BooleanChunked> = agents
                .iter()
                .map(|ua| match ua {
                    None | Some("") => true,
                    Some(ua) => *seen.entry(ua).or_insert_with(|| re.is_match(ua)),
                })
                .collect();
            Ok(flags.into_inner().with_name(c.name().clone()).into_series().into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::Boolean)),
    )
}

/// Adds [`work::IS_BOT`].
pub fn flag(clicks: LazyFrame, _p: &Params) -> LazyFrame {
    clicks.with_column(is_bot_per_agent().alias(work::IS_BOT))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flags(uas: &[Option<&str>]) -> Vec<bool> {
        let df = df!(hit::USER_AGENT => uas.to_vec()).unwrap();
        let out = df.lazy().select([is_bot().alias("b")]).collect().unwrap();
        out.column("b").unwrap().bool().unwrap().iter().map(|b| b.unwrap_or(false)).collect()
    }

    #[test]
    fn bots_and_people() {
        let bots = [
            None,
            Some(""),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
            Some("WhatsApp/2.23.20.0"),
            Some("curl/8.4.0"),
            Some("Wget/1.21"),
            Some("python-requests/2.31"),
            Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36"),
            Some("Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)"),
            Some("Mozilla/5.0 (compatible; bingbot/2.0) BingPreview/1.0b"),
            Some("SomeSPIDER/1.0"),
            Some("commoncrawl CCBot"),
        ];
        assert!(flags(&bots).into_iter().all(|b| b), "{:?}", flags(&bots));
        let people = [
            Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 309.0.0.28.111"),
            Some("Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/430.0.0.35.108;FBBV/1]"),
            Some("Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/119.0 Mobile Safari/537.36 trill_320104 BytedanceWebview/d8a21c6 musical_ly_2023201040"),
            Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
        ];
        assert!(flags(&people).into_iter().all(|b| !b));
    }

    #[test]
    fn the_per_agent_test_answers_as_the_expression() {
        // Repeats (the cache), case and Unicode edges, nulls and empties.
        let uas = [
            None,
            Some(""),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
            Some("CURL/8"),
            Some("o\u{212A}http/4.9"),
            Some("Spider\u{017F}"),
            Some("\u{017F}lurp"),
            Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0 Safari/537.36"),
            Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0 Safari/537.36"),
            Some("Java/17"),
            Some("JAVA 17"),
            None,
        ];
        let df = df!(hit::USER_AGENT => uas.to_vec()).unwrap();
        let out = flag(df.lazy(), &Params::new("28d".parse().unwrap(), chrono_tz::Tz::UTC, chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(), chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()).unwrap())
            .collect()
            .unwrap();
        let per_agent: Vec<Option<bool>> = out.column(work::IS_BOT).unwrap().bool().unwrap().iter().collect();
        let expected: Vec<Option<bool>> = flags(&uas).into_iter().map(Some).collect();
        assert_eq!(per_agent, expected);
        assert_eq!(per_agent[5], Some(true), "the Kelvin sign folds to k, as in the expression");
    }
}
