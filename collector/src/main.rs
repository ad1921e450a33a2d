//! The `collector` binary: parses the command line, maps errors to a one-line message and
//! a non-zero exit, and wires SIGTERM/Ctrl-C to a graceful shutdown.

use std::process::ExitCode;

use anyhow::Context;
use collector::config::{AdjustmentsCommand, Cli, Command, CommissionsCommand, CouponsCommand, LinksCommand, OffersCommand};
use collector::http::links_url;
use collector::registry::{self, NewLink};
use collector::import::{import_adjustments, ImportOutcome};
use lake::registry::{CommissionRule, Offer};
use lake::Lake;

/// jemalloc: the click path allocates a few dozen small blocks per request, which glibc's
/// malloc served at about a tenth of the collector's CPU time; and the sink's batches are
/// handed back to the system instead of staying in per-thread arenas (BENCH.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(lake::cli::log_ansi())
        .init();
    let cli: Cli = lake::cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("signal received");
}

/// `offers|links pause|resume`: says what it did, or that there was nothing to do.
async fn pause(lake: &Lake, what: registry::Pausable, id: &str, paused: bool) -> anyhow::Result<()> {
    let changed = registry::set_paused(lake, what, id, paused, &registry::command_line()).await?;
    let noun = if what == registry::Pausable::Offer { "offer" } else { "link" };
    let done = match (paused, changed) {
        (true, true) => "paused",
        (true, false) => "was paused already",
        (false, true) => "resumed",
        (false, false) => "was not paused",
    };
    println!("{noun} {id} {done}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let lake = Lake::open(&cli.lake).with_context(|| "while opening the lake (--lake / CLICKTRAIL_LAKE)")?;
    match cli.command {
        Command::Serve(args) => {
            let threads = args.http_threads.map_or_else(|| std::thread::available_parallelism().map_or(1, usize::from), |n| n as usize);
            let listeners = collector::bind(args.listen, threads)
                .await
                .with_context(|| format!("while binding {}", args.listen))?;
            let addr = listeners[0].local_addr()?;
            let public_url = args.public_url.clone().unwrap_or_else(|| collector::default_public_url(addr));
            let c = collector::Collector::start(lake, args, public_url).await?;
            collector::serve(listeners, c, shutdown_signal()).await
        }
        Command::Offers {
            command: OffersCommand::Add { offer, destination, token, currency, cookie_days, lock_days, min_lag, coupon_priority, update },
        } => {
            let by = registry::command_line();
            let edit = registry::OfferEdit {
                destination_url: destination,
                postback_token: token,
                currency: currency.map(|c| c.to_ascii_uppercase()),
                cookie_days,
                lock_days,
                min_lag_seconds: min_lag,
                coupon_priority: coupon_priority.map(|c| c.as_str().to_string()),
            };
            let change = if update {
                registry::update_offer(&lake, &offer, edit, &by).await?
            } else {
                let missing: Vec<&str> = [("--destination", edit.destination_url.is_none()), ("--token", edit.postback_token.is_none())]
                    .into_iter()
                    .filter_map(|(f, m)| m.then_some(f))
                    .collect();
                if !missing.is_empty() {
                    let existing = registry::load(&lake).await?.offers.contains_key(&offer);
                    anyhow::bail!(
                        "a new offer needs {}{}",
                        missing.join(" and "),
                        if existing { format!("; offer {offer} exists already: pass --update to change only the flags given") } else { String::new() }
                    );
                }
                let mut o = Offer::new(offer.clone(), String::new(), String::new(), lake::registry::DEFAULT_CURRENCY.into(), lake::registry::DEFAULT_COOKIE_DAYS);
                edit.apply_to(&mut o);
                registry::add_offer(&lake, o, &by).await?
            };
            let what = match change {
                registry::OfferChange::Added => "added",
                registry::OfferChange::Updated => "updated",
                registry::OfferChange::Unchanged => "unchanged",
            };
            println!("offer {offer} {what}");
            Ok(())
        }
        Command::Offers { command: OffersCommand::Pause { offer } } => pause(&lake, registry::Pausable::Offer, &offer, true).await,
        Command::Offers { command: OffersCommand::Resume { offer } } => pause(&lake, registry::Pausable::Offer, &offer, false).await,
        Command::Offers { command: OffersCommand::List } => {
            let reg = registry::load(&lake).await?;
            let mut offers: Vec<_> = reg.offers.values().collect();
            offers.sort_by(|a, b| a.offer_id.cmp(&b.offer_id));
            println!("offer_id\tcurrency\tcookie_days\tlock_days\tmin_lag_seconds\tcoupon_priority\tpaused_at\tdestination_url");
            for o in offers {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    o.offer_id,
                    o.currency,
                    o.cookie_days,
                    o.lock_days,
                    o.min_lag_seconds,
                    o.coupon_priority,
                    reg.paused_offers.get(&o.offer_id).map_or("", String::as_str),
                    o.destination_url
                );
            }
            Ok(())
        }
        Command::Links { command: LinksCommand::Pause { code } } => pause(&lake, registry::Pausable::Link, &code, true).await,
        Command::Links { command: LinksCommand::Resume { code } } => pause(&lake, registry::Pausable::Link, &code, false).await,
        Command::Links { command: LinksCommand::Add { offer, member, destination, code, public_url } } => {
            let link = registry::add_link(&lake, NewLink { offer_id: offer, member_id: member, destination_url: destination, code }, &registry::command_line()).await?;
            println!("{}\t{}", link.code, links_url(&public_url, &link.code));
            Ok(())
        }
        Command::Links { command: LinksCommand::List { offer, member, public_url } } => {
            let reg = registry::load(&lake).await?;
            let mut links: Vec<_> = reg
                .links
                .values()
                .filter(|l| offer.as_ref().is_none_or(|o| &l.offer_id == o) && member.as_ref().is_none_or(|m| &l.member_id == m))
                .collect();
            links.sort_by(|a, b| (&a.created_at, &a.code).cmp(&(&b.created_at, &b.code)));
            println!("code\toffer_id\tmember_id\turl\tdestination_url\tcreated_at\tpaused_at");
            for l in links {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    l.code,
                    l.offer_id,
                    l.member_id,
                    links_url(&public_url, &l.code),
                    l.destination_url,
                    l.created_at,
                    reg.paused_since(l).unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Commissions { command: CommissionsCommand::Add { offer, member, event, percent, flat, valid_from } } => {
            let rule = CommissionRule {
                offer_id: offer,
                member_id: member.unwrap_or_default(),
                event: event.unwrap_or_default().to_ascii_lowercase(),
                percent: percent.unwrap_or_default(),
                flat: flat.unwrap_or_default(),
                valid_from: valid_from.unwrap_or_default(),
            };
            let text = registry::describe_rule(&rule);
            registry::add_commission(&lake, rule, &registry::command_line()).await?;
            println!("commission rule added: {text}");
            Ok(())
        }
        Command::Commissions { command: CommissionsCommand::List { offer } } => {
            let rules = registry::load_commissions(&lake).await?;
            println!("offer_id\tmember_id\tevent\tpercent\tflat\tvalid_from");
            for r in rules.iter().filter(|r| offer.as_ref().is_none_or(|o| &r.offer_id == o)) {
                println!("{}\t{}\t{}\t{}\t{}\t{}", r.offer_id, r.member_id, r.event, r.percent, r.flat, r.valid_from);
            }
            Ok(())
        }
        Command::Coupons { command: CouponsCommand::Add { offer, member, code, valid_from, valid_to } } => {
            let coupon = lake::registry::Coupon {
                code: code.to_ascii_uppercase(),
                offer_id: offer,
                member_id: member,
                valid_from: valid_from.unwrap_or_default(),
                valid_to: valid_to.unwrap_or_default(),
            };
            let what = format!("coupon {} of offer {} for member {}", coupon.code, coupon.offer_id, coupon.member_id);
            registry::add_coupons(&lake, vec![coupon], &registry::command_line()).await?;
            println!("{what} added");
            Ok(())
        }
        Command::Coupons { command: CouponsCommand::Import { file, offer } } => {
            let bytes = std::fs::read(&file).with_context(|| format!("while reading {}", file.display()))?;
            let coupons = collector::registry::parse_coupon_export(&bytes, &offer)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let n = registry::add_coupons(&lake, coupons, &registry::command_line()).await?;
            println!("imported {n} coupon codes for offer {offer} from {}", file.display());
            Ok(())
        }
        Command::Coupons { command: CouponsCommand::List { offer } } => {
            let coupons = registry::load_coupons(&lake).await?;
            println!("code\toffer_id\tmember_id\tvalid_from\tvalid_to");
            for c in coupons.iter().filter(|c| offer.as_ref().is_none_or(|o| &c.offer_id == o)) {
                println!("{}\t{}\t{}\t{}\t{}", c.code, c.offer_id, c.member_id, c.valid_from, c.valid_to);
            }
            Ok(())
        }
        Command::Adjustments { command: AdjustmentsCommand::Import { file, offer } } => {
            let bytes = std::fs::read(&file).with_context(|| format!("while reading {}", file.display()))?;
            let name = file.display().to_string();
            match import_adjustments(&lake, &offer, &name, &bytes).await? {
                ImportOutcome::Imported(i) => println!(
                    "imported {name} for offer {offer}: {} rows written, {} skipped (adjustment_id imported before), file {}",
                    i.rows,
                    i.skipped,
                    if i.hits_file.is_empty() { "(none)" } else { &i.hits_file }
                ),
                ImportOutcome::AlreadyImported(i) => println!(
                    "{name} was already imported for offer {offer} at {} (import {}): nothing written",
                    i.imported_at, i.import_id
                ),
                ImportOutcome::Empty => println!("{name} has no rows: nothing written"),
            }
            Ok(())
        }
    }
}
