//! The `livora` binary: `serve`, `demo`, `admin` and `bench`.
//!
//! Only this crate uses `anyhow`; it wires the libraries together and owns the CLI.

mod admin;
mod bench;
mod bench_analytics;
mod bench_automation;
mod bench_intel;
mod bench_memory;
mod bench_profiles;
mod client;
mod config;
mod demo;
mod generate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use livora_columnar::ColumnStore;
use livora_log::EventLog;
use livora_server::AppState;
use livora_store::{MetadataStore, SqliteStore};

use crate::config::Config;

/// mimalloc: the ingestion path allocates many small, short-lived buffers per event; measured
/// in `livora bench ingest` (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "livora",
    version,
    about = "Self-hostable customer-intelligence engine"
)]
struct Cli {
    /// Configuration file (default: ./livora.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory: the log, the database, column segments (default ./livora-data;
    /// ./livora-demo-data for `demo`). Accepted before or after the subcommand.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct ServeFlags {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum DemoAction {
    /// Write realistic e-commerce traffic into a tenant's event log (server stopped), and
    /// optionally the same events as Parquet; prints a JSON summary.
    Generate(generate::GenerateArgs),
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeFlags),
    /// Run the server with a demo tenant and a stream of sample e-commerce events, or
    /// (`demo generate`) write generated traffic into a tenant's log.
    #[command(args_conflicts_with_subcommands = true)]
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
        #[command(flatten)]
        flags: ServeFlags,
        /// Live events per second after the backfill.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Days of history to generate on first start (90: enough for every model, whose
        /// churn holdout looks 60 days back).
        #[arg(long, default_value_t = 90)]
        backfill_days: u32,
    },
    /// Manage tenants, keys and the log offline.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Turns transparent huge pages off for this process, before the heap grows.
///
/// mimalloc asks the kernel for huge pages (`MADV_HUGEPAGE`), so the first write anywhere
/// in a fresh 2 MB region clears all of it. A hash table that just grew takes writes at
/// random places, so each insert can clear several such regions: on this machine that cost
/// the profiles service ~10 ms per new person for a while after every table doubled, and
/// put the p99 membership lag at 100 K events/s above 300 ms (53 ms without them; see
/// BENCHMARKS.md). With 4 KB pages the same clearing is spread thinly over the writes.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it only sets a flag on this process's
    // memory map, which the kernel reads on later page faults. A failure changes nothing.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = Config::load(cli.config.as_deref(), &env)?;
    let data_dir = cli.data_dir;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(flags) => {
            apply(&mut config, &flags, data_dir, None);
            init_logging(&config, "info");
            runtime.block_on(serve(config, None))
        }
        Command::Demo {
            action: Some(DemoAction::Generate(args)),
            ..
        } => {
            let flags = ServeFlags { listen: None };
            apply(&mut config, &flags, data_dir, Some("./livora-demo-data"));
            init_logging(&config, "warn");
            let summary = runtime.block_on(generate::run(&config, &args))?;
            println!("{summary:#}");
            Ok(())
        }
        Command::Demo {
            action: None,
            flags,
            rate,
            backfill_days,
        } => {
            apply(&mut config, &flags, data_dir, Some("./livora-demo-data"));
            init_logging(&config, "warn,livora=info,livora_server=info");
            let demo = demo::DemoOptions {
                rate,
                backfill_days,
            };
            runtime.block_on(serve(config, Some(demo)))
        }
        Command::Admin { command } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            runtime.block_on(admin::run(&config, command))
        }
        Command::Bench { command } => runtime.block_on(bench::run(command)),
    }
}

fn apply(
    config: &mut Config,
    flags: &ServeFlags,
    data_dir: Option<PathBuf>,
    default_dir: Option<&str>,
) {
    if let Some(l) = flags.listen {
        config.server.listen = l;
    }
    match (data_dir, default_dir) {
        (Some(d), _) => config.data_dir = d,
        (None, Some(d)) if config.data_dir == Config::default().data_dir => {
            config.data_dir = PathBuf::from(d)
        }
        _ => {}
    }
}

fn init_logging(config: &Config, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.server.log_format == "text" {
        builder.init();
    } else {
        builder.json().with_current_span(true).init();
    }
}

pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn MetadataStore>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = SqliteStore::open(&config.store_path())
        .await
        .with_context(|| format!("cannot open {}", config.store_path().display()))?;
    Ok(Arc::new(store))
}

async fn serve(config: Config, demo: Option<demo::DemoOptions>) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let log_opts = config.log_options();
    let log = tokio::task::spawn_blocking(move || EventLog::open(log_opts))
        .await?
        .context("cannot open the event log")?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let columns = if config.analytics.enabled {
        let env: HashMap<String, String> = std::env::vars().collect();
        let opts = config.column_options(&env)?;
        Some(
            ColumnStore::open(opts)
                .await
                .context("cannot load the sealed column segments")?,
        )
    } else {
        None
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let master_made = config.privacy.encryption && config.local_master_key_missing(&env);
    let encryption = config.encryption(&env).await?;
    // A first start with encryption at rest: the audit key may be made for a log the CLI
    // wrote before (see `open_audit_log`).
    let fresh = master_made
        || (encryption.is_some()
            && !livora_store::crypto::master_key_used(store.as_ref())
                .await
                .context("cannot read the tenant keys")?);
    let audit = admin::open_audit_log(
        &config,
        encryption.as_ref().map(|(kms, _)| kms.as_ref()),
        fresh,
    )
    .await?;
    let security = livora_server::Security {
        auth: config.auth.clone(),
        jwt_secret: config.jwt_secret(&env)?,
        audit: Arc::new(audit),
        encryption,
        tls: match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(livora_server::tls::load(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("set both server.tls_cert and server.tls_key, or neither"),
        },
    };
    let profiles = config.profiles_options()?;
    if profiles.as_ref().is_none_or(|p| p.snapshots.is_none())
        && log.remove_consumer(livora_profiles::snapshot::CONSUMER)?
    {
        tracing::info!("profiles snapshots are off: the log no longer keeps records for them");
    }
    let mut automation = config.automation.clone();
    if automation.public_url.trim().is_empty() {
        // Links and callbacks reach the node where it listens unless told otherwise.
        let scheme = if security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        automation.public_url = format!("{scheme}://{addr}");
    }
    let state = AppState::new(
        log,
        store.clone(),
        config.ingest.clone(),
        &config.limits,
        columns,
        profiles,
        &automation,
        security,
    )?;
    let mut schedule = config.intel.schedule()?;
    if demo.is_some() {
        // The demo's history is in within seconds: its models need not wait two minutes.
        schedule.first_after = schedule.first_after.min(std::time::Duration::from_secs(30));
    }
    state.intel.set_schedule(schedule);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "livora listening");
    if let Some(opts) = demo {
        let keys = demo::prepare(store.as_ref(), &config.data_dir).await?;
        demo::print_banner(addr, &keys);
        // History is generated once, when the demo tenant is created.
        let backfill_days = if keys.fresh { opts.backfill_days } else { 0 };
        let opts = demo::DemoOptions {
            backfill_days,
            ..opts
        };
        tokio::spawn(demo::run(addr, keys.write_key.clone(), opts));
    }
    livora_server::serve(listener, state, shutdown_signal()).await?;
    Ok(())
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
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every argument and subcommand below `cmd` that `--help` shows without a description.
    fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} --{}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(name.clone());
            }
            undescribed(sub, &name, out);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        undescribed(&cmd, "livora", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
