use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// An opaque, serializable resume position reported by a source and handed back on reconnect.
///
/// Each protocol stores its own typed state in it (an SSE last event id, a last message id, a
/// Ustream range and ignore list); the supervisor persists it without looking inside. A cursor
/// travels with every event, so it is cheap to make and to clone: it keeps the state as compact
/// JSON text (shared between clones) and builds the JSON value only when asked for it.
#[derive(Clone)]
pub struct Cursor(Arc<Inner>);

struct Inner {
    /// The state as compact JSON.
    text: Box<str>,
    /// The state as a JSON value, built on first use.
    value: OnceLock<serde_json::Value>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cursor").field(self.as_json()).finish()
    }
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Cursor) -> bool {
        // The same text is the same value; different text may still be (key order).
        self.0.text == other.0.text || self.as_json() == other.as_json()
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Cursor::from_json)
    }
}

/// A cursor that does not hold the state a protocol expected.
#[derive(Debug, thiserror::Error)]
#[error("resume cursor does not match this protocol's format: {0}")]
pub struct CursorError(#[from] serde_json::Error);

impl Cursor {
    /// Wraps a protocol's typed resume state.
    pub fn from_typed<T: Serialize>(state: &T) -> Self {
        // Serializing plain data structs cannot fail; fall back to null if it does.
        let text = serde_json::to_string(state).unwrap_or_else(|_| "null".to_owned());
        Cursor(Arc::new(Inner {
            text: text.into_boxed_str(),
            value: OnceLock::new(),
        }))
    }

    /// Reads a protocol's typed resume state back.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, CursorError> {
        match self.0.value.get() {
            Some(value) => Ok(T::deserialize(value)?),
            None => Ok(serde_json::from_str(&self.0.text)?),
        }
    }

    /// Wraps an already-built JSON value.
    pub fn from_json(value: serde_json::Value) -> Self {
        Cursor(Arc::new(Inner {
            text: value.to_string().into_boxed_str(),
            value: OnceLock::from(value),
        }))
    }

    /// The cursor as JSON.
    pub fn as_json(&self) -> &serde_json::Value {
        self.0.value.get_or_init(|| {
            // The text was written by serde_json from a value or a typed state.
            serde_json::from_str(&self.0.text).unwrap_or(serde_json::Value::Null)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        last_id: u64,
        ignored: Vec<String>,
    }

    #[test]
    fn typed_round_trip() {
        let s = S {
            last_id: 42,
            ignored: vec!["a".into()],
        };
        let c = Cursor::from_typed(&s);
        assert_eq!(c.to_typed::<S>().unwrap(), s);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"ignored":["a"],"last_id":42}"#);
    }

    #[test]
    fn a_typed_cursor_equals_its_saved_copy() {
        let s = S {
            last_id: 7,
            ignored: vec![],
        };
        let typed = Cursor::from_typed(&s);
        // Saved and read back, its keys come in another order: still the same cursor.
        let saved: Cursor = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
        assert_eq!(typed, saved);
        assert_eq!(saved.to_typed::<S>().unwrap(), s);
        let other = Cursor::from_typed(&S {
            last_id: 8,
            ignored: vec![],
        });
        assert_ne!(typed, other);
        assert_eq!(typed.clone().as_json()["last_id"], 7);
        assert_eq!(
            format!("{typed:?}"),
            format!("Cursor({:?})", saved.as_json())
        );
    }

    #[test]
    fn wrong_shape_is_an_error() {
        let c = Cursor::from_json(serde_json::json!("abc"));
        let err = c.to_typed::<S>().unwrap_err();
        assert!(err.to_string().contains("resume cursor"));
    }
}
