//! The holdfast node agent: finds the persistent volumes mounted on its node and backs them
//! up into one repository on their schedules (`holdfast agent`, run as a DaemonSet).
#![deny(missing_docs)]

pub mod args;
pub mod config;
pub mod error;
pub mod manifests;
pub mod priority;

pub use error::{AgentError, Result};
