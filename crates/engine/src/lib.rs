//! The holdfast backup and restore engine.

pub mod fsmeta;
