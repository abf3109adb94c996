//! `holdfast mount`: opens the repository as the other commands do, mounts it (see
//! holdfast-mount) and serves in the foreground until it is unmounted; SIGINT and SIGTERM
//! unmount, SIGHUP reads the snapshot list again.

use std::path::Path;

use anyhow::{Context, Result};
use holdfast_mount::MountOptions;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{filter, open, print_json};
use crate::cli::{Args, Filter};
use crate::exit;

pub fn run(args: &Args, mountpoint: &Path, allow_other: bool, f: &Filter) -> Result<i32> {
    let opts = MountOptions {
        allow_other,
        filter: filter(f)?,
        ..MountOptions::default()
    };
    let repo = open(args)?;
    let location = repo.backend().location();
    // Caught from before the mount exists, so a signal in between still unmounts cleanly
    // (it is handled as soon as the mount is up) instead of killing the process and
    // leaving a dead mount behind.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install the signal handlers")?;
    let mount = holdfast_mount::mount(repo, mountpoint, &opts)?;
    let control = mount.control();
    let shown = mount.control().snapshot_count();
    if args.json {
        print_json(&serde_json::json!({
            "mountpoint": mountpoint.display().to_string(),
            "repository": location,
            "snapshots": shown,
        }))?;
    } else if !args.quiet {
        println!(
            "mounted {location} ({shown} snapshot{}) at {}; unmount with `fusermount3 -u {}` \
             or Ctrl-C",
            if shown == 1 { "" } else { "s" },
            mountpoint.display(),
            mountpoint.display()
        );
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    control.refresh();
                    continue;
                }
                if let Err(e) = control.unmount() {
                    eprintln!("holdfast: {e}: try again when nothing uses the mount");
                }
            }
        })
        .context("cannot start the signal thread")?;
    mount.run()?;
    if !args.quiet && !args.json {
        println!("unmounted {}", mountpoint.display());
    }
    Ok(exit::OK)
}
