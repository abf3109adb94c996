//! The holdfast node agent: backs up a Kubernetes node's volumes on a schedule.
//!
//! Not built yet; the repository format and engine come first (see the issues).
#![deny(missing_docs)]
