//! Client ids recently found not to exist, bounded on their own so that a
//! flood of made-up ids displaces only other made-up ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct Misses {
    capacity: usize,
    at: HashMap<String, Instant>,
    /// Insertion order, oldest first; an entry whose time no longer
    /// matches `at` was inserted again later or removed.
    order: VecDeque<(String, Instant)>,
}

impl Misses {
    pub fn new(capacity: usize) -> Self {
        Misses {
            capacity,
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `id` was found missing less than `ttl` ago.
    pub fn holds(&self, id: &str, ttl: Duration) -> bool {
        self.at.get(id).is_some_and(|at| at.elapsed() < ttl)
    }

    /// Remembers that `id` is missing, forgetting the oldest miss when full.
    pub fn insert(&mut self, id: &str) {
        let now = Instant::now();
        self.at.insert(id.to_owned(), now);
        self.order.push_back((id.to_owned(), now));
        while self.order.len() > self.capacity {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            if self.at.get(&oldest) == Some(&at) {
                self.at.remove(&oldest);
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.at.remove(id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn holds_at_most_its_capacity_dropping_the_oldest() {
        let mut misses = Misses::new(3);
        for id in ["a", "b", "c", "d"] {
            misses.insert(id);
        }
        assert_eq!(misses.len(), 3);
        assert!(!misses.holds("a", TTL));
        assert!(["b", "c", "d"].iter().all(|id| misses.holds(id, TTL)));
        // Inserting an id again renews it: the next one out is the oldest other.
        misses.insert("b");
        misses.insert("e");
        assert!(misses.holds("b", TTL) && !misses.holds("c", TTL));
        assert!(misses.order.len() <= 3);
    }

    #[test]
    fn a_removed_or_expired_miss_is_not_held() {
        let mut misses = Misses::new(10);
        misses.insert("a");
        misses.remove("a");
        assert!(!misses.holds("a", TTL));
        misses.insert("b");
        assert!(!misses.holds("b", Duration::ZERO));
    }
}
