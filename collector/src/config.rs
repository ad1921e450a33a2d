//! Command-line configuration, typed and checked at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "collector", version, about = "clicktrail collector: records clicks, pixel conversions and postbacks durably and writes them to the lake as Parquet")]
pub struct Cli {
    /// The lake: a folder, file:///abs/path, s3://bucket/prefix, gs://…, az://… or memory://
    #[arg(long, env = "CLICKTRAIL_LAKE", default_value = lake::DEFAULT_LAKE, global = true)]
    pub lake: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP collector
    Serve(ServeArgs),
    /// Manage offers in the lake's registry
    Offers {
        #[command(subcommand)]
        command: OffersCommand,
    },
    /// Manage tracking links in the lake's registry
    Links {
        #[command(subcommand)]
        command: LinksCommand,
    },
    /// Manage commission rules (registry/commissions.csv)
    Commissions {
        #[command(subcommand)]
        command: CommissionsCommand,
    },
    /// Manage coupon codes (registry/coupons.csv, SPEC §8)
    Coupons {
        #[command(subcommand)]
        command: CouponsCommand,
    },
    /// Import refunds, rejections and restores
    Adjustments {
        #[command(subcommand)]
        command: AdjustmentsCommand,
    },
}

/// Which attribution wins when a conversion has both a click and a valid coupon (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CouponPriority {
    /// A coupon attributes only conversions no click attributes
    Click,
    /// A valid coupon attributes the conversion before any click is considered
    Coupon,
}

impl CouponPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponPriority::Click => lake::registry::COUPON_PRIORITY_CLICK,
            CouponPriority::Coupon => lake::registry::COUPON_PRIORITY_COUPON,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CommissionsCommand {
    /// Add a commission rule; refuses one equal to an existing rule in offer, member, event and valid-from
    Add {
        /// Offer id
        #[arg(long)]
        offer: String,
        /// Member id (default: every member of the offer)
        #[arg(long)]
        member: Option<String>,
        /// Conversion event (default: every event); `click` pays --flat per counted click
        #[arg(long)]
        event: Option<String>,
        /// Percent of the net amount, at most 4 decimal places (e.g. 12.5)
        #[arg(long)]
        percent: Option<String>,
        /// Flat amount per conversion (or per click), in the conversion's currency (e.g. 1.50)
        #[arg(long)]
        flat: Option<String>,
        /// First date (YYYY-MM-DD, report time zone) the rule applies (default: always)
        #[arg(long)]
        valid_from: Option<String>,
    },
    /// List commission rules (tab-separated, with a header)
    List {
        /// Only this offer's rules
        #[arg(long)]
        offer: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CouponsCommand {
    /// Add a coupon code of an offer for a member; codes are upper-cased and unique per offer
    Add {
        /// Offer id
        #[arg(long)]
        offer: String,
        /// The member a sale with this code is attributed to
        #[arg(long)]
        member: String,
        /// The code, [A-Za-z0-9_-]{1,64} (stored upper-cased)
        #[arg(long)]
        code: String,
        /// First valid date, YYYY-MM-DD in the report time zone (default: open)
        #[arg(long)]
        valid_from: Option<String>,
        /// Last valid date (inclusive), YYYY-MM-DD in the report time zone (default: open)
        #[arg(long)]
        valid_to: Option<String>,
    },
    /// Import a discount export: a CSV with a header naming code and member_id (optionally valid_from, valid_to), all for one offer
    Import {
        /// The CSV file (e.g. a Shopify-style discount export reduced to code and member)
        file: PathBuf,
        /// Offer the codes belong to
        #[arg(long)]
        offer: String,
    },
    /// List coupon codes (tab-separated, with a header)
    List {
        /// Only this offer's codes
        #[arg(long)]
        offer: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdjustmentsCommand {
    /// Import a CSV of adjustments: a header row naming columns order_id,action[,amount,currency,event,adjustment_id] in any order
    Import {
        /// The CSV file
        file: PathBuf,
        /// Offer the adjustments belong to
        #[arg(long)]
        offer: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "CLICKTRAIL_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Folder of the local durable spool
    #[arg(long, env = "CLICKTRAIL_SPOOL", default_value = "data/spool")]
    pub spool: PathBuf,
    /// Public base URL of this collector, used in link URLs and the JavaScript snippet (default: http://LISTEN)
    #[arg(long, env = "CLICKTRAIL_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<url::Url>,
    /// Longest time a hit waits in the spool before it is written to the lake (e.g. 60s, 500ms, 5m)
    #[arg(long, env = "CLICKTRAIL_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Spool capacity; past it hits are refused with 503 until the lake catches up (e.g. 1GiB, 500MB)
    #[arg(long, env = "CLICKTRAIL_SPOOL_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
    /// Bearer token for /api/links (the admin API is off without one)
    #[arg(long, env = "CLICKTRAIL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Key for hashing client IPs (default: a random salt generated once and kept in the spool folder)
    #[arg(long, env = "CLICKTRAIL_IP_SALT", hide_env_values = true)]
    pub ip_salt: Option<String>,
    /// How often the registry (offers, links) is re-read from the lake
    #[arg(long, env = "CLICKTRAIL_REGISTRY_REFRESH", default_value = "2s", value_parser = parse_duration)]
    pub registry_refresh: Duration,
    /// Take the client IP from this header (first address) instead of the connection, when behind a trusted proxy (e.g. X-Forwarded-For)
    #[arg(long, env = "CLICKTRAIL_REAL_IP_HEADER")]
    pub real_ip_header: Option<String>,
    /// Longest time a request may take before it is answered 408
    #[arg(long, env = "CLICKTRAIL_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most client connections open at once. When all are taken the collector stops
    /// accepting until one closes: new connections wait in the kernel's listen backlog
    /// (answered late, or refused by the kernel once the backlog is full), and open ones
    /// are served as usual. Keep it under the file-descriptor limit (`ulimit -n`)
    #[arg(long, env = "CLICKTRAIL_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Threads answering HTTP, each with its own event loop and its own listening socket on
    /// LISTEN (SO_REUSEPORT: the kernel spreads new connections over them); default: one per core
    #[arg(long, env = "CLICKTRAIL_HTTP_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub http_threads: Option<u32>,
    /// On SIGTERM, how long to keep trying to upload the spool before exiting (what is left stays in the spool for the next start)
    #[arg(long, env = "CLICKTRAIL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// Add an offer; with --update, change only the given settings of an existing one
    ///
    /// Without --update an existing offer is refused unless it already has exactly the
    /// settings given (so re-running a set-up script is harmless, and never silently turns an
    /// EUR offer into USD or replaces its token). Every change is logged in
    /// registry/_changes.jsonl.
    Add {
        /// Offer id
        #[arg(long)]
        offer: String,
        /// Where the offer's links redirect (http or https URL); required for a new offer
        #[arg(long)]
        destination: Option<String>,
        /// Secret the brand's server sends with postbacks and adjustments; required for a new
        /// offer (an empty value: the offer takes no postbacks)
        #[arg(long, hide_env_values = true)]
        token: Option<String>,
        /// Currency of amounts sent without one (ISO 4217) [new offer default: USD]
        #[arg(long)]
        currency: Option<String>,
        /// Lifetime of the visitor and click-id cookies, in days [new offer default: 28]
        #[arg(long)]
        cookie_days: Option<u32>,
        /// Days after a conversion during which refunds and rejections still change it [new offer default: 30]
        #[arg(long)]
        lock_days: Option<u32>,
        /// Conversions attributed through a click faster than this are too_fast (e.g. 10s, 2m, 0), whole seconds [new offer default: 0]
        #[arg(long, value_parser = parse_whole_seconds)]
        min_lag: Option<u64>,
        /// Whether a valid coupon or the click attributes a conversion that has both [new offer default: click]
        #[arg(long, value_enum)]
        coupon_priority: Option<CouponPriority>,
        /// Change an existing offer: only the settings given are changed
        #[arg(long)]
        update: bool,
    },
    /// Pause an offer: its links still redirect but record no click and add no click id
    ///
    /// Conversions of a paused offer (pixel, postback, adjustments) are still recorded and
    /// attributed to clicks from before the pause within the window, so members are paid for
    /// the sales their earlier clicks brought.
    Pause {
        /// Offer id
        #[arg(long)]
        offer: String,
    },
    /// Resume a paused offer
    Resume {
        /// Offer id
        #[arg(long)]
        offer: String,
    },
    /// List offers
    List,
}

#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// Create a tracking link; prints its code and URL
    Add {
        /// Offer id
        #[arg(long)]
        offer: String,
        /// Member (influencer, affiliate) id
        #[arg(long)]
        member: String,
        /// Destination for this link only (default: the offer's)
        #[arg(long)]
        destination: Option<String>,
        /// Code to use (default: 8 random base62 characters)
        #[arg(long)]
        code: Option<String>,
        /// Public base URL of the collector, for the printed link URL
        #[arg(long, env = "CLICKTRAIL_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_parser = parse_public_url)]
        public_url: url::Url,
    },
    /// List tracking links
    List {
        /// Only this offer's links
        #[arg(long)]
        offer: Option<String>,
        /// Only this member's links
        #[arg(long)]
        member: Option<String>,
        /// Public base URL of the collector, for the printed link URLs
        #[arg(long, env = "CLICKTRAIL_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_parser = parse_public_url)]
        public_url: url::Url,
    },
    /// Pause a link: it still redirects to its destination (old posts never break) but
    /// records no click and adds no click id
    Pause {
        /// The link's code
        #[arg(long)]
        code: String,
    },
    /// Resume a paused link
    Resume {
        /// The link's code
        #[arg(long)]
        code: String,
    },
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 60s or 500ms: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(d)
}

/// A duration in whole seconds: `0`, `10` (seconds), or `10s`, `2m`, `1h 30m`.
pub fn parse_whole_seconds(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("{s:?} is not a duration like 10s, 2m or 0: {e}"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?} is not a whole number of seconds"));
    }
    Ok(d.as_secs())
}

/// `IP:PORT`, or `HOST:PORT` resolved once at start (`localhost:8080`; IPv4 preferred).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|e| format!("{s:?} is not an address like 127.0.0.1:8080 or localhost:8080: {e}"))?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(|| format!("{s:?} resolves to no address"))
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 1GiB or 500MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown size unit (use B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

pub fn parse_public_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{s:?} must be an http or https URL"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("1XB").is_err());
        assert!(parse_bytes("0").is_err());
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_whole_seconds("0"), Ok(0));
        assert_eq!(parse_whole_seconds("10s"), Ok(10));
        assert_eq!(parse_whole_seconds("2m"), Ok(120));
        assert_eq!(parse_whole_seconds("45"), Ok(45));
        assert!(parse_whole_seconds("1500ms").is_err());
        assert!(parse_whole_seconds("-1").is_err());
        assert!(parse_whole_seconds("soon").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("127.0.0.1:8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert_eq!(parse_listen("localhost:8080").map(|a| a.port()), Ok(8080));
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("127.0.0.1:99999").is_err());
    }
}
