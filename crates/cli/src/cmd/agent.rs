//! `holdfast agent`: hands the repository options to the agent crate.

use anyhow::Result;
use holdfast_agent::args::AgentArgs;
use holdfast_agent::repo::RepoSettings;

use crate::cli::Args;

pub fn run(args: &Args, a: &AgentArgs) -> Result<i32> {
    Ok(holdfast_agent::main(a, repo_settings(args), args.json)?)
}

/// The global repository options, as the agent crate takes them.
pub fn repo_settings(args: &Args) -> RepoSettings {
    RepoSettings {
        location: args.repo.clone(),
        password_file: args.password_file.clone(),
        password_command: args.password_command.clone(),
        cache_dir: args.cache_dir.clone(),
        no_cache: args.no_cache,
        s3_region: args.s3_region.clone(),
        limit_upload_kib: args.limit_upload,
        limit_download_kib: args.limit_download,
        key_hint: holdfast_repo::repository::KeyHint {
            id_prefix: args.key_hint.clone(),
            // The agent labels with its node name once it knows it.
            host: None,
        },
        maintenance_keys: holdfast_agent::repo::maintenance_keys_from_env(),
    }
}
