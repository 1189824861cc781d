//! What loading rules files found wrong: per-item problems with file, line, item and reason.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where something is defined: a file (or the name given to [`super::RuleSet::load_str`]) and
/// a line (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, as given.
    pub file: Arc<str>,
    /// The line, from 1; 0 when unknown.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Loaded anyway, but probably not what was meant (deprecated syntax, unknown key).
    Warning,
    /// Something was not loaded: a rule skipped, a list or macro not defined, a file unread.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What kind of item a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// The file as a whole (unreadable, not YAML, not a list of items).
    File,
    /// A rule.
    Rule,
    /// A macro.
    Macro,
    /// A list.
    List,
    /// Any other top-level item (`required_engine_version`, an unknown item).
    Item,
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::File => "file",
            ItemKind::Rule => "rule",
            ItemKind::Macro => "macro",
            ItemKind::List => "list",
            ItemKind::Item => "item",
        })
    }
}

/// One problem found while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// Where.
    pub location: Location,
    /// The kind of item.
    pub kind: ItemKind,
    /// The item's name, when it has one.
    pub name: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    /// `rules.yaml:12: error: rule 'Shell in container': unknown field 'proc.nam' at column 5`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.severity, self.kind)?;
        if let Some(name) = &self.name {
            write!(f, " '{name}'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The result of loading rules files: every problem, and how many rules loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub(super) problems: Vec<Problem>,
    pub(super) rules_total: usize,
    pub(super) rules_loaded: usize,
    pub(super) rules_disabled: usize,
    pub(super) unreadable: Vec<PathBuf>,
}

impl LoadReport {
    /// Every problem, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    /// Whether there is no error (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.errors().next().is_none()
    }

    /// Distinct rules defined across the files.
    pub fn rules_total(&self) -> usize {
        self.rules_total
    }

    /// Rules that compiled and are in the rule set (enabled or not).
    pub fn rules_loaded(&self) -> usize {
        self.rules_loaded
    }

    /// Rules that did not load.
    pub fn rules_skipped(&self) -> usize {
        self.rules_total - self.rules_loaded
    }

    /// Loaded rules that are disabled (`enabled: false`).
    pub fn rules_disabled(&self) -> usize {
        self.rules_disabled
    }

    /// Files that could not be read at all.
    pub fn unreadable_files(&self) -> &[PathBuf] {
        &self.unreadable
    }

    /// `loaded N of M rules`, with `(K disabled)` when some are.
    pub fn summary(&self) -> String {
        let mut s = format!("loaded {} of {} rules", self.rules_loaded, self.rules_total);
        if self.rules_disabled > 0 {
            s.push_str(&format!(" ({} disabled)", self.rules_disabled));
        }
        s
    }

    pub(super) fn push(
        &mut self,
        severity: Severity,
        location: Location,
        kind: ItemKind,
        name: Option<&str>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity,
            location,
            kind,
            name: name.map(str::to_owned),
            reason: reason.into(),
        });
    }
}

impl fmt::Display for LoadReport {
    /// One line per problem, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(f, "{}", self.summary())
    }
}
