//! A bounded window of recently delivered event ids.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The most recent `capacity` distinct ids, oldest evicted first.
///
/// Membership is O(1) (a hash set); order is kept in a queue so the oldest id is dropped when
/// the window is full. A capacity of 0 disables deduplication. Memory grows with the ids
/// actually held, never beyond what `capacity` ids need: a source that delivers nothing (an
/// idle stream) costs no allocation.
#[derive(Clone, Debug)]
pub struct RecentIds {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    /// An empty window holding at most `capacity` ids (it allocates as ids arrive).
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
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
        // Grow by doubling, but never past the capacity: a full window holds exactly
        // `capacity` ids in the queue without a larger allocation.
        if self.order.len() == self.order.capacity() {
            let want = (self.order.len() * 2).max(8).min(self.capacity);
            self.order.reserve_exact(want - self.order.len());
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
    fn allocates_only_as_ids_arrive_and_not_past_the_capacity() {
        let mut w = RecentIds::new(4096);
        assert_eq!(w.order.capacity(), 0);
        assert_eq!(w.set.capacity(), 0);
        for i in 0..5000 {
            assert!(w.insert(&format!("id{i}")));
        }
        assert_eq!(w.len(), 4096);
        assert!(w.order.capacity() < 4096 * 2, "{}", w.order.capacity());
        assert!(w.contains("id4999") && !w.contains("id903") && w.contains("id904"));
        let mut small = RecentIds::new(3);
        for id in ["a", "b", "c", "d"] {
            small.insert(id);
        }
        assert_eq!(small.iter().collect::<Vec<_>>(), ["b", "c", "d"]);
    }

    #[test]
    fn zero_capacity_disables() {
        let mut w = RecentIds::new(0);
        assert!(w.insert("a"));
        assert!(w.insert("a"));
        assert!(w.is_empty());
    }
}
