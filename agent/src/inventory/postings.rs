//! The pods that carry one label value (or live in one namespace). Adding
//! and removing a pod costs the same whatever the list's length: a short
//! list is a vector, a long one (every pod of a large namespace has
//! `security.istio.io/tlsMode: istio`) a hash set.

use foldhash::{HashSet, HashSetExt};

use super::PodId;

/// Beyond this many pods a list becomes a set.
const SMALL: usize = 32;

#[derive(Debug, Clone)]
pub(crate) enum Postings {
    Small(Vec<PodId>),
    Large(HashSet<PodId>),
}

impl Default for Postings {
    fn default() -> Self {
        Postings::Small(Vec::new())
    }
}

impl Postings {
    pub(crate) fn insert(&mut self, id: PodId) {
        match self {
            Postings::Small(ids) if ids.len() < SMALL => {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Postings::Small(ids) => {
                let mut set = HashSet::with_capacity(ids.len() * 2);
                set.extend(ids.iter().copied());
                set.insert(id);
                *self = Postings::Large(set);
            }
            Postings::Large(set) => {
                set.insert(id);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: PodId) {
        match self {
            Postings::Small(ids) => {
                if let Some(position) = ids.iter().position(|&i| i == id) {
                    ids.swap_remove(position);
                }
            }
            Postings::Large(set) => {
                set.remove(&id);
                if set.len() < SMALL / 2 {
                    *self = Postings::Small(set.iter().copied().collect());
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Postings::Small(ids) => ids.len(),
            Postings::Large(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// In no particular order.
    pub(crate) fn iter(&self) -> PostingsIter<'_> {
        match self {
            Postings::Small(ids) => PostingsIter::Small(ids.iter()),
            Postings::Large(set) => PostingsIter::Large(set.iter()),
        }
    }
}

pub(crate) enum PostingsIter<'a> {
    Small(std::slice::Iter<'a, PodId>),
    Large(std::collections::hash_set::Iter<'a, PodId>),
    Empty,
}

impl Iterator for PostingsIter<'_> {
    type Item = PodId;
    fn next(&mut self) -> Option<PodId> {
        match self {
            PostingsIter::Small(ids) => ids.next().copied(),
            PostingsIter::Large(ids) => ids.next().copied(),
            PostingsIter::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_set_and_back_keeping_its_members() {
        let mut postings = Postings::default();
        for id in 0..100 {
            postings.insert(id);
        }
        assert!(matches!(postings, Postings::Large(_)));
        for id in 0..95 {
            postings.remove(id);
        }
        assert!(matches!(postings, Postings::Small(_)));
        let mut left: Vec<_> = postings.iter().collect();
        left.sort_unstable();
        assert_eq!(left, vec![95, 96, 97, 98, 99]);
    }
}
