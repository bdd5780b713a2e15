//! The durable state file: per source, the resume cursor of the last delivered event, when it
//! was delivered, and the ids delivered last.
//!
//! Format (JSON, version 1):
//!
//! ```json
//! {
//!   "version": 1,
//!   "sources": {
//!     "ops": {
//!       "service": "campfire",
//!       "identity": "campfire https://acme.campfirenow.com room 111",
//!       "cursor": {"last_id": 42},
//!       "last_delivery_at": "2026-11-30T22:00:00Z",
//!       "recent_ids": ["campfire:1:41", "campfire:1:42"]
//!     }
//!   }
//! }
//! ```
//!
//! `identity` is what the source read when the cursor was saved ([`Source::identity`]): a
//! cursor (and the recent ids) are reused only while the source still reads the same thing.
//! A file written before identities were kept has none; its cursors are reused and the
//! identity is recorded at the next save. Identities are plain text, never secrets.
//!
//! Writes are atomic: a temporary file in the same directory is written, flushed to disk
//! (`fsync`) and renamed over the old file, so a crash leaves either the old or the new state,
//! never a torn one. On unix the file is created with mode `0600` (cursors may identify
//! private rooms). A file that is not JSON or not of this shape is set aside as
//! `<name>.corrupt-<unix seconds>` and reported, never silently dropped.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use chat_model::{Cursor, Timestamp};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::Source;
use crate::SupervisorError;

/// The state file format version this crate writes.
pub const STATE_VERSION: u32 = 1;

/// What is saved for one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSource {
    /// The service the source spoke when saved (a cursor means nothing to another service).
    pub service: String,
    /// What the source read when saved ([`Source::identity`]); empty when unknown (a file
    /// from before identities were kept, or a source that does not say).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
    /// The cursor after the last delivered event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// When the source last delivered something the consumer took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_at: Option<Timestamp>,
    /// The ids delivered last, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_ids: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    #[serde(default)]
    sources: BTreeMap<String, SavedSource>,
}

/// [`Document`] as written, borrowing the sources instead of copying them for every save.
#[derive(Serialize)]
struct DocumentRef<'a> {
    version: u32,
    sources: &'a BTreeMap<String, SavedSource>,
}

/// The state file: its path and the saved state of every source, including sources that are
/// not configured now (kept so that commenting a source out does not lose its cursor).
#[derive(Clone, Debug, PartialEq)]
pub struct StateFile {
    path: PathBuf,
    sources: BTreeMap<String, SavedSource>,
}

impl StateFile {
    /// An empty state for `path` (nothing is read or written).
    pub fn empty(path: impl Into<PathBuf>) -> Self {
        StateFile {
            path: path.into(),
            sources: BTreeMap::new(),
        }
    }

    /// Reads the state file at `path`.
    ///
    /// A missing file gives an empty state. A corrupt one (not JSON, wrong shape, unknown
    /// version) is renamed to `<name>.corrupt-<unix seconds>` and an empty state is returned
    /// with a warning saying so (also logged). An IO error other than "not found" — or a
    /// corrupt file that cannot be renamed — is an error.
    pub fn load(path: impl Into<PathBuf>) -> Result<(StateFile, Vec<String>), SupervisorError> {
        let path = path.into();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok((StateFile::empty(path), vec![]));
            }
            Err(source) => return Err(SupervisorError::StateRead { path, source }),
        };
        let problem = match serde_json::from_slice::<Document>(&bytes) {
            Ok(doc) if doc.version == STATE_VERSION => {
                return Ok((
                    StateFile {
                        path,
                        sources: doc.sources,
                    },
                    vec![],
                ));
            }
            Ok(doc) => format!(
                "it has format version {} but this program reads version {STATE_VERSION}",
                doc.version
            ),
            Err(e) => format!("it is not a valid state file: {e}"),
        };
        let aside = set_aside_path(&path);
        if let Err(source) = std::fs::rename(&path, &aside) {
            return Err(SupervisorError::StateSetAside {
                path,
                problem,
                source,
            });
        }
        let warning = format!(
            "state file {} was set aside as {}: {problem}; every source starts without a saved cursor",
            path.display(),
            aside.display()
        );
        tracing::warn!("{warning}");
        Ok((StateFile::empty(path), vec![warning]))
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state of the source `name`.
    pub fn get(&self, name: &str) -> Option<&SavedSource> {
        self.sources.get(name)
    }

    /// Replaces the saved state of the source `name`.
    pub fn set(&mut self, name: impl Into<String>, saved: SavedSource) {
        self.sources.insert(name.into(), saved);
    }

    /// Every saved source, by name.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &SavedSource)> {
        self.sources.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Writes the state atomically (temporary file, fsync, rename; mode 0600 on unix),
    /// creating the parent directory when missing.
    pub fn save(&self) -> Result<(), SupervisorError> {
        let doc = DocumentRef {
            version: STATE_VERSION,
            sources: &self.sources,
        };
        let mut text =
            serde_json::to_vec_pretty(&doc).map_err(|e| SupervisorError::StateWrite {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        text.push(b'\n');
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        dir.map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| chat_model::fs::write_atomically(&self.path, &text))
            .map_err(|source| SupervisorError::StateWrite {
                path: self.path.clone(),
                source,
            })
    }
}

fn set_aside_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    let mut aside = path.with_file_name(format!("{name}.corrupt-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.corrupt-{secs}-{n}"));
        n += 1;
    }
    aside
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> SavedSource {
        SavedSource {
            service: "campfire".into(),
            identity: "campfire http://127.0.0.1:1 room 111".into(),
            cursor: Some(Cursor::from_json(serde_json::json!({"last_id": 42}))),
            last_delivery_at: Some(
                chrono::Utc
                    .with_ymd_and_hms(2026, 11, 30, 22, 0, 0)
                    .unwrap(),
            ),
            recent_ids: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        let mut s = StateFile::empty(&path);
        s.set("ops", sample());
        s.set(
            "other",
            SavedSource {
                service: "ustream".into(),
                ..Default::default()
            },
        );
        s.save().unwrap();
        let (back, warnings) = StateFile::load(&path).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(back, s);
        assert_eq!(back.get("ops"), Some(&sample()));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["sources"]["ops"]["cursor"]["last_id"], 42);
        assert_eq!(
            v["sources"]["ops"]["identity"],
            "campfire http://127.0.0.1:1 room 111"
        );
        assert!(
            v["sources"]["other"].get("identity").is_none(),
            "an empty identity is not written"
        );
        assert_eq!(
            v["sources"]["ops"]["last_delivery_at"],
            "2026-11-30T22:00:00Z"
        );
    }

    #[test]
    fn a_file_without_identities_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"sources":{"ops":{"service":"campfire","cursor":{"last_id":7}}}}"#,
        )
        .unwrap();
        let (s, warnings) = StateFile::load(&path).unwrap();
        assert!(warnings.is_empty());
        let ops = s.get("ops").unwrap();
        assert_eq!(ops.identity, "");
        assert_eq!(ops.cursor.as_ref().unwrap().as_json()["last_id"], 7);
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (s, warnings) = StateFile::load(dir.path().join("nope.json")).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(s.sources().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn mode_is_0600_even_over_a_wider_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"version":1,"sources":{}}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut s = StateFile::empty(&path);
        s.set("ops", sample());
        s.save().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn save_replaces_by_rename_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = StateFile::empty(&path);
        s.set("ops", sample());
        s.save().unwrap();
        #[cfg(unix)]
        let first_inode = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).unwrap().ino()
        };
        s.set("ops2", sample());
        s.save().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // A new inode: the file was replaced by a rename, not rewritten in place.
            assert_ne!(std::fs::metadata(&path).unwrap().ino(), first_inode);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn corrupt_files_are_set_aside_with_a_warning() {
        for (what, content) in [
            ("not json", "{this is not json"),
            (
                "wrong shape",
                r#"{"version":1,"sources":{"ops":{"cursor":1}}}"#,
            ),
            ("wrong type", r#"[1,2,3]"#),
            ("future version", r#"{"version":99,"sources":{}}"#),
            ("empty", ""),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            std::fs::write(&path, content).unwrap();
            let (s, warnings) = StateFile::load(&path).unwrap();
            assert_eq!(s.sources().count(), 0, "{what}");
            assert_eq!(warnings.len(), 1, "{what}");
            assert!(warnings[0].contains("set aside"), "{what}: {}", warnings[0]);
            assert!(!path.exists(), "{what}: original moved away");
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(aside.len(), 1, "{what}");
            let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("state.json.corrupt-"), "{what}: {name}");
            assert!(
                warnings[0].contains(&name),
                "{what}: warning names the new file"
            );
            assert_eq!(
                std::fs::read_to_string(&aside[0]).unwrap(),
                content,
                "{what}: kept intact"
            );
        }
    }

    #[test]
    fn unreadable_path_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails with an IO error that is not
        // "not found".
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).unwrap();
        let err = StateFile::load(&path).unwrap_err();
        assert!(matches!(err, SupervisorError::StateRead { .. }), "{err}");
        assert!(err.to_string().contains("state.json"));
    }
}
