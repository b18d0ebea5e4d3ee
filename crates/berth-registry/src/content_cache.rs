//! Manifest bytes by digest. Content-addressed, so an entry never goes stale:
//! whether a manifest may be served is decided by the metadata lookup before,
//! and this only saves reading the bytes from storage again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use berth_types::Digest;
use bytes::Bytes;

pub(crate) struct ContentCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Bytes>,
    // Insertion order, for first-in first-out eviction.
    order: VecDeque<Digest>,
    bytes: usize,
}

impl ContentCache {
    pub fn new(max_bytes: usize) -> Self {
        ContentCache { max_bytes, inner: Mutex::default() }
    }

    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.get(d).cloned()
    }

    pub fn put(&self, d: &Digest, content: &Bytes) {
        if content.len() > self.max_bytes / 8 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.contains_key(d) {
            return;
        }
        while g.bytes + content.len() > self.max_bytes {
            let Some(old) = g.order.pop_front() else { break };
            if let Some(b) = g.map.remove(&old) {
                g.bytes -= b.len();
            }
        }
        g.bytes += content.len();
        g.order.push_back(d.clone());
        // A copy, so the cache never pins a larger buffer the bytes were sliced from.
        g.map.insert(d.clone(), Bytes::copy_from_slice(content));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_beyond_the_budget() {
        let c = ContentCache::new(800);
        let items: Vec<(Digest, Bytes)> =
            (0..10u8).map(|i| (Digest::of_bytes(&[i]), Bytes::from(vec![i; 100]))).collect();
        for (d, b) in &items {
            c.put(d, b);
        }
        assert!(c.get(&items[0].0).is_none());
        assert!(c.get(&items[1].0).is_none());
        assert_eq!(c.get(&items[9].0).as_deref(), Some(&items[9].1[..]));
        assert_eq!(c.inner.lock().unwrap().bytes, 800);
        // Too large for the budget: not kept.
        let big = Bytes::from(vec![0; 200]);
        c.put(&Digest::of_bytes(&big), &big);
        assert!(c.get(&Digest::of_bytes(&big)).is_none());
    }
}
