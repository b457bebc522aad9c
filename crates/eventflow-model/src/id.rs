//! Prefixed, time-ordered ids: `pat_0193…`. The prefix names the kind, so an
//! id pasted into the wrong place is caught; UUID v7 makes them sort by
//! creation time, which list pagination relies on.
//!
//! The ids the server makes for itself have a type each ([`TenantId`],
//! [`KeyId`], [`EndpointId`], [`DeliveryId`], [`ReplayId`], [`RunId`],
//! [`EventId`]): a `String` inside, written and read in JSON as that plain
//! string. [`parse`](TenantId::parse) takes text from outside (a path, a
//! query) and refuses an id of another kind or of no kind, so such text
//! names nothing and never reaches the database.

/// A new id with this prefix (`"pat"` → `pat_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A new id with this prefix whose time is `at` (of the server's clock,
/// which tests move by hand): ids made so sort by that time, so the oldest
/// are a range of the primary key (what retention deletes).
pub fn new_id_at(prefix: &str, at: jiff::Timestamp) -> String {
    let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    format!("{prefix}_{}", uuid::Uuid::new_v7(ts).simple())
}

/// The smallest id with this prefix made at or after `at` by
/// [`new_id_at`]: every one made before sorts below it.
pub fn id_floor_at(prefix: &str, at: jiff::Timestamp) -> String {
    let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
    format!("{prefix}_{:012x}", ms & 0xffff_ffff_ffff)
}

/// Longest id accepted anywhere (a made id is at most 37 bytes).
pub const MAX_ID_LEN: usize = 100;

/// Whether `id` has the shape of an id: a lowercase prefix, `_`, then ASCII
/// letters and digits. Anything else names no record and is answered without
/// asking the database (PostgreSQL refuses text with a NUL byte outright).
pub fn is_well_formed(id: &str) -> bool {
    let Some((prefix, rest)) = id.split_once('_') else {
        return false;
    };
    id.len() <= MAX_ID_LEN
        && !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why text is not an id of a kind: malformed, or another kind's prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an id of the form {prefix}_…")]
pub struct IdError {
    /// The prefix the id should have had.
    pub prefix: &'static str,
}

/// Declares a prefixed id type: a `String` inside, made fresh with its
/// prefix, parsed from text with the prefix and shape checked, serialized as
/// the plain string.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident = $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("The prefix of every such id: `", $prefix, "`.")]
            pub const PREFIX: &'static str = $prefix;

            #[doc = concat!("A new id: `", $prefix, "_…`, after every id made before it.")]
            pub fn fresh() -> Self {
                Self(new_id($prefix))
            }

            #[doc = concat!("Text as an id of this kind: [well formed](is_well_formed), with the prefix `", $prefix, "_`.")]
            pub fn parse(text: &str) -> Result<Self, IdError> {
                match text.split_once('_') {
                    Some(($prefix, _)) if is_well_formed(text) => Ok(Self(text.to_string())),
                    _ => Err(IdError { prefix: $prefix }),
                }
            }

            /// An id read back from the database, which only holds ids it
            /// was given as this type: taken as it is.
            pub fn from_stored(id: String) -> Self {
                Self(id)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::parse(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                match text.split_once('_') {
                    Some(($prefix, _)) if is_well_formed(&text) => Ok(Self(text)),
                    _ => Err(IdError { prefix: $prefix }),
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(text: &str) -> Result<Self, IdError> {
                Self::parse(text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::try_from(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id! {
    /// A tenant: `ten_…`, a clinic. Every piece of data but the tenants
    /// themselves belongs to one (an organisation's is kept the same way,
    /// under an `org_…` id: [`TenantId::fresh_organisation`]).
    TenantId = "ten"
}

/// The prefix of an organisation's id: `org_…`. An organisation is kept as
/// a tenant of its own (its keys, endpoints and workflows are its own), so
/// its id is a [`TenantId`] with this prefix.
pub const ORGANISATION_PREFIX: &str = "org";

/// Whether `id` is an organisation's (`org_…`).
pub fn is_organisation_id(id: &str) -> bool {
    id.split_once('_')
        .is_some_and(|(p, _)| p == ORGANISATION_PREFIX)
}

impl TenantId {
    /// A new organisation's id: `org_…`.
    pub fn fresh_organisation() -> Self {
        Self(new_id(ORGANISATION_PREFIX))
    }

    /// Text as an organisation's id (`org_…`).
    pub fn parse_organisation(text: &str) -> Result<Self, IdError> {
        match text.split_once('_') {
            Some((ORGANISATION_PREFIX, _)) if is_well_formed(text) => Ok(Self(text.to_string())),
            _ => Err(IdError {
                prefix: ORGANISATION_PREFIX,
            }),
        }
    }

    /// Whether this is an organisation (`org_…`) rather than a clinic.
    pub fn is_organisation(&self) -> bool {
        is_organisation_id(&self.0)
    }
}

prefixed_id! {
    /// An API key: `key_…`.
    KeyId = "key"
}

prefixed_id! {
    /// A webhook endpoint: `ep_…`.
    EndpointId = "ep"
}

prefixed_id! {
    /// A delivery of an event to an endpoint: `dlv_…`.
    DeliveryId = "dlv"
}

prefixed_id! {
    /// A replay of past events to an endpoint: `rpl_…`.
    ReplayId = "rpl"
}

prefixed_id! {
    /// A workflow run: `run_…`.
    RunId = "run"
}

prefixed_id! {
    /// An event of a tenant's log: `evt_…`.
    EventId = "evt"
}

#[cfg(test)]
mod tests {
    use super::{DeliveryId, EndpointId, EventId, KeyId, ReplayId, RunId, TenantId};

    #[test]
    fn a_new_id_has_its_prefix() {
        assert!(TenantId::fresh().as_str().starts_with("ten_"));
        assert!(KeyId::fresh().as_str().starts_with("key_"));
        assert!(EndpointId::fresh().as_str().starts_with("ep_"));
        assert!(DeliveryId::fresh().as_str().starts_with("dlv_"));
        assert!(ReplayId::fresh().as_str().starts_with("rpl_"));
        assert!(RunId::fresh().as_str().starts_with("run_"));
        assert!(EventId::fresh().as_str().starts_with("evt_"));
        let a = EventId::fresh();
        let b = EventId::fresh();
        assert!(a < b);
        assert!(super::is_well_formed(a.as_str()));
        assert_eq!(EventId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.to_string(), a.as_str());
    }

    #[test]
    fn a_parse_refuses_another_kind_and_malformed_text() {
        let endpoint = EndpointId::fresh();
        assert!(DeliveryId::parse(endpoint.as_str()).is_err());
        assert!(TenantId::parse(endpoint.as_str()).is_err());
        assert!(EndpointId::parse(endpoint.as_str()).is_ok());
        // A prefix that only starts like the right one is another kind.
        assert!(EndpointId::parse("eps_abc").is_err());
        assert!(EventId::parse("ev_abc").is_err());
        for bad in ["", "ep", "ep_", "_x", "ep_a\0", "ep_a-b", "EP_x", "ep_é"] {
            assert!(EndpointId::parse(bad).is_err(), "{bad:?}");
            assert!(EndpointId::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        assert!(EndpointId::parse(&format!("ep_{}", "0".repeat(100))).is_err());
        let e = RunId::parse("evt_x").unwrap_err();
        assert_eq!(e.to_string(), "not an id of the form run_…");
    }

    #[test]
    fn an_id_is_a_plain_string_in_json() {
        let id = TenantId::fresh();
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::Value::String(id.as_str().to_string()));
        let back: TenantId = serde_json::from_value(json).unwrap();
        assert_eq!(back, id);
        let wrong = serde_json::Value::String(KeyId::fresh().into_string());
        assert!(serde_json::from_value::<TenantId>(wrong).is_err());
    }

    #[test]
    fn ids_sort_by_creation() {
        let early: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let late: jiff::Timestamp = "2026-01-01T00:00:00.001Z".parse().unwrap();
        let (x, y) = (
            super::new_id_at("dsc", early),
            super::new_id_at("dsc", late),
        );
        assert!(x < super::id_floor_at("dsc", late) && super::id_floor_at("dsc", late) <= y);
        assert!(super::id_floor_at("dsc", early) <= x);
        let a = super::new_id("evt");
        let b = super::new_id("evt");
        assert!(a.starts_with("evt_"));
        assert!(a < b);
        assert!(super::is_well_formed(&a));
    }

    #[test]
    fn malformed_ids() {
        for bad in [
            "", "pat", "pat_", "_x", "pat_a\0", "pat_a-b", "Pat_x", "pat_é",
        ] {
            assert!(!super::is_well_formed(bad), "{bad:?}");
        }
        assert!(!super::is_well_formed(&format!("pat_{}", "0".repeat(100))));
        assert!(super::is_well_formed("pat_doesnotexist"));
    }
}
