//! The loaded workflows, reloaded when the directory changes.
//!
//! The directory is checked once a second: each file's name, size and
//! modification time. A change parses again only the files that changed
//! (the others keep what they parsed to), off the async workers. Polling, rather than inotify, also works on
//! network and container-mounted directories, where change notifications
//! are often not delivered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::workflow::{Checks, Loaded, ParseCache, Workflow, load_dir_cached};

/// One load of the directory.
#[derive(Debug)]
pub struct Snapshot {
    pub loaded: Vec<Loaded>,
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// The workflows of a directory, current.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    /// What each file parsed to; one reload at a time.
    cache: Mutex<ParseCache>,
    /// What files are checked against at load: the outbound guard of
    /// `http` step URLs, the CEL budget of conditions.
    checks: Checks,
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut v = files_of(dir);
    for (_, sub) in crate::workflow::tenant_dirs(dir) {
        v.extend(files_of(&sub));
    }
    v.sort();
    v
}

fn files_of(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let v: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    v
}

impl Snapshot {
    /// The files a tenant sees: the directory's own, then its
    /// subdirectory's. An organisation sees its own subdirectory's only:
    /// the directory's own workflows run for each clinic already.
    pub fn for_tenant<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Loaded> + 'a {
        let network = eventflow_model::id::is_organisation_id(tenant);
        self.loaded
            .iter()
            .filter(move |l| match l.tenant.as_deref() {
                None => !network,
                Some(t) => t == tenant,
            })
    }

    /// The workflows that run for a tenant.
    pub fn workflows<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Workflow> + 'a {
        self.for_tenant(tenant)
            .filter_map(|l| l.result.as_deref().ok())
    }

    /// A workflow the tenant runs, by name, and whether it is the tenant's
    /// own (created through the API) rather than the server's.
    pub fn find_scoped<'a>(&'a self, tenant: &'a str, name: &str) -> Option<(&'a Workflow, bool)> {
        self.for_tenant(tenant).find_map(|l| {
            l.result
                .as_deref()
                .ok()
                .filter(|w| w.name == name)
                .map(|w| (w, l.tenant.is_some()))
        })
    }

    /// A workflow the tenant runs, by name.
    pub fn find<'a>(&'a self, tenant: &'a str, name: &str) -> Option<&'a Workflow> {
        self.workflows(tenant).find(|w| w.name == name)
    }
}

impl Registry {
    /// Loads the directory (a missing one has no workflows).
    pub fn load(dir: impl Into<PathBuf>) -> Registry {
        Self::load_checked(dir, Checks::default())
    }

    /// Loads the directory, checking the URLs files fix against the
    /// server's outbound guard and conditions against its CEL budget (see
    /// [`crate::workflow::parse_with`]).
    pub fn load_checked(dir: impl Into<PathBuf>, checks: Checks) -> Registry {
        let dir = dir.into();
        let mut cache = ParseCache::new();
        let snapshot = Snapshot {
            fingerprint: fingerprint(&dir),
            loaded: load_dir_cached(&dir, &mut cache, checks),
        };
        Registry {
            dir,
            current: RwLock::new(Arc::new(snapshot)),
            cache: Mutex::new(cache),
            checks,
        }
    }

    /// What files are checked against.
    pub fn checks(&self) -> Checks {
        self.checks
    }

    /// The workflows as last loaded.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads when a file was added, removed or changed; returns whether it did.
    pub fn reload_if_changed(&self) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = fingerprint(&self.dir);
        if now == self.snapshot().fingerprint {
            return false;
        }
        let snapshot = Arc::new(Snapshot {
            loaded: load_dir_cached(&self.dir, &mut cache, self.checks),
            fingerprint: now,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
        true
    }

    /// The directory it loads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reloads now (after a write through the API), parsing again the files
    /// that changed and `written`, whatever its size and time say. Blocking:
    /// call it off the async workers.
    pub fn reload(&self, written: Option<&Path>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = written {
            cache.remove(path);
        }
        let snapshot = Arc::new(Snapshot {
            fingerprint: fingerprint(&self.dir),
            loaded: load_dir_cached(&self.dir, &mut cache, self.checks),
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Checks the directory every `every` until the task is aborted.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let r = registry.clone();
                // File reads off the async workers.
                let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_directory_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::load(dir.path());
        assert!(r.snapshot().loaded.is_empty());
        assert!(!r.reload_if_changed());
        std::fs::write(
            dir.path().join("a.yaml"),
            "name: a\non: patient.created\nsteps: [{cancel: {key: k}}]\n",
        )
        .unwrap();
        assert!(r.reload_if_changed());
        assert!(r.snapshot().loaded[0].result.is_ok());
        // An unchanged file is not parsed again: the same workflow.
        let before = r.snapshot().loaded[0].result.clone().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "name: b\non: patient.created\nsteps: [{cancel: {key: k}}]\n",
        )
        .unwrap();
        assert!(r.reload_if_changed());
        let after = r.snapshot().loaded[0].result.clone().unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        // A write through the API parses its file again.
        r.reload(Some(&dir.path().join("a.yaml")));
        let again = r.snapshot().loaded[0].result.clone().unwrap();
        assert!(!Arc::ptr_eq(&before, &again));
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(r.reload_if_changed());
        assert!(r.snapshot().loaded.is_empty());
    }
}
