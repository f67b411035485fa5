//! The stateful-history cache model: how many past events each stream's worker holds for an
//! instance, pruned when the stream ends, the instance finishes, a new execution starts or the
//! instance's actor leaves memory (so an idle instance costs no record here).

use std::collections::{HashMap, HashSet};

#[derive(Default)]
pub(super) struct Warm {
    /// instance → stream → past events that stream's worker has cached.
    by_instance: HashMap<String, HashMap<u64, usize>>,
    by_stream: HashMap<u64, HashSet<String>>,
}

impl Warm {
    /// Records that `stream` now holds `events` past events of `instance`; returns what it held.
    pub(super) fn swap(&mut self, stream: u64, instance: &str, events: usize) -> Option<usize> {
        self.by_stream
            .entry(stream)
            .or_default()
            .insert(instance.to_string());
        self.by_instance
            .entry(instance.to_string())
            .or_default()
            .insert(stream, events)
    }

    pub(super) fn forget(&mut self, stream: u64, instance: &str) {
        if let Some(m) = self.by_instance.get_mut(instance) {
            m.remove(&stream);
            if m.is_empty() {
                self.by_instance.remove(instance);
            }
        }
        if let Some(s) = self.by_stream.get_mut(&stream) {
            s.remove(instance);
        }
    }

    pub(super) fn forget_instance(&mut self, instance: &str) {
        for stream in self.by_instance.remove(instance).into_iter().flatten() {
            if let Some(s) = self.by_stream.get_mut(&stream.0) {
                s.remove(instance);
                if s.capacity() > 64 && s.len() * 4 < s.capacity() {
                    s.shrink_to(s.len() * 2);
                }
            }
        }
        crate::census::shrink_after_burst(&mut self.by_instance);
    }

    /// Instances some stream's cache is recorded for.
    pub(super) fn instances(&self) -> usize {
        self.by_instance.len()
    }

    pub(super) fn forget_stream(&mut self, stream: u64) {
        for instance in self.by_stream.remove(&stream).into_iter().flatten() {
            if let Some(m) = self.by_instance.get_mut(&instance) {
                m.remove(&stream);
                if m.is_empty() {
                    self.by_instance.remove(&instance);
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.by_instance.values().map(HashMap::len).sum()
    }
}
