//! Memo tables that follow the control flow of the code being emitted.
//!
//! A register computed inside a loop body or a branch arm does not exist on every path
//! past it, so whatever was memoized while that code was emitted is forgotten when it
//! closes: a remembered register always dominates its uses.

use std::collections::HashMap;
use std::hash::Hash;

/// A map whose entries live until the scope that inserted them closes.
#[derive(Debug)]
pub(crate) struct ScopedMap<K, V> {
    scopes: Vec<HashMap<K, V>>,
}

impl<K: Hash + Eq, V: Clone> ScopedMap<K, V> {
    pub fn new() -> Self {
        ScopedMap {
            scopes: vec![HashMap::new()],
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        self.scopes.iter().rev().find_map(|s| s.get(k).cloned())
    }

    /// `k`'s entry if the innermost scope inserted it.
    pub fn get_innermost(&self, k: &K) -> Option<V> {
        self.scopes.last().and_then(|s| s.get(k).cloned())
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.scopes
            .last_mut()
            .expect("a scope is open")
            .insert(k, v);
    }

    pub fn push(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub fn pop(&mut self) {
        self.scopes.pop();
    }

    /// Keeps only the entries, in every scope, for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        for s in &mut self.scopes {
            s.retain(|k, v| keep(k, v));
        }
    }
}
