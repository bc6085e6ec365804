//! `managedblob`: see, verify, move and repair a database kept in blob storage by
//! the managedblob VFS. Built on the library: the same backends, settings parsing,
//! credentials and (for `pull` and `push`) the same VFS code path as an application.

mod address;
mod blocks;
mod container;
mod history;
mod output;
mod repair;
mod secrets;
mod status;
mod transfer;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::address::{Address, RemoteOnly, WithFile};

/// See, verify, move and repair a managedblob database.
///
/// Remotes are given as for the VFS: a directory, or an Azure container URL (credentials
/// from the URL's SAS or the environment, as in the README). Logging:
/// MANAGEDBLOB_LOG=debug (to stderr, or to the file MANAGEDBLOB_LOG_FILE).
#[derive(Parser)]
#[command(name = "managedblob", version)]
struct Cli {
    /// Print machine-readable JSON on stdout (errors too: {"error": "..."}).
    #[arg(long, global = true)]
    json: bool,
    /// How transfers (pull, export, push) show progress on stderr: `auto` (a bar on a
    /// terminal), `lines` (a line every second and at the end, for logs), `off`.
    #[arg(long, global = true, value_enum, default_value_t = output::ProgressMode::Auto)]
    progress: output::ProgressMode,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The remote blob, its lease, and (with --cache) the local cache.
    Status(Address),
    /// Check the blob's bytes against its block ids, its block list against its size,
    /// `PRAGMA integrity_check`, and (with --cache) the cache against the remote.
    Verify(Address),
    /// Bring a cache up to date, through the VFS (the same code path as an open).
    Pull {
        #[command(flatten)]
        address: Address,
        /// Also fetch every chunk a lazy cache lacks (it stays lazy, with every chunk
        /// present); a cold cache is opened lazily and filled. A full cache holds
        /// every chunk already: the same as without --all.
        #[arg(long)]
        all: bool,
    },
    /// Write a plain SQLite copy of the remote blob (or, with --as-of or --version,
    /// of a kept version) to OUT (no cache, no sidecar).
    Export {
        #[command(flatten)]
        address: WithFile,
        #[command(flatten)]
        pick: history::Pick,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Publish a plain SQLite file as the blob (block-list form, under the lease).
    Push {
        #[command(flatten)]
        address: WithFile,
        /// Replace the blob only if it is still at this version.
        #[arg(long, value_name = "ETAG", conflicts_with = "force")]
        if_match: Option<String>,
        /// Replace the blob whatever its version.
        #[arg(long)]
        force: bool,
    },
    /// The kept versions of the blob (the history setting): id, time, size, and the
    /// bytes held by no other version.
    Versions(Address),
    /// Publish a kept version as the newest version of the blob (under the lease,
    /// conditional on the version it replaces, which stays in history).
    Restore {
        #[command(flatten)]
        address: Address,
        #[command(flatten)]
        pick: history::Pick,
    },
    /// End the blob's lease, whoever holds it (for a dead writer's lease).
    BreakLease {
        #[command(flatten)]
        address: Address,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Remove what killed processes left behind (upload temp files, staged blocks,
    /// sidecar temp files, download side files) when their owners are provably gone.
    Sweep {
        /// The remote to sweep (a directory or a container URL).
        #[command(flatten)]
        remote: RemoteOnly,
        /// A cache file whose directory to sweep (repeatable).
        #[arg(long)]
        cache: Vec<PathBuf>,
        /// List what would be removed, and how many bytes, without removing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create the remote: an Azure container (the VFS never creates one), or a local
    /// remote's directory. One that exists already is left as it is (success).
    CreateContainer(RemoteOnly),
}

/// The exit code of a `verify` that found a problem (errors exit with 1).
pub const EXIT_VERIFY_FAILED: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refuse_arguments(&e),
    };
    managedblob::internal::logging::init_from_env();
    output::set_progress_mode(cli.progress);
    let json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = secrets::scrub(&one_line(&e));
            if json {
                println!("{}", serde_json::json!({ "error": message }));
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let json = cli.json;
    match cli.command {
        Command::Status(address) => status::run(&address.resolve()?, json),
        Command::Verify(address) => verify::run(&address.resolve()?, json),
        Command::Pull { address, all } if all => transfer::pull_all(&address.resolve()?, json),
        Command::Pull { address, .. } => transfer::pull(&address.resolve()?, json),
        Command::Export {
            address,
            pick,
            force,
        } if pick.given() => {
            let (target, out) = address.resolve()?;
            history::export(&target, &pick, &out, force, json)
        }
        Command::Export { address, force, .. } => {
            let (target, out) = address.resolve()?;
            transfer::export(&target, &out, force, json)
        }
        Command::Versions(address) => history::versions(&address.resolve()?, json),
        Command::Restore { address, pick } => history::restore(&address.resolve()?, &pick, json),
        Command::Push {
            address,
            if_match,
            force,
        } => {
            let (target, file) = address.resolve()?;
            let rule = match (if_match, force) {
                (Some(etag), _) => transfer::Replace::IfMatch(etag),
                (None, true) => transfer::Replace::Always,
                (None, false) => transfer::Replace::Never,
            };
            transfer::push(&target, &file, &rule, json)
        }
        Command::BreakLease { address, yes } => repair::break_lease(&address.resolve()?, yes, json),
        Command::Sweep {
            remote,
            cache,
            dry_run,
        } => repair::sweep(remote.given(), &cache, dry_run, json),
        Command::CreateContainer(remote) => match remote.given() {
            Some(remote) => container::create(remote, json),
            None => anyhow::bail!(
                "no remote given: pass REMOTE (a directory or container URL), --remote, or set \
                 MANAGEDBLOB_REMOTE"
            ),
        },
    }
}

/// Help and version as clap prints them; an argument error (which may quote an
/// argument, a SAS URL among them) redacted, as JSON with `--json`, clap's exit code.
fn refuse_arguments(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = secrets::scrub(&e.render().to_string());
    if std::env::args().any(|a| a == "--json") {
        let first = text.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        println!("{}", serde_json::json!({ "error": message }));
    } else {
        eprint!("{text}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The error and those of its causes that its message does not repeat already (the
/// library's errors include their source's text), on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message.replace('\n', " ")
}
