//! The machinery that lets each setting be declared once: the [`settings!`] macro turns one
//! struct declaration (fields with doc comments and default values) into the serde struct, its
//! `Default` and a table of its keys with their docs, from which `habitd default-config` and
//! the `--help` texts are written; and the duration format of the configuration.

/// A key of one section of the configuration and its documentation (the field's doc comment).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in TOML (the field name).
    pub name: &'static str,
    /// The doc comment, one line per `///` line, each starting with the space after `///`.
    pub doc: &'static str,
}

impl Key {
    /// The doc comment as one paragraph (a `--help` text).
    pub fn paragraph(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Declares one section of the configuration:
///
/// ```ignore
/// settings! {
///     /// What the section is for.
///     pub struct Section {
///         /// What the key does (becomes the default-config comment and the flag's help).
///         #[serde(with = "duration")]
///         pub key: Duration = Duration::from_secs(60),
///     }
/// }
/// ```
///
/// gives the struct (serde, `deny_unknown_fields`, a file's missing keys take the default),
/// `impl Default` from the values after `=`, and `Section::KEYS`. Every field needs a doc
/// comment: an undocumented setting does not compile.
macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde($($serde:tt)*)])*
                pub $field:ident: $ty:ty = $default:expr,
            )+
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])*
                pub $field: $ty,
            )+
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)+ }
            }
        }

        impl $name {
            /// This section's keys and their docs, in declaration order.
            pub const KEYS: &'static [$crate::config::declare::Key] = &[$(
                $crate::config::declare::Key {
                    name: stringify!($field),
                    doc: concat!($($doc, "\n"),+),
                },
            )+];
        }
    };
}

pub(crate) use settings;

/// Durations are written as "10m", "30s", "24h", "500ms" (humantime when read).
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write it like \"30s\", \"10m\" or \"24h\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// `d` in its largest whole unit (h, m, s, ms; ns otherwise), as the defaults are written.
    pub fn format(d: Duration) -> String {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        if nanos != 0 {
            return if nanos % 1_000_000 == 0 {
                format!("{}ms", d.as_millis())
            } else {
                format!("{}ns", d.as_nanos())
            };
        }
        match secs {
            0 => "0s".into(),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }

    /// A clap value parser for duration flags: checks the text and keeps it, so that the
    /// flag's value reaches the configuration in the file's format.
    pub fn flag(s: &str) -> Result<String, humantime::DurationError> {
        humantime::parse_duration(s).map(|_| s.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::duration::format;
    use std::time::Duration;

    #[test]
    fn durations_are_written_in_their_largest_whole_unit_and_read_back() {
        for (d, text) in [
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d);
        }
    }
}
