//! `holdfast`: the command-line tool. A thin layer over the repository and engine crates:
//! it parses arguments, gets the password, shows progress and maps errors to exit codes.

mod cli;
mod cmd;
mod exit;
mod password;
mod ui;

use clap::Parser;

/// Restores the default SIGPIPE action, so `holdfast ... | head` ends quietly when the
/// reader goes away instead of failing on every later write (Rust ignores SIGPIPE).
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists, and installs the
    // default disposition (no handler code runs in signal context).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() {
    default_sigpipe();
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cmd::run(&args) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::code_for(&e);
            if args.json {
                let msg = serde_json::json!({"error": format!("{e:#}"), "exit_code": code});
                eprintln!("{msg}");
            } else {
                eprintln!("holdfast: error: {e:#}");
            }
            code
        }
    };
    std::process::exit(code);
}
