//! The one poison-ignoring lock every crate's shared caches and stores use.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the data if a panicking holder poisoned it.
///
/// The mutexes this is for guard plain data (caches, memories, counters) that stays
/// consistent between statements, so a panic elsewhere is no reason to stop using it.
pub fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_with_its_data() {
        let m = Mutex::new(vec![1]);
        let r = std::panic::catch_unwind(|| {
            let mut g = m.lock().unwrap();
            g.push(2);
            panic!("holder fails");
        });
        assert!(r.is_err());
        assert!(m.is_poisoned());
        let mut g = lock_ignoring_poison(&m);
        assert_eq!(*g, [1, 2]);
        g.push(3);
        drop(g);
        assert_eq!(*lock_ignoring_poison(&m), [1, 2, 3]);
    }
}
