//! Progress of a long maintenance run, for a progress line, and the way to
//! stop one between its steps.

/// Receives progress of a long maintenance run.
pub trait Progress: Send + Sync {
    fn phase(&self, _name: &str) {}
    fn advance(&self, _items: usize) {}
    /// Whether the run should stop at its next step (a shutdown); it then
    /// ends with [`crate::RegistryError::Cancelled`], leaving nothing half
    /// done that the next run does not finish.
    fn cancelled(&self) -> bool {
        false
    }
}

pub struct NoProgress;

impl Progress for NoProgress {}
