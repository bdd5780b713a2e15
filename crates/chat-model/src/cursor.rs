use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// An opaque, serializable resume position reported by a source and handed back on reconnect.
///
/// Each protocol stores its own typed state in it (an SSE last event id, a last message id, a
/// Ustream range and ignore list); the supervisor persists it without looking inside. Cloning
/// is cheap (the value is shared): a cursor travels with every event.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor(Arc<serde_json::Value>);

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
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
        // Serializing plain data structs to a Value cannot fail; fall back to null if it does.
        Cursor::from_json(serde_json::to_value(state).unwrap_or(serde_json::Value::Null))
    }

    /// Reads a protocol's typed resume state back.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, CursorError> {
        Ok(T::deserialize(&*self.0)?)
    }

    /// Wraps an already-built JSON value.
    pub fn from_json(value: serde_json::Value) -> Self {
        Cursor(Arc::new(value))
    }

    /// The cursor as JSON.
    pub fn as_json(&self) -> &serde_json::Value {
        &self.0
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
    fn wrong_shape_is_an_error() {
        let c = Cursor::from_json(serde_json::json!("abc"));
        let err = c.to_typed::<S>().unwrap_err();
        assert!(err.to_string().contains("resume cursor"));
    }
}
