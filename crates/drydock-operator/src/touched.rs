//! Nodes past their drain that changed, for the steps to look at (`planner::step`): the
//! node watch adds them as their events come, the leader's steps take them.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Names of changed nodes not looked at yet, each once however often it changed.
#[derive(Debug, Default)]
pub struct Touched {
    names: Mutex<HashSet<String>>,
    /// Poked when a name is added.
    pub added: Notify,
}

impl Touched {
    fn names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of names: no panic leaves it half changed.
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `name` and wakes the taker.
    pub fn add(&self, name: &str) {
        let added = self.names().insert(name.to_string());
        if added {
            self.added.notify_one();
        }
    }

    /// Takes every name added since the last take.
    pub fn take(&self) -> Vec<String> {
        self.names().drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_taken_once_each_and_adding_wakes_the_taker() {
        let t = Touched::default();
        t.add("a");
        t.add("b");
        t.add("a");
        // The first add's wake-up is kept for a taker that was not waiting yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), t.added.notified())
            .await
            .expect("woken");
        let mut names = t.take();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(t.take().is_empty());
    }
}
