//! `holdfast objects`: helpers for the Kubernetes objects the agent backs up (one YAML
//! file per object; see the agent's `objects` module).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// What `holdfast objects` does.
#[derive(Debug, Clone, Subcommand)]
pub enum ObjectsAction {
    /// Print the YAML files of a restored objects snapshot in the order `kubectl apply`
    /// needs them (CustomResourceDefinitions, Namespaces, cluster-scoped objects,
    /// namespaced objects, custom resources), one path per line:
    /// `holdfast objects apply-order ./restored/objects | xargs -n50 kubectl apply -f`.
    ApplyOrder {
        /// The restored directory (the snapshot's `/objects`, or a part of it).
        dir: PathBuf,
    },
}

/// Runs `holdfast objects ACTION`.
pub fn run(action: &ObjectsAction) -> Result<i32> {
    match action {
        ObjectsAction::ApplyOrder { dir } => {
            let files = holdfast_agent::objects::apply_order(dir)
                .with_context(|| format!("ordering the objects below {}", dir.display()))?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(0)
        }
    }
}
