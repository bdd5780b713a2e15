//! Where a refreshed API key goes, and the date of the last refresh (StreamIn allows one
//! refresh per day).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chat_model::{Secret, lock_ignoring_poison};
use chrono::NaiveDate;

use crate::error::KeyStoreError;

/// Stores a refreshed API key and remembers the (UTC) day of the last refresh.
pub trait KeyStore: Send + Sync {
    /// Saves the new key.
    fn store_key(&self, key: &Secret) -> Result<(), KeyStoreError>;
    /// The day of the last refresh, if any is remembered.
    fn last_refresh(&self) -> Result<Option<NaiveDate>, KeyStoreError>;
    /// Remembers a refresh (or a refused one) on `day`.
    fn record_refresh(&self, day: NaiveDate) -> Result<(), KeyStoreError>;
}

/// A key store in memory (for keys from environment variables and for tests).
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    key: Mutex<Option<Secret>>,
    last: Mutex<Option<NaiveDate>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryKeyStore::default()
    }

    /// A store that remembers a refresh on `day`.
    pub fn refreshed_on(day: NaiveDate) -> Self {
        let s = MemoryKeyStore::default();
        *lock_ignoring_poison(&s.last) = Some(day);
        s
    }

    /// The last key stored.
    pub fn key(&self) -> Option<Secret> {
        lock_ignoring_poison(&self.key).clone()
    }
}

impl KeyStore for MemoryKeyStore {
    fn store_key(&self, key: &Secret) -> Result<(), KeyStoreError> {
        *lock_ignoring_poison(&self.key) = Some(key.clone());
        Ok(())
    }

    fn last_refresh(&self) -> Result<Option<NaiveDate>, KeyStoreError> {
        Ok(*lock_ignoring_poison(&self.last))
    }

    fn record_refresh(&self, day: NaiveDate) -> Result<(), KeyStoreError> {
        *lock_ignoring_poison(&self.last) = Some(day);
        Ok(())
    }
}

/// A key kept in a file (`api_key = { file = "..." }`): rewritten atomically (temporary file
/// in the same directory, fsync, rename, mode 0600); the last refresh day is kept in a
/// sidecar file next to it (`<file>.last-refresh`).
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: PathBuf,
    state: PathBuf,
}

impl FileKeyStore {
    /// A store for the key file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut state = path.clone().into_os_string();
        state.push(".last-refresh");
        FileKeyStore {
            path,
            state: state.into(),
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sidecar file holding the last refresh day.
    pub fn state_path(&self) -> &Path {
        &self.state
    }

    /// Reads the key (surrounding whitespace removed).
    pub fn load(&self) -> Result<Secret, KeyStoreError> {
        std::fs::read_to_string(&self.path)
            .map(|s| Secret::new(s.trim()))
            .map_err(|source| KeyStoreError {
                action: "read the API key file",
                path: self.path.display().to_string(),
                source,
            })
    }
}

impl KeyStore for FileKeyStore {
    fn store_key(&self, key: &Secret) -> Result<(), KeyStoreError> {
        chat_model::fs::write_atomically(&self.path, format!("{}\n", key.expose()).as_bytes())
            .map_err(|source| KeyStoreError {
                action: "write the API key file",
                path: self.path.display().to_string(),
                source,
            })
    }

    fn last_refresh(&self) -> Result<Option<NaiveDate>, KeyStoreError> {
        match std::fs::read_to_string(&self.state) {
            Ok(s) => Ok(NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyStoreError {
                action: "read the refresh date file",
                path: self.state.display().to_string(),
                source,
            }),
        }
    }

    fn record_refresh(&self, day: NaiveDate) -> Result<(), KeyStoreError> {
        chat_model::fs::write_atomically(
            &self.state,
            format!("{}\n", day.format("%Y-%m-%d")).as_bytes(),
        )
        .map_err(|source| KeyStoreError {
            action: "write the refresh date file",
            path: self.state.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_rewrites_atomically_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamin.key");
        std::fs::write(&path, "c197a6f761adb8ce1a47cdf9f22d705c\n").unwrap();
        #[cfg(unix)]
        let ino_before = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).unwrap().ino()
        };
        let store = FileKeyStore::new(&path);
        assert_eq!(
            store.load().unwrap().expose(),
            "c197a6f761adb8ce1a47cdf9f22d705c"
        );
        store
            .store_key(&Secret::new("e8468bc7a055e0601f1842c515bffeb2"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "e8468bc7a055e0601f1842c515bffeb2\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_ne!(
                meta.ino(),
                ino_before,
                "replaced by rename, not rewritten in place"
            );
        }
        // Nothing but the key file (and no temporary leftovers).
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["streamin.key"]);
        assert_eq!(store.last_refresh().unwrap(), None);
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        store.record_refresh(day).unwrap();
        assert_eq!(FileKeyStore::new(&path).last_refresh().unwrap(), Some(day));
        assert!(store.state_path().ends_with("streamin.key.last-refresh"));
    }

    #[test]
    fn errors_name_the_file_not_the_key() {
        let store = FileKeyStore::new("/nonexistent-dir/x/key");
        let e = store.store_key(&Secret::new("SECRETSECRET")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/nonexistent-dir/x/key"), "{text}");
        assert!(!text.contains("SECRETSECRET"));
    }

    #[test]
    fn memory_store() {
        let s = MemoryKeyStore::new();
        s.store_key(&Secret::new("k")).unwrap();
        assert_eq!(s.key().unwrap().expose(), "k");
        let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(
            MemoryKeyStore::refreshed_on(day).last_refresh().unwrap(),
            Some(day)
        );
    }
}
