//! The declarations as text: the `habitd default-config` file (every key with its doc comment
//! and default value) and the documentation of a key by its dotted path (for `--help`).

use std::fmt::Write;

use anyhow::{Context, Result};

use super::declare::Key;
use super::{Config, Host, Learning, ProbeSettings, Response, Runtime};

/// The top level and each table of the configuration, with its keys.
const SECTIONS: &[(&str, &[Key])] = &[
    ("", Config::KEYS),
    ("learning", Learning::KEYS),
    ("probes", ProbeSettings::KEYS),
    ("runtime", Runtime::KEYS),
    ("host", Host::KEYS),
    ("response", Response::KEYS),
];

const HEADER: &str = "\
# habitd's default configuration (`habitd default-config`). `habitd run --config FILE` reads a
# file of this shape: keys it leaves out keep these values, and the flags of `habitd run`
# (`habitd run --help`) override both.

";

/// The key at `path` ("listen", "learning.min"), if there is one.
pub fn key(path: &str) -> Option<&'static Key> {
    let (section, name) = path.rsplit_once('.').unwrap_or(("", path));
    let (_, keys) = SECTIONS.iter().find(|(s, _)| *s == section)?;
    keys.iter().find(|k| k.name == name)
}

/// The default value of the key at `path`, as TOML.
pub fn default_value(path: &str) -> Option<toml::Value> {
    let mut value = toml::Value::Table(toml::Table::try_from(Config::default()).ok()?);
    for part in path.split('.') {
        value = value.as_table_mut()?.remove(part)?;
    }
    Some(value)
}

/// The default configuration as a documented TOML file: each key's doc comment, then the key
/// with its default value.
pub fn default_toml() -> Result<String> {
    let defaults = toml::Table::try_from(Config::default())?;
    let mut out = String::from(HEADER);
    for (section, keys) in SECTIONS {
        let table = if section.is_empty() {
            &defaults
        } else {
            out.push('\n');
            if let Some(k) = key(section) {
                comment(&mut out, k);
            }
            let _ = writeln!(out, "[{section}]");
            defaults
                .get(*section)
                .and_then(toml::Value::as_table)
                .with_context(|| format!("the defaults have no [{section}] table"))?
        };
        for k in keys.iter() {
            let value = table
                .get(k.name)
                .with_context(|| format!("the defaults have no key {}", k.name))?;
            if !value.is_table() {
                comment(&mut out, k);
                let _ = writeln!(out, "{} = {value}", k.name);
            }
        }
    }
    Ok(out)
}

fn comment(out: &mut String, key: &Key) {
    for line in key.doc.lines() {
        let _ = writeln!(out, "#{line}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_toml_that_equals_the_defaults() {
        let text = default_toml().unwrap();
        // Every key is written (not only loadable because missing keys default).
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table, toml::Table::try_from(Config::default()).unwrap());
        let loaded: Config = toml::from_str(&text).unwrap();
        assert_eq!(loaded, Config::default());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("default.toml");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(
            Config::load(Some(&p), toml::Table::new()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_key_of_the_default_config_is_preceded_by_its_doc_comment() {
        let text = default_toml().unwrap();
        for (section, keys) in SECTIONS {
            let start = match *section {
                "" => 0,
                s => text.find(&format!("\n[{s}]\n")).unwrap(),
            };
            for k in keys.iter() {
                if default_value(&path(section, k)).unwrap().is_table() {
                    continue;
                }
                let mut expected = String::new();
                comment(&mut expected, k);
                expected.push_str(&format!("{} = ", k.name));
                assert!(
                    text[start..].contains(&format!("\n{expected}")),
                    "{} is not documented in the default config:\n{text}",
                    path(section, k)
                );
                assert!(!k.paragraph().is_empty());
            }
        }
    }

    #[test]
    fn keys_are_found_by_their_dotted_path() {
        assert_eq!(key("listen").unwrap().name, "listen");
        assert_eq!(key("learning.checkpoint").unwrap().name, "checkpoint");
        assert!(key("learning.checkpoint_every").is_none());
        assert!(key("nope.min").is_none());
        assert_eq!(default_value("learning.max").unwrap().as_str(), Some("24h"));
    }

    fn path(section: &str, k: &Key) -> String {
        match section {
            "" => k.name.to_string(),
            s => format!("{s}.{}", k.name),
        }
    }
}
