//! `holdfast coverage`: every PVC of the cluster and how it is backed up (the audit is
//! the agent crate's, shared with the agent's metrics).

use anyhow::Result;
use holdfast_agent::args::CoverageArgs;

use crate::cli::Args;

pub fn run(args: &Args, c: &CoverageArgs) -> Result<i32> {
    let report = holdfast_agent::coverage::run(c, super::agent::repo_settings(args))?;
    if args.json {
        super::print_json(&report)?;
    } else {
        print!("{}", holdfast_agent::coverage::table(&report));
    }
    Ok(report.exit_code())
}
