//! Text codecs at the bottom of the store: JSON in and out of the TEXT
//! columns both backends use for bodies, with a clear error when a stored
//! body does not parse.

use crate::error::{Result, StoreError};

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::corrupt("json"))
}

pub(crate) fn parse_object(text: &str) -> Result<eventflow_model::Object> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("record body"))
}

pub(crate) fn parse_event(text: &str) -> Result<eventflow_model::Event> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("event body"))
}

/// A text that is not one of a vocabulary's values. It names the
/// vocabulary (`run status`), never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known {0}")]
pub struct UnknownValue(pub &'static str);

impl From<UnknownValue> for StoreError {
    /// A stored value outside its column's vocabulary: the row is corrupt.
    fn from(e: UnknownValue) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// A vocabulary stored in a TEXT column: an enum whose each value has one
/// spelling, written once here and used by `as_str`, `Display`, `FromStr`
/// (failing with [`UnknownValue`]) and serde (a JSON string).
///
/// ```text
/// text_enum! {
///     /// Where a run stands.
///     pub enum RunStatus("run status") {
///         Pending = "pending",
///         Succeeded = "succeeded",
///     }
/// }
/// ```
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in the order the API documents them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every value's spelling, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value as stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::codec::UnknownValue;

            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::codec::UnknownValue($what)),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use text_enum;
