//! Progress of a long maintenance run, for a progress line.

/// Receives progress of a long lifecycle run.
pub trait Progress: Send + Sync {
    fn phase(&self, _name: &str) {}
    fn advance(&self, _items: usize) {}
}

pub struct NoProgress;

impl Progress for NoProgress {}
