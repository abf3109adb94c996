//! `holdfast agent`: hands the repository options to the agent crate.

use anyhow::Result;
use holdfast_agent::args::AgentArgs;
use holdfast_agent::repo::RepoSettings;

use crate::cli::Args;

pub fn run(args: &Args, a: &AgentArgs) -> Result<i32> {
    let repo = RepoSettings {
        location: args.repo.clone(),
        password_file: args.password_file.clone(),
        password_command: args.password_command.clone(),
        cache_dir: args.cache_dir.clone(),
        no_cache: args.no_cache,
        s3_region: args.s3_region.clone(),
        limit_upload_kib: args.limit_upload,
        limit_download_kib: args.limit_download,
    };
    Ok(holdfast_agent::main(a, repo, args.json)?)
}
