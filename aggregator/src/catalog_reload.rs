//! Catalog reloading: the aggregator picks up a changed catalog file without a restart.
//! A new catalog is validated first; an invalid one is refused with its error and the old
//! one stays in force.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use costpipe_pricing::{Catalog, CatalogError};

/// Watches one catalog file by modification time and content.
#[derive(Debug)]
pub struct CatalogWatcher {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

/// What a check found.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The file did not change.
    Unchanged,
    /// The file changed and the new catalog is valid.
    Loaded(Catalog),
    /// The file changed but the new catalog is invalid; keep the old one.
    Refused(CatalogError),
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl CatalogWatcher {
    /// Watches `path`, whose current content is already loaded.
    pub fn new(path: PathBuf) -> Self {
        let seen = stamp(&path);
        CatalogWatcher { path, seen }
    }

    /// Checks the file once.
    pub fn check(&mut self) -> ReloadOutcome {
        let now = stamp(&self.path);
        if now == self.seen {
            return ReloadOutcome::Unchanged;
        }
        self.seen = now;
        match Catalog::from_path(&self.path) {
            Ok(c) => ReloadOutcome::Loaded(c),
            Err(e) => ReloadOutcome::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_valid_files_load_and_invalid_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("costpipe-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.toml");
        std::fs::write(&path, Catalog::DEFAULT_TOML).unwrap();
        let mut w = CatalogWatcher::new(path.clone());
        assert!(matches!(w.check(), ReloadOutcome::Unchanged));
        std::fs::write(&path, format!("{}\n# changed\n", Catalog::DEFAULT_TOML)).unwrap();
        assert!(matches!(w.check(), ReloadOutcome::Loaded(_)));
        std::fs::write(&path, "catalog_version = 1").unwrap();
        match w.check() {
            ReloadOutcome::Refused(e) => assert!(e.to_string().contains("does not parse"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
