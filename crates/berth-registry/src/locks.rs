//! Async locks by key (an upload, a repository), created on demand and
//! dropped when nobody holds or waits for them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<()>>;

pub(crate) struct KeyedLocks<K: Hash + Eq + Clone> {
    map: Arc<Mutex<HashMap<K, Slot>>>,
}

impl<K: Hash + Eq + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks { map: Arc::default() }
    }
}

/// Held while the lock is held; removes the map entry when it is the last user.
pub(crate) struct KeyGuard<K: Hash + Eq + Clone> {
    map: Arc<Mutex<HashMap<K, Slot>>>,
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> KeyGuard<K> {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        KeyGuard { map: self.map.clone(), key, guard: Some(guard) }
    }
}

impl<K: Hash + Eq + Clone> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        // Release first, then drop the entry if nobody else holds its Arc.
        self.guard.take();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|slot| Arc::strong_count(slot) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_excludes_and_entries_are_dropped() {
        let locks: KeyedLocks<u32> = KeyedLocks::default();
        let g = locks.lock(1).await;
        let other = locks.lock(2).await; // a different key does not wait
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock(1)).await;
        assert!(waiting.is_err(), "the same key waits");
        drop((g, other));
        let _again = locks.lock(1).await;
        assert_eq!(locks.map.lock().unwrap().len(), 1);
        drop(_again);
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
