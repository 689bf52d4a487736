//! The config file as written, before validation.
//!
//! Each mapping is read by a visitor that takes the keys it knows and *skips* the others
//! (their values are walked with [`IgnoredAny`], never built): unknown keys become warnings
//! (probably typos), and whatever they hold costs nothing. (`#[serde(flatten)]` into a map of
//! values, the usual way to collect unknown keys, buffers every value of the mapping first.)

use std::fmt;
use std::path::PathBuf;

use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Declares a config mapping: its known keys (each optional, of a type) and the names of
/// the unknown ones.
macro_rules! raw_mapping {
    (
        $(#[$meta:meta])* $name:ident, $expecting:literal {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(super) struct $name {
            $( $(#[$fmeta])* pub(super) $field: Option<$ty>, )*
            /// Keys this version does not know, in file order (their values skipped unread).
            pub(super) unknown: Vec<String>,
        }

        impl $name {
            /// The keys this mapping knows, as written in the file.
            #[cfg(test)]
            pub(super) const KEYS: &'static [&'static str] = &[$($key),*];
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                /// Reads the mapping.
                struct MappingVisitor;
                impl<'de> Visitor<'de> for MappingVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        let mut seen: Vec<&'static str> = Vec::new();
                        while let Some(KeyName(key)) = map.next_key()? {
                            match key.as_str() {
                                $( $key => {
                                    if seen.contains(&$key) {
                                        return Err(A::Error::duplicate_field($key));
                                    }
                                    seen.push($key);
                                    out.$field = map.next_value::<Option<$ty>>()?;
                                } )*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                    out.unknown.push(key);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                deserializer.deserialize_map(MappingVisitor)
            }
        }
    };
}

raw_mapping! {
    /// The whole file.
    RawConfig, "a mapping with a `services:` list" {
        /// The frontend services.
        services: Vec<RawService> = "services",
        /// Where the status socket lives.
        status_socket_location: PathBuf = "status-socket-location",
    }
}

raw_mapping! {
    /// One `services:` entry.
    RawService, "a service: a mapping with `key:` and `instances:`" {
        /// Path of the frontend key file.
        key: String = "key",
        /// The backends.
        instances: Vec<RawInstance> = "instances",
        /// Clients allowed to discover the frontend, inline.
        authorized_clients: Vec<RawClient> = "authorized-clients",
        /// A directory of `<name>.auth` files, each a client allowed to discover the frontend.
        authorized_clients_dir: String = "authorized-clients-dir",
        /// Ours: the backends' port, for `onionbalance backend`.
        backend_port: RawBackendPort = "backend-port",
        /// Ours: how to probe the backends.
        health_check: RawHealthCheck = "health-check",
    }
}

raw_mapping! {
    /// A `health-check:` mapping (ours), of a service or, as an override, of an instance.
    RawHealthCheck, "a health check: a mapping with `port:` and optionally `http-path:`, `interval:`, `timeout:`, `down-after:`, `up-after:`, `enabled:`" {
        /// The backends' onion-service port to probe.
        port: u16 = "port",
        /// HTTP path to request instead of a bare connect.
        http_path: String = "http-path",
        /// Time between probes.
        interval: RawDuration = "interval",
        /// Limit for one probe.
        timeout: RawDuration = "timeout",
        /// Failed probes in a row before a backend is down.
        down_after: u32 = "down-after",
        /// Passed probes in a row before a down backend is up again.
        up_after: u32 = "up-after",
        /// `false` turns the checks off here (e.g. for one instance).
        enabled: bool = "enabled",
    }
}

raw_mapping! {
    /// A service's `backend-port:` (ours, not upstream's).
    RawBackendPort, "a backend port: a mapping with `virtual:` and `target:`" {
        /// The onion service port clients connect to.
        virtual_port: u16 = "virtual",
        /// Where each backend's tor forwards connections.
        target: String = "target",
    }
}

raw_mapping! {
    /// One `authorized-clients:` entry.
    RawClient, "an authorized client: a mapping with `name:` and `key:`" {
        /// The operator's name for the client.
        name: String = "name",
        /// Its public key, `descriptor:x25519:<base32>`.
        key: String = "key",
    }
}

raw_mapping! {
    /// One `instances:` entry.
    RawInstance, "an instance: a mapping with `address:` and `name:`" {
        /// The backend's onion address.
        address: String = "address",
        /// A name for logs and status.
        name: String = "name",
        /// Ours: taken out of every descriptor on purpose.
        drain: bool = "drain",
        /// Ours: this instance's differences from the service's `health-check:`.
        health_check: RawHealthCheck = "health-check",
    }
}

/// A duration as written: humantime text (`30s`, `2m`) or a whole number of seconds. Kept
/// as written, so that a bad one is reported with the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawDuration(pub(super) String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a duration.
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s` or `2m`, or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.trim().to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(format!("{v}s")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(format!("{v}s")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A mapping key as text (YAML allows any value as a key; a non-scalar one is named as such
/// and skipped unread).
struct KeyName(String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a key.
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<KeyName, E> {
                Ok(KeyName("~".to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyName, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyName("(a list used as a key)".to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyName, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyName("(a mapping used as a key)".to_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// onionbalance.yaml(5), which must document every key the loader knows.
    const PAGE: &str = include_str!("../../man/onionbalance.yaml.5");

    /// Each mapping's keys and the heading of the page's subsection that documents them.
    const MAPPINGS: &[(&[&str], &str)] = &[
        (RawConfig::KEYS, "Keys of the top level"),
        (RawService::KEYS, "Keys of each services entry"),
        (RawInstance::KEYS, "Keys of each instances entry"),
        (RawBackendPort::KEYS, "Keys of backend-port"),
        (RawHealthCheck::KEYS, "Keys of health-check"),
        (RawClient::KEYS, "Keys of each authorized-clients entry"),
    ];

    /// The keys the page documents under `heading`: the `.B` tag line of each `.TP` item
    /// between that `.SS` heading and the next section or subsection, hyphens unescaped.
    fn documented(heading: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut inside = false;
        let mut after_tp = false;
        for line in PAGE.lines() {
            let line = line.replace("\\-", "-");
            if let Some(title) = line.strip_prefix(".SS ") {
                inside = title.trim_matches('"') == heading;
            } else if line.starts_with(".SH ") {
                inside = false;
            } else if inside && after_tp {
                if let Some(key) = line.strip_prefix(".B ") {
                    keys.push(key.trim().to_owned());
                }
            }
            after_tp = line == ".TP";
        }
        keys
    }

    /// Adding a key to the loader without documenting it in onionbalance.yaml(5) fails
    /// here; so does documenting a key the loader does not know.
    #[test]
    fn man_page_documents_every_key() {
        // Every mapping the loader declares is listed above.
        assert_eq!(
            include_str!("raw.rs").matches("\nraw_mapping! {").count(),
            MAPPINGS.len(),
            "a raw_mapping! without a subsection of the page: add it to MAPPINGS"
        );
        for (keys, heading) in MAPPINGS {
            let on_page = documented(heading);
            let mut missing: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| !on_page.iter().any(|d| d == k))
                .collect();
            missing.sort_unstable();
            assert!(
                missing.is_empty(),
                "man/onionbalance.yaml.5 does not document {missing:?} under .SS \"{heading}\""
            );
            let unknown: Vec<&String> = on_page
                .iter()
                .filter(|d| !keys.contains(&d.as_str()))
                .collect();
            assert!(
                unknown.is_empty(),
                "man/onionbalance.yaml.5 documents {unknown:?} under .SS \"{heading}\", which the loader does not know"
            );
        }
    }
}
