//! Restore drills.
