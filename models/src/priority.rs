//! Alert priorities, as Falco names them.
//!
//! Alert routers built for Falco switch on `priority`, so habitd uses Falco's eight levels and
//! spells them as Falco's JSON output does (`"Warning"`, `"Informational"`) via
//! [`Priority::falco_name`] and `Display`. In configuration and rule files (serde), the names are
//! lower case (`warning`), and Falco's accepted aliases (`info`, `warn`, `emerg`, `crit`, `err`)
//! parse too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Falco priority. Ordered by severity: `Debug < Informational < … < Emergency`, so
/// `priority >= Priority::Warning` reads as "at least a warning".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Debugging detail.
    Debug,
    /// Informational.
    #[serde(alias = "info")]
    Informational,
    /// Normal but significant.
    Notice,
    /// Warning.
    #[serde(alias = "warn")]
    Warning,
    /// Error.
    #[serde(alias = "err")]
    Error,
    /// Critical.
    #[serde(alias = "crit")]
    Critical,
    /// Action must be taken immediately.
    Alert,
    /// The system is unusable.
    #[serde(alias = "emerg")]
    Emergency,
}

impl Priority {
    /// Every priority, least severe first.
    pub const ALL: [Priority; 8] = [
        Priority::Debug,
        Priority::Informational,
        Priority::Notice,
        Priority::Warning,
        Priority::Error,
        Priority::Critical,
        Priority::Alert,
        Priority::Emergency,
    ];

    /// The name in Falco's alert output: `Emergency`, `Alert`, `Critical`, `Error`, `Warning`,
    /// `Notice`, `Informational`, `Debug`.
    pub const fn falco_name(self) -> &'static str {
        match self {
            Priority::Debug => "Debug",
            Priority::Informational => "Informational",
            Priority::Notice => "Notice",
            Priority::Warning => "Warning",
            Priority::Error => "Error",
            Priority::Critical => "Critical",
            Priority::Alert => "Alert",
            Priority::Emergency => "Emergency",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.falco_name())
    }
}

/// A string that is not a priority name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown priority {0:?} (expected one of emergency, alert, critical, error, warning, notice, informational, debug)"
)]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// Case-insensitive, accepting Falco's aliases.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let priority = match s.to_ascii_lowercase().as_str() {
            "debug" => Priority::Debug,
            "informational" | "info" => Priority::Informational,
            "notice" => Priority::Notice,
            "warning" | "warn" => Priority::Warning,
            "error" | "err" => Priority::Error,
            "critical" | "crit" => Priority::Critical,
            "alert" => Priority::Alert,
            "emergency" | "emerg" => Priority::Emergency,
            _ => return Err(UnknownPriority(s.to_owned())),
        };
        Ok(priority)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_lowercase_and_output_names_are_falcos() {
        assert_eq!(
            serde_json::to_string(&Priority::Warning).unwrap(),
            "\"warning\""
        );
        assert_eq!(Priority::Warning.to_string(), "Warning");
        assert_eq!(Priority::Informational.falco_name(), "Informational");
        for p in Priority::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Priority>(&json).unwrap(), p);
            assert_eq!(p.falco_name().parse::<Priority>().unwrap(), p);
        }
        assert_eq!(
            serde_json::from_str::<Priority>("\"info\"").unwrap(),
            Priority::Informational
        );
        assert_eq!("WARN".parse::<Priority>().unwrap(), Priority::Warning);
        assert!("loud".parse::<Priority>().is_err());
    }

    #[test]
    fn ordered_by_severity() {
        assert!(Priority::Emergency > Priority::Critical);
        assert!(Priority::Warning > Priority::Notice);
        assert!(Priority::Debug < Priority::Informational);
    }
}
