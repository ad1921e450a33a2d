//! The `collector` binary: parses the command line, maps errors to a one-line message and
//! a non-zero exit, and wires SIGTERM/Ctrl-C to a graceful shutdown.

use std::process::ExitCode;

use anyhow::Context;
use collector::config::{Cli, Command, LinksCommand, OffersCommand};
use collector::http::links_url;
use collector::registry::{self, NewLink};
use lake::registry::Offer;
use lake::Lake;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let lake = Lake::open(&cli.lake).with_context(|| "while opening the lake (--lake / CLICKTRAIL_LAKE)")?;
    match cli.command {
        Command::Serve(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("while binding {}", args.listen))?;
            let addr = listener.local_addr()?;
            let public_url = args.public_url.clone().unwrap_or_else(|| collector::default_public_url(addr));
            let c = collector::Collector::start(lake, args, public_url).await?;
            collector::serve(listener, c, shutdown_signal()).await
        }
        Command::Offers { command: OffersCommand::Add { offer, destination, token, currency, cookie_days } } => {
            let offer = Offer::new(offer, destination, token, currency.to_ascii_uppercase(), cookie_days);
            let id = offer.offer_id.clone();
            let what = match registry::add_offer(&lake, offer).await? {
                registry::OfferChange::Added => "added",
                registry::OfferChange::Updated => "updated",
                registry::OfferChange::Unchanged => "unchanged",
            };
            println!("offer {id} {what}");
            Ok(())
        }
        Command::Offers { command: OffersCommand::List } => {
            let reg = registry::load(&lake).await?;
            let mut offers: Vec<_> = reg.offers.values().collect();
            offers.sort_by(|a, b| a.offer_id.cmp(&b.offer_id));
            println!("offer_id\tcurrency\tcookie_days\tdestination_url");
            for o in offers {
                println!("{}\t{}\t{}\t{}", o.offer_id, o.currency, o.cookie_days, o.destination_url);
            }
            Ok(())
        }
        Command::Links { command: LinksCommand::Add { offer, member, destination, code, public_url } } => {
            let link = registry::add_link(&lake, NewLink { offer_id: offer, member_id: member, destination_url: destination, code }).await?;
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
            println!("code\toffer_id\tmember_id\turl\tdestination_url\tcreated_at");
            for l in links {
                println!("{}\t{}\t{}\t{}\t{}\t{}", l.code, l.offer_id, l.member_id, links_url(&public_url, &l.code), l.destination_url, l.created_at);
            }
            Ok(())
        }
    }
}
