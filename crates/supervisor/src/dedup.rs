//! A bounded window of recently delivered event ids.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The most recent `capacity` distinct ids, oldest evicted first.
///
/// Membership is O(1) (a hash set); order is kept in a queue so the oldest id is dropped when
/// the window is full. A capacity of 0 disables deduplication.
#[derive(Clone, Debug)]
pub struct RecentIds {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    /// An empty window holding at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Whether `id` is in the window.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Adds `id`; returns `false` (and changes nothing) when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(id.clone());
        self.order.push_back(id);
        true
    }

    /// How many ids the window holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most ids the window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The ids, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut w = RecentIds::new(3);
        assert!(w.insert("a"));
        assert!(w.insert("b"));
        assert!(!w.insert("a"), "duplicate refused");
        assert!(w.insert("c"));
        assert!(w.insert("d"));
        assert_eq!(w.len(), 3);
        assert!(!w.contains("a"), "oldest evicted");
        assert_eq!(w.iter().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert!(w.insert("a"), "an evicted id counts as new again");
        assert!(!w.contains("b"));
    }

    #[test]
    fn zero_capacity_disables() {
        let mut w = RecentIds::new(0);
        assert!(w.insert("a"));
        assert!(w.insert("a"));
        assert!(w.is_empty());
    }
}
