//! `holdfast`: the command-line tool. A thin layer over the repository and engine crates:
//! it parses arguments, gets the password, shows progress and maps errors to exit codes.

mod args;
mod cli;
mod cmd;
mod exit;
mod password;
mod ui;

use clap::{CommandFactory, FromArgMatches};

/// Restores the default SIGPIPE action, so `holdfast ... | head` ends quietly when the
/// reader goes away instead of failing on every later write (Rust ignores SIGPIPE).
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists, and installs the
    // default disposition (no handler code runs in signal context).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The arguments, with `--help` ending in the exit codes and the environment variables
/// that tune S3 repositories (they are not options, so clap would not list them).
///
/// A usage error (an unknown option, a value that is not understood) ends the process
/// with clap's exit code 2 before anything else happens; with `--json` anywhere on the
/// command line its message is a JSON document on stderr, as other errors are.
fn parse_args() -> cli::Args {
    let mut long_help = format!(
        "{}\nEnvironment for S3 repositories (besides the AWS ones):\n",
        cli::EXIT_CODES_HELP
    );
    for (name, what) in holdfast_backend_s3::ENV_VARS {
        long_help.push_str(&format!("  {name}\n          {what}\n"));
    }
    let matches = cli::Args::command()
        .after_long_help(long_help)
        .try_get_matches()
        .unwrap_or_else(|e| usage_error(e));
    cli::Args::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e))
}

/// Reports a clap error (or prints the help or version it stands for) and exits.
fn usage_error(e: clap::Error) -> ! {
    let json = std::env::args_os().any(|a| a == "--json");
    if !e.use_stderr() || !json {
        e.exit();
    }
    // clap's message without its "error: " prefix and the usage and help hints after it,
    // on one line.
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let body = text.split("\n\n").next().unwrap_or_default();
    let msg = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "{}",
        serde_json::json!({"error": msg, "exit_code": exit::USAGE})
    );
    std::process::exit(exit::USAGE);
}

/// What is logged when HOLDFAST_LOG is not set: warnings of holdfast's crates, nothing of
/// the libraries beneath (the AWS SDK's retries are reported by the S3 backend itself).
const DEFAULT_LOG: &str =
    "off,holdfast=warn,holdfast_cli=warn,holdfast_repo=warn,holdfast_engine=warn,holdfast_backend_s3=warn,holdfast_mount=warn";

/// The error and its causes, `a: b: c`, leaving out a cause whose message the text already
/// holds (errors that show their source, like the repository's I/O errors, would otherwise
/// print it twice).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if t.is_empty() || text.contains(&t) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&t);
    }
    text
}

/// The agent logs its progress too (info), with times, as text or JSON lines.
const AGENT_LOG: &str = "off,holdfast=warn,holdfast_cli=warn,holdfast_repo=warn,holdfast_engine=warn,holdfast_backend_s3=warn,holdfast_agent=info";

/// Warnings from holdfast's own crates reach the user by default (a failed heartbeat, a
/// damaged cache entry, a missing pack); HOLDFAST_LOG=debug (or any EnvFilter) shows more.
fn init_logging(args: &cli::Args) {
    let agent = match &args.command {
        cli::Command::Agent(a) if a.action.is_none() => Some(a.run.log_format),
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if agent.is_some() {
            AGENT_LOG
        } else {
            DEFAULT_LOG
        })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match agent {
        Some(holdfast_agent::args::LogFormat::Json) => builder.json().init(),
        Some(holdfast_agent::args::LogFormat::Text) => builder.with_target(false).init(),
        None => builder.without_time().with_target(false).init(),
    }
}

fn main() {
    default_sigpipe();
    let args = parse_args();
    init_logging(&args);
    let code = match cmd::run(&args) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::code_for(&e);
            if args.json {
                let msg = serde_json::json!({"error": error_text(&e), "exit_code": code});
                eprintln!("{msg}");
            } else {
                eprintln!("holdfast: error: {}", error_text(&e));
            }
            code
        }
    };
    std::process::exit(code);
}
