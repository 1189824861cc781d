//! Reading Falco rules files: YAML items into lists, macros and rules, with Falco's append and
//! override semantics, then compiling them into a [`RuleSet`].
//!
//! Loading never stops at the first problem. A broken item is reported (file, line, item,
//! reason) and left out; everything else loads. Items from all files share one namespace, in
//! load order, as in Falco: a later file can append to a list of an earlier one, override a
//! macro, or disable a rule.
//!
//! Conditions stay text until every file is read (an appended condition is concatenated
//! with a space, as Falco does), because macros and lists may be defined or changed after the
//! rules that use them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use saphyr::{MarkedYaml, ScalarStyle, ScanError, YamlData, YamlLoader};
use saphyr_parser::Parser;

use super::compile::{self, CompileError, MacroDef, Node, Scope};
use super::condition;
use super::exceptions::{ExValue, ExceptionInfo, OneOrMany, exception_expr};
use super::field::FieldError;
use super::output::OutputTemplate;
use super::report::{ItemKind, LoadReport, Location, Severity};
use super::{Rule, RuleSet};
use crate::priority::Priority;

/// The only event source habitd evaluates; rules for other sources (Falco plugins such as
/// `k8s_audit`) are reported and skipped.
pub const SYSCALL_SOURCE: &str = "syscall";

/// A file that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("YAML syntax error at line {line} column {column}: {info}")]
    Yaml {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What the YAML parser says.
        info: String,
    },
    /// The document is not a list of items.
    #[error("a rules file must be a YAML list of items (- rule:, - macro:, - list:)")]
    NotAList,
}

impl From<ScanError> for LoadError {
    fn from(e: ScanError) -> Self {
        LoadError::Yaml {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            info: e.info().to_owned(),
        }
    }
}

/// Condition text that may have been assembled from several items (appends); each part
/// remembers where it came from so that an error can name the right line.
#[derive(Debug, Clone)]
struct CondText {
    text: String,
    /// Where the first part is defined.
    first: Location,
    /// Appended parts: (byte offset where the part starts, where it is defined).
    appended: Vec<(usize, Location)>,
}

impl CondText {
    fn new(text: &str, location: Location) -> CondText {
        CondText {
            text: text.to_owned(),
            first: location,
            appended: Vec::new(),
        }
    }

    fn append(&mut self, text: &str, location: Location) {
        self.text.push(' ');
        self.appended.push((self.text.len(), location));
        self.text.push_str(text);
    }

    /// Where the text at `offset` was defined.
    fn location_of(&self, offset: usize) -> &Location {
        self.appended
            .iter()
            .rev()
            .find(|(start, _)| *start <= offset)
            .map_or(&self.first, |(_, loc)| loc)
    }
}

#[derive(Debug, Clone)]
struct ListInfo {
    items: Vec<String>,
    /// Falco's index: position of the first definition.
    index: usize,
    /// Falco's visibility: position of the last definition or append.
    visibility: usize,
}

#[derive(Debug, Clone)]
struct MacroInfo {
    cond: CondText,
    location: Location,
    index: usize,
}

#[derive(Debug, Clone)]
struct RuleInfo {
    name: String,
    desc: String,
    cond: CondText,
    output: String,
    output_location: Location,
    priority: Priority,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<ExceptionInfo>,
    source: String,
    warn_evttypes: bool,
    skip_if_unknown_filter: bool,
    location: Location,
    index: usize,
}

/// The parts of a rule an append or a replace changes.
#[derive(Debug, Default)]
struct RuleUpdate {
    cond: Option<(String, Location)>,
    output: Option<(String, Location)>,
    desc: Option<String>,
    tags: Option<Vec<String>>,
    exceptions: Option<Vec<ExceptionInfo>>,
    priority: Option<Priority>,
    enabled: Option<bool>,
    warn_evttypes: Option<bool>,
    skip_if_unknown_filter: Option<bool>,
}

/// Loads rules files into a [`RuleSet`]. Add files or texts in order, then [`finish`].
///
/// [`finish`]: RuleLoader::finish
#[derive(Debug, Default)]
pub struct RuleLoader {
    lists: HashMap<String, ListInfo>,
    macros: HashMap<String, MacroInfo>,
    rules: HashMap<String, RuleInfo>,
    /// Rule names whose definition failed to read, so that they count as rules not loaded.
    failed_rules: HashSet<String>,
    /// Falco's running item counter (orders definitions and appends).
    counter: usize,
    /// Files in load order, to sort problems by file then line.
    files: Vec<Arc<str>>,
    report: LoadReport,
}

/// A problem found while reading one item: its line and reason.
struct ItemError {
    line: usize,
    reason: String,
}

fn err<T>(line: usize, reason: impl Into<String>) -> Result<T, ItemError> {
    Err(ItemError {
        line,
        reason: reason.into(),
    })
}

// ---- YAML helpers ----

/// Parses YAML documents. A loader-level error (a duplicated key) does not lose the file: it
/// is returned beside documents loaded again with duplicates allowed (the last value wins), so
/// that it is reported and the rest of the file still loads. A syntax error is fatal.
fn parse_yaml(text: &str) -> Result<(Vec<MarkedYaml<'_>>, Option<ScanError>), ScanError> {
    let load =
        |allow_duplicates: bool| -> Result<(Vec<MarkedYaml<'_>>, Option<ScanError>), ScanError> {
            let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
            // Keep scalars exactly as written: Falco reads list items and values as strings.
            loader.early_parse(false);
            loader.allow_duplicate_keys(allow_duplicates);
            let mut parser = Parser::new_from_str(text);
            parser.load(&mut loader, true)?;
            let error = loader.error().cloned();
            Ok((loader.into_documents(), error))
        };
    match load(false)? {
        (docs, None) => Ok((docs, None)),
        (_, Some(first)) => match load(true)? {
            (docs, None) => Ok((docs, Some(first))),
            (_, Some(_)) => Err(first),
        },
    }
}

fn line_of(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line()
}

fn scalar<'a>(node: &'a MarkedYaml<'_>) -> Option<&'a str> {
    match &node.data {
        YamlData::Representation(s, _, _) => Some(s.as_ref()),
        YamlData::Tagged(_, inner) => scalar(inner),
        _ => None,
    }
}

fn is_null(node: &MarkedYaml<'_>) -> bool {
    match &node.data {
        YamlData::Representation(s, ScalarStyle::Plain, _) => {
            matches!(s.as_ref(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

fn sequence<'a, 'y>(node: &'a MarkedYaml<'y>) -> Option<&'a [MarkedYaml<'y>]> {
    match &node.data {
        YamlData::Sequence(items) => Some(items),
        YamlData::Tagged(_, inner) => sequence(inner),
        _ => None,
    }
}

/// The entries of a mapping whose keys are scalars, in file order.
fn mapping<'a, 'y>(node: &'a MarkedYaml<'y>) -> Option<Vec<(&'a str, &'a MarkedYaml<'y>)>> {
    match &node.data {
        YamlData::Mapping(map) => Some(
            map.iter()
                .filter_map(|(k, v)| scalar(k).map(|k| (k, v)))
                .collect(),
        ),
        YamlData::Tagged(_, inner) => mapping(inner),
        _ => None,
    }
}

fn as_bool(node: &MarkedYaml<'_>, key: &str) -> Result<bool, ItemError> {
    match scalar(node).map(str::to_ascii_lowercase).as_deref() {
        Some("true" | "yes" | "on") => Ok(true),
        Some("false" | "no" | "off") => Ok(false),
        _ => err(line_of(node), format!("'{key}' must be true or false")),
    }
}

fn as_string(node: &MarkedYaml<'_>, key: &str) -> Result<String, ItemError> {
    if is_null(node) {
        return err(line_of(node), format!("'{key}' is empty"));
    }
    scalar(node).map(str::to_owned).ok_or_else(|| ItemError {
        line: line_of(node),
        reason: format!("'{key}' must be a string"),
    })
}

fn as_strings(node: &MarkedYaml<'_>, key: &str) -> Result<Vec<String>, ItemError> {
    if is_null(node) {
        return Ok(Vec::new());
    }
    let Some(items) = sequence(node) else {
        return err(line_of(node), format!("'{key}' must be a list of strings"));
    };
    items
        .iter()
        .map(|i| {
            scalar(i).map(str::to_owned).ok_or_else(|| ItemError {
                line: line_of(i),
                reason: format!("'{key}' must be a list of strings, not nested lists or mappings"),
            })
        })
        .collect()
}

fn one_or_many(node: &MarkedYaml<'_>, key: &str) -> Result<OneOrMany, ItemError> {
    match scalar(node) {
        Some(s) => Ok(OneOrMany::One(s.to_owned())),
        None => as_strings(node, key).map(OneOrMany::Many),
    }
}

fn ex_value(node: &MarkedYaml<'_>, depth: usize) -> Result<ExValue, ItemError> {
    if let Some(s) = scalar(node) {
        return Ok(ExValue::Item(s.to_owned()));
    }
    match sequence(node) {
        Some(items) if depth < 2 => Ok(ExValue::List(
            items
                .iter()
                .map(|i| ex_value(i, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        _ => err(
            line_of(node),
            "exception values must be strings or lists of strings",
        ),
    }
}

/// The keys a rule item may have.
const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "tags",
    "enabled",
    "exceptions",
    "source",
    "append",
    "override",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
];
const APPENDABLE: &[&str] = &["condition", "output", "desc", "tags", "exceptions"];
const REPLACEABLE: &[&str] = &[
    "condition",
    "output",
    "desc",
    "priority",
    "tags",
    "exceptions",
    "enabled",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
];

struct Item<'a, 'y> {
    entries: Vec<(&'a str, &'a MarkedYaml<'y>)>,
    line: usize,
}

impl<'a, 'y> Item<'a, 'y> {
    fn get(&self, key: &str) -> Option<&'a MarkedYaml<'y>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl RuleLoader {
    /// An empty loader.
    pub fn new() -> RuleLoader {
        RuleLoader::default()
    }

    /// Reads a rules file. Returns false (and reports it) if the file cannot be read.
    pub fn add_file(&mut self, path: &Path) -> bool {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.add_str(&path.display().to_string(), &text);
                true
            }
            Err(source) => {
                let error = LoadError::Read {
                    path: path.display().to_string(),
                    source,
                };
                let file = self.file(&path.display().to_string());
                self.report.push(
                    Severity::Error,
                    Location { file, line: 0 },
                    ItemKind::File,
                    None,
                    error.to_string(),
                );
                self.report.unreadable.push(path.to_path_buf());
                false
            }
        }
    }

    /// Reads rules from a text; `name` stands for the file in locations.
    pub fn add_str(&mut self, name: &str, text: &str) {
        let file = self.file(name);
        let docs = match parse_yaml(text) {
            Ok((docs, duplicate)) => {
                if let Some(e) = duplicate {
                    self.report.push(
                        Severity::Error,
                        Location {
                            file: file.clone(),
                            line: e.marker().line(),
                        },
                        ItemKind::Item,
                        None,
                        format!(
                            "{} at column {} (the last value is used)",
                            e.info(),
                            e.marker().col() + 1
                        ),
                    );
                }
                docs
            }
            Err(e) => {
                let e = LoadError::from(e);
                let line = match &e {
                    LoadError::Yaml { line, .. } => *line,
                    _ => 0,
                };
                self.report.push(
                    Severity::Error,
                    Location { file, line },
                    ItemKind::File,
                    None,
                    e.to_string(),
                );
                return;
            }
        };
        for doc in &docs {
            if is_null(doc) || matches!(doc.data, YamlData::BadValue) {
                continue;
            }
            let Some(items) = sequence(doc) else {
                self.report.push(
                    Severity::Error,
                    Location {
                        file: file.clone(),
                        line: line_of(doc),
                    },
                    ItemKind::File,
                    None,
                    LoadError::NotAList.to_string(),
                );
                continue;
            };
            for node in items {
                self.read_item(&file, node);
            }
        }
    }

    fn file(&mut self, name: &str) -> Arc<str> {
        if let Some(f) = self.files.iter().find(|f| f.as_ref() == name) {
            return f.clone();
        }
        let f: Arc<str> = name.into();
        self.files.push(f.clone());
        f
    }

    fn problem(
        &mut self,
        severity: Severity,
        file: &Arc<str>,
        line: usize,
        kind: ItemKind,
        name: Option<&str>,
        reason: impl Into<String>,
    ) {
        let location = Location {
            file: file.clone(),
            line,
        };
        self.report.push(severity, location, kind, name, reason);
    }

    fn read_item(&mut self, file: &Arc<str>, node: &MarkedYaml<'_>) {
        let line = line_of(node);
        let Some(entries) = mapping(node) else {
            self.problem(
                Severity::Error,
                file,
                line,
                ItemKind::Item,
                None,
                "each item must be a mapping (- rule: ..., - macro: ..., - list: ...)",
            );
            return;
        };
        let item = Item { entries, line };
        let location = Location {
            file: file.clone(),
            line,
        };
        let (kind, name, result) = if let Some(n) = item.get("rule") {
            let name = scalar(n).unwrap_or("").to_owned();
            let result = self.read_rule(&name, &item, &location);
            if result.is_err() && !name.is_empty() && !self.rules.contains_key(&name) {
                // A definition that failed still counts as a rule that did not load. An
                // append to a missing rule does not define one.
                let is_update = item.has("append") || item.has("override");
                if !is_update {
                    self.failed_rules.insert(name.clone());
                }
            }
            (ItemKind::Rule, Some(name), result)
        } else if let Some(n) = item.get("macro") {
            let name = scalar(n).unwrap_or("").to_owned();
            let result = self.read_macro(&name, &item, &location);
            (ItemKind::Macro, Some(name), result)
        } else if let Some(n) = item.get("list") {
            let name = scalar(n).unwrap_or("").to_owned();
            let result = self.read_list(&name, &item, &location);
            (ItemKind::List, Some(name), result)
        } else if item.has("required_engine_version") || item.has("required_plugin_versions") {
            // Accepted and ignored: habitd is its own engine and loads no Falco plugins.
            (ItemKind::Item, None, Ok(()))
        } else {
            let keys: Vec<&str> = item.entries.iter().map(|(k, _)| *k).collect();
            (
                ItemKind::Item,
                None,
                err(
                    line,
                    format!(
                        "unknown item with keys [{}]: expected rule, macro, list, \
                         required_engine_version or required_plugin_versions",
                        keys.join(", ")
                    ),
                ),
            )
        };
        if let Err(e) = result {
            let name = name.filter(|n| !n.is_empty());
            self.problem(
                Severity::Error,
                file,
                e.line,
                kind,
                name.as_deref(),
                e.reason,
            );
        }
    }

    fn next_index(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// Reads `append: true` and `override: {key: append|replace}`; returns the append flag and
    /// the overrides.
    fn read_overrides(
        &mut self,
        item: &Item<'_, '_>,
        location: &Location,
        kind: ItemKind,
        name: &str,
        appendable: &[&str],
        replaceable: &[&str],
    ) -> Result<(bool, Vec<(String, bool)>), ItemError> {
        let append = match item.get("append") {
            Some(v) => as_bool(v, "append")?,
            None => false,
        };
        if append {
            self.problem(
                Severity::Warning,
                &location.file,
                location.line,
                kind,
                Some(name),
                "'append: true' is deprecated: use 'override: {<key>: append}'",
            );
        }
        let mut overrides = Vec::new();
        if let Some(node) = item.get("override") {
            let Some(entries) = mapping(node) else {
                return err(
                    line_of(node),
                    "'override' must be a mapping of keys to append or replace",
                );
            };
            for (key, mode) in entries {
                let is_append = match scalar(mode) {
                    Some("append") => true,
                    Some("replace") => false,
                    _ => {
                        return err(
                            line_of(mode),
                            format!("override of '{key}' must be 'append' or 'replace'"),
                        );
                    }
                };
                let allowed = if is_append { appendable } else { replaceable };
                if !allowed.contains(&key) {
                    return err(
                        line_of(mode),
                        format!(
                            "'{key}' cannot be overridden with '{}' (allowed: {})",
                            if is_append { "append" } else { "replace" },
                            allowed.join(", ")
                        ),
                    );
                }
                if !item.has(key) {
                    return err(
                        line_of(mode),
                        format!("an override for '{key}' is given but '{key}' is not defined"),
                    );
                }
                overrides.push((key.to_owned(), is_append));
            }
        }
        if append && !overrides.is_empty() {
            return err(item.line, "'append' and 'override' cannot be used together");
        }
        Ok((append, overrides))
    }

    fn read_list(
        &mut self,
        name: &str,
        item: &Item<'_, '_>,
        location: &Location,
    ) -> Result<(), ItemError> {
        let valid_name = !name.is_empty()
            && !name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'' | '=' | ','));
        if !valid_name {
            return err(item.line, "a list name must be a non-empty bare word");
        }
        let (append, overrides) =
            self.read_overrides(item, location, ItemKind::List, name, &["items"], &["items"])?;
        let items = match item.get("items") {
            Some(node) => as_strings(node, "items")?,
            None => return err(item.line, "a list needs 'items'"),
        };
        let append = append || overrides.iter().any(|(_, a)| *a);
        let index = self.next_index();
        if append {
            let Some(prev) = self.lists.get_mut(name) else {
                return err(item.line, "appends to a list that is not defined earlier");
            };
            prev.items.extend(items);
            prev.visibility = index;
        } else {
            let first = self.lists.get(name).map_or(index, |p| p.index);
            self.lists.insert(
                name.to_owned(),
                ListInfo {
                    items,
                    index: first,
                    visibility: index,
                },
            );
        }
        self.warn_unknown_keys(
            item,
            location,
            ItemKind::List,
            name,
            &["list", "items", "append", "override"],
        );
        Ok(())
    }

    fn read_macro(
        &mut self,
        name: &str,
        item: &Item<'_, '_>,
        location: &Location,
    ) -> Result<(), ItemError> {
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return err(
                item.line,
                "a macro name must be a letter followed by letters, digits or '_'",
            );
        }
        let (append, overrides) = self.read_overrides(
            item,
            location,
            ItemKind::Macro,
            name,
            &["condition"],
            &["condition"],
        )?;
        let Some(cond_node) = item.get("condition") else {
            return err(item.line, "a macro needs a 'condition'");
        };
        let cond = as_string(cond_node, "condition")?;
        let cond_location = Location {
            file: location.file.clone(),
            line: line_of(cond_node),
        };
        let append = append || overrides.iter().any(|(_, a)| *a);
        let index = self.next_index();
        if append {
            let Some(prev) = self.macros.get_mut(name) else {
                return err(item.line, "appends to a macro that is not defined earlier");
            };
            prev.cond.append(&cond, cond_location);
        } else {
            let first = self.macros.get(name).map_or(index, |p| p.index);
            self.macros.insert(
                name.to_owned(),
                MacroInfo {
                    cond: CondText::new(&cond, cond_location),
                    location: location.clone(),
                    index: first,
                },
            );
        }
        self.warn_unknown_keys(
            item,
            location,
            ItemKind::Macro,
            name,
            &["macro", "condition", "append", "override", "source"],
        );
        Ok(())
    }

    fn warn_unknown_keys(
        &mut self,
        item: &Item<'_, '_>,
        location: &Location,
        kind: ItemKind,
        name: &str,
        known: &[&str],
    ) {
        let unknown: Vec<(String, usize)> = item
            .entries
            .iter()
            .filter(|(k, _)| !known.contains(k))
            .map(|(k, v)| ((*k).to_owned(), line_of(v)))
            .collect();
        for (key, line) in unknown {
            self.problem(
                Severity::Warning,
                &location.file,
                line,
                kind,
                Some(name),
                format!("unknown key '{key}' ignored"),
            );
        }
    }

    fn read_exceptions(
        node: &MarkedYaml<'_>,
        file: &Arc<str>,
        updating: bool,
    ) -> Result<Vec<ExceptionInfo>, ItemError> {
        if is_null(node) {
            return Ok(Vec::new());
        }
        let Some(items) = sequence(node) else {
            return err(line_of(node), "'exceptions' must be a list");
        };
        let mut out: Vec<ExceptionInfo> = Vec::new();
        for ex in items {
            let line = line_of(ex);
            let Some(entries) = mapping(ex) else {
                return err(
                    line,
                    "each exception must be a mapping with name, fields, comps, values",
                );
            };
            let ex_item = Item { entries, line };
            let name = match ex_item.get("name") {
                Some(n) => as_string(n, "name")?,
                None => return err(line, "an exception needs a 'name'"),
            };
            if out.iter().any(|e| e.name == name) {
                return err(line, format!("exception name '{name}' is used twice"));
            }
            let fields = match ex_item.get("fields") {
                Some(f) => Some(one_or_many(f, "fields")?),
                None if updating => None,
                None => return err(line, format!("exception '{name}' needs 'fields'")),
            };
            let comps = ex_item
                .get("comps")
                .map(|c| one_or_many(c, "comps"))
                .transpose()?;
            let values = match ex_item.get("values") {
                Some(v) if is_null(v) => Vec::new(),
                Some(v) => match sequence(v) {
                    Some(vals) => vals
                        .iter()
                        .map(|v| ex_value(v, 0))
                        .collect::<Result<_, _>>()?,
                    None => return err(line_of(v), "exception 'values' must be a list"),
                },
                None => Vec::new(),
            };
            out.push(ExceptionInfo {
                name,
                fields,
                comps,
                values,
                location: Location {
                    file: file.clone(),
                    line,
                },
            });
        }
        Ok(out)
    }

    fn read_update(
        item: &Item<'_, '_>,
        location: &Location,
        keys: &[&str],
    ) -> Result<RuleUpdate, ItemError> {
        let mut u = RuleUpdate::default();
        for key in keys {
            let Some(node) = item.get(key) else { continue };
            let at = Location {
                file: location.file.clone(),
                line: line_of(node),
            };
            match *key {
                "condition" => u.cond = Some((as_string(node, key)?, at)),
                "output" => u.output = Some((as_string(node, key)?, at)),
                "desc" => u.desc = Some(as_string(node, key)?),
                "tags" => u.tags = Some(as_strings(node, key)?),
                "exceptions" => {
                    u.exceptions = Some(Self::read_exceptions(node, &location.file, true)?);
                }
                "priority" => u.priority = Some(read_priority(node)?),
                "enabled" => u.enabled = Some(as_bool(node, key)?),
                "warn_evttypes" => u.warn_evttypes = Some(as_bool(node, key)?),
                "skip-if-unknown-filter" => u.skip_if_unknown_filter = Some(as_bool(node, key)?),
                _ => {}
            }
        }
        Ok(u)
    }

    fn read_rule(
        &mut self,
        name: &str,
        item: &Item<'_, '_>,
        location: &Location,
    ) -> Result<(), ItemError> {
        if name.is_empty() {
            return err(item.line, "a rule name must be a non-empty string");
        }
        let (append, overrides) = self.read_overrides(
            item,
            location,
            ItemKind::Rule,
            name,
            APPENDABLE,
            REPLACEABLE,
        )?;
        self.warn_unknown_keys(item, location, ItemKind::Rule, name, RULE_KEYS);
        if !overrides.is_empty() {
            // Every overridable key present must be listed under `override`.
            for (key, node) in &item.entries {
                let overridable = APPENDABLE.contains(key) || REPLACEABLE.contains(key);
                if overridable && !overrides.iter().any(|(k, _)| k == key) {
                    return err(
                        line_of(node),
                        format!("key '{key}' is not listed under 'override' (append or replace?)"),
                    );
                }
            }
            let keys = |want_append: bool| -> Vec<&str> {
                overrides
                    .iter()
                    .filter(|(_, a)| *a == want_append)
                    .map(|(k, _)| k.as_str())
                    .collect()
            };
            let appends = keys(true);
            if !appends.is_empty() {
                let update = Self::read_update(item, location, &appends)?;
                self.update_rule(name, update, true, item.line)?;
            }
            let replaces = keys(false);
            if !replaces.is_empty() {
                let update = Self::read_update(item, location, &replaces)?;
                self.update_rule(name, update, false, item.line)?;
            }
            return Ok(());
        }
        if append {
            let update = Self::read_update(item, location, &["condition", "exceptions"])?;
            return self.update_rule(name, update, true, item.line);
        }
        let defines = ["condition", "output", "desc", "priority"]
            .iter()
            .any(|k| item.has(k));
        if !defines {
            // `- rule: X` with `enabled:` only switches an earlier rule on or off.
            let Some(node) = item.get("enabled") else {
                return err(
                    item.line,
                    "a rule needs condition, output, desc and priority (or only 'enabled' to \
                     switch an earlier rule)",
                );
            };
            let enabled = as_bool(node, "enabled")?;
            let Some(prev) = self.rules.get_mut(name) else {
                return err(
                    item.line,
                    "sets 'enabled' of a rule that is not defined earlier",
                );
            };
            prev.enabled = enabled;
            return Ok(());
        }
        let required = |key: &str| {
            item.get(key).ok_or_else(|| ItemError {
                line: item.line,
                reason: format!("a rule needs '{key}'"),
            })
        };
        let cond_node = required("condition")?;
        let output_node = required("output")?;
        let priority = read_priority(required("priority")?)?;
        let cond = as_string(cond_node, "condition")?;
        let output = as_string(output_node, "output")?;
        let desc = match item.get("desc") {
            Some(d) => as_string(d, "desc")?,
            None => {
                self.problem(
                    Severity::Warning,
                    &location.file,
                    item.line,
                    ItemKind::Rule,
                    Some(name),
                    "has no 'desc' (Falco requires one)",
                );
                String::new()
            }
        };
        let tags = match item.get("tags") {
            Some(t) => as_strings(t, "tags")?,
            None => Vec::new(),
        };
        let enabled = match item.get("enabled") {
            Some(e) => as_bool(e, "enabled")?,
            None => true,
        };
        let flag = |key: &str, default: bool| match item.get(key) {
            Some(v) => as_bool(v, key),
            None => Ok(default),
        };
        let warn_evttypes = flag("warn_evttypes", true)?;
        let skip_if_unknown_filter = flag("skip-if-unknown-filter", false)?;
        let source = match item.get("source") {
            Some(s) => as_string(s, "source")?,
            None => SYSCALL_SOURCE.to_owned(),
        };
        let exceptions = match item.get("exceptions") {
            Some(e) => Self::read_exceptions(e, &location.file, false)?,
            None => Vec::new(),
        };
        for ex in &exceptions {
            if ex.fields.is_none() {
                return err(
                    ex.location.line,
                    format!("exception '{}' needs 'fields'", ex.name),
                );
            }
        }
        let index = self.next_index();
        let first = self.rules.get(name).map_or(index, |p| p.index);
        if let Some(prev) = self.rules.get(name)
            && prev.source != source
        {
            return err(
                item.line,
                format!(
                    "redefines a rule of source '{}' with source '{source}'",
                    prev.source
                ),
            );
        }
        let at = |node: &MarkedYaml<'_>| Location {
            file: location.file.clone(),
            line: line_of(node),
        };
        self.rules.insert(
            name.to_owned(),
            RuleInfo {
                name: name.to_owned(),
                desc: desc.trim().to_owned(),
                cond: CondText::new(&cond, at(cond_node)),
                output,
                output_location: at(output_node),
                priority,
                tags: dedup(tags),
                enabled,
                exceptions,
                source,
                warn_evttypes,
                skip_if_unknown_filter,
                location: location.clone(),
                index: first,
            },
        );
        Ok(())
    }

    fn update_rule(
        &mut self,
        name: &str,
        u: RuleUpdate,
        append: bool,
        line: usize,
    ) -> Result<(), ItemError> {
        let Some(prev) = self.rules.get_mut(name) else {
            return err(
                line,
                format!(
                    "{} a rule that is not defined earlier",
                    if append {
                        "appends to"
                    } else {
                        "replaces parts of"
                    }
                ),
            );
        };
        if append {
            if let Some((cond, loc)) = u.cond.filter(|(c, _)| !c.trim().is_empty()) {
                prev.cond.append(&cond, loc);
            }
            if let Some((output, _)) = u.output.filter(|(o, _)| !o.trim().is_empty()) {
                prev.output.push(' ');
                prev.output.push_str(&output);
            }
            if let Some(desc) = u.desc.filter(|d| !d.trim().is_empty()) {
                prev.desc.push(' ');
                prev.desc.push_str(desc.trim());
            }
            if let Some(tags) = u.tags {
                prev.tags.extend(tags);
                prev.tags = dedup(std::mem::take(&mut prev.tags));
            }
            for ex in u.exceptions.unwrap_or_default() {
                match prev.exceptions.iter_mut().find(|e| e.name == ex.name) {
                    Some(existing) => {
                        if ex.fields.is_some() || ex.comps.is_some() {
                            return err(
                                ex.location.line,
                                format!(
                                    "exception '{}' exists: an append may add values only, \
                                     not fields or comps",
                                    ex.name
                                ),
                            );
                        }
                        existing.values.extend(ex.values);
                    }
                    None => {
                        if ex.fields.is_none() {
                            return err(
                                ex.location.line,
                                format!("new exception '{}' needs 'fields'", ex.name),
                            );
                        }
                        prev.exceptions.push(ex);
                    }
                }
            }
        } else {
            if let Some((cond, loc)) = u.cond {
                prev.cond = CondText::new(&cond, loc);
            }
            if let Some((output, loc)) = u.output {
                prev.output = output;
                prev.output_location = loc;
            }
            if let Some(desc) = u.desc {
                prev.desc = desc.trim().to_owned();
            }
            if let Some(tags) = u.tags {
                prev.tags = dedup(tags);
            }
            if let Some(exceptions) = u.exceptions {
                prev.exceptions = exceptions;
            }
            if let Some(p) = u.priority {
                prev.priority = p;
            }
            if let Some(e) = u.enabled {
                prev.enabled = e;
            }
            if let Some(w) = u.warn_evttypes {
                prev.warn_evttypes = w;
            }
            if let Some(s) = u.skip_if_unknown_filter {
                prev.skip_if_unknown_filter = s;
            }
        }
        Ok(())
    }

    /// Compiles everything read so far into a rule set, and returns it with the report.
    pub fn finish(mut self) -> (RuleSet, LoadReport) {
        let lists = self.expand_lists();
        let macros = self.parse_macros();
        let scope = Scope {
            macros: &macros,
            lists: &lists,
        };
        let mut infos: Vec<RuleInfo> = std::mem::take(&mut self.rules).into_values().collect();
        infos.sort_by_key(|r| r.index);
        let mut rules = Vec::with_capacity(infos.len());
        let mut names: HashSet<String> = self.failed_rules.iter().cloned().collect();
        for info in infos {
            names.insert(info.name.clone());
            if let Some(rule) = self.compile_rule(info, &scope) {
                rules.push(rule);
            }
        }
        self.report.rules_total = names.len();
        self.report.rules_loaded = rules.len();
        self.report.rules_disabled = rules.iter().filter(|r| !r.enabled).count();
        // File order, then line: the order a person reads the files in.
        let order: HashMap<Arc<str>, usize> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        self.report.problems.sort_by_key(|p| {
            (
                order.get(&p.location.file).copied().unwrap_or(usize::MAX),
                p.location.line,
            )
        });
        (RuleSet::new(rules), self.report)
    }

    /// Lists with the items that name other lists replaced by those lists' items (as Falco
    /// does for a list defined before the one that names it), and quoted items unquoted.
    fn expand_lists(&self) -> HashMap<String, Vec<String>> {
        fn expand(
            name: &str,
            infos: &HashMap<String, ListInfo>,
            stack: &mut Vec<String>,
            out: &mut Vec<String>,
            seen: &mut HashSet<String>,
        ) {
            let Some(info) = infos.get(name) else { return };
            stack.push(name.to_owned());
            for item in &info.items {
                let nested = infos
                    .get(item)
                    .filter(|r| r.index < info.visibility && !stack.contains(item));
                if nested.is_some() {
                    expand(item, infos, stack, out, seen);
                } else {
                    let value = condition::unquote(item).unwrap_or_else(|| item.clone());
                    if seen.insert(value.clone()) {
                        out.push(value);
                    }
                }
            }
            stack.pop();
        }
        self.lists
            .keys()
            .map(|name| {
                let mut out = Vec::new();
                expand(
                    name,
                    &self.lists,
                    &mut Vec::new(),
                    &mut out,
                    &mut HashSet::new(),
                );
                (name.clone(), out)
            })
            .collect()
    }

    /// Parses every macro once; syntax errors are reported here, once, at the macro.
    fn parse_macros(&mut self) -> HashMap<String, MacroDef> {
        let mut names: Vec<(&String, &MacroInfo)> = self.macros.iter().collect();
        names.sort_by_key(|(_, m)| m.index);
        let mut out = HashMap::new();
        let mut problems = Vec::new();
        for (name, info) in names {
            let expr = condition::parse(&info.cond.text);
            if let Err(e) = &expr {
                let loc = info.cond.location_of(e.offset).clone();
                problems.push((loc, name.clone(), format!("syntax error in condition: {e}")));
            }
            out.insert(
                name.clone(),
                MacroDef {
                    expr,
                    text: info.cond.text.clone(),
                    location: info.location.to_string(),
                },
            );
        }
        for (loc, name, reason) in problems {
            self.report
                .push(Severity::Error, loc, ItemKind::Macro, Some(&name), reason);
        }
        out
    }

    fn compile_rule(&mut self, info: RuleInfo, scope: &Scope<'_>) -> Option<Rule> {
        let name = info.name.clone();
        let fail = |this: &mut RuleLoader, severity, loc: Location, reason: String| {
            this.report
                .push(severity, loc, ItemKind::Rule, Some(&name), reason);
            None
        };
        if info.source != SYSCALL_SOURCE {
            return fail(
                self,
                Severity::Warning,
                info.location.clone(),
                format!(
                    "skipped: source '{}' is not supported (habitd evaluates syscall rules only)",
                    info.source
                ),
            );
        }
        let expr = match condition::parse(&info.cond.text) {
            Ok(expr) => expr,
            Err(e) => {
                let loc = info.cond.location_of(e.offset).clone();
                return fail(
                    self,
                    Severity::Error,
                    loc,
                    format!("syntax error in condition: {e}"),
                );
            }
        };
        let mut node = match compile::compile(&expr, &info.cond.text, scope) {
            Ok(node) => node,
            Err(e) => {
                let loc = match &e {
                    CompileError::Syntax(p) => info.cond.location_of(p.offset).clone(),
                    _ => info.cond.location_of(0).clone(),
                };
                if info.skip_if_unknown_filter && is_unknown_field(&e) {
                    return fail(
                        self,
                        Severity::Warning,
                        loc,
                        format!("skipped (skip-if-unknown-filter): {e}"),
                    );
                }
                return fail(self, Severity::Error, loc, e.to_string());
            }
        };
        if !info.exceptions.is_empty() {
            let mut all = vec![node];
            for ex in &info.exceptions {
                match exception_expr(ex).and_then(|expr| {
                    expr.map(|e| compile::compile(&e, "", scope).map_err(|e| e.to_string()))
                        .transpose()
                }) {
                    Ok(Some(n)) => all.push(Node::Not(Box::new(n))),
                    Ok(None) => {}
                    Err(reason) => {
                        return fail(
                            self,
                            Severity::Error,
                            ex.location.clone(),
                            format!("exception '{}': {reason}", ex.name),
                        );
                    }
                }
            }
            node = Node::And(all.into());
        }
        let output = match OutputTemplate::parse(&info.output) {
            Ok(o) => o,
            Err(e) => {
                if info.skip_if_unknown_filter && matches!(e.error, FieldError::Unknown(_)) {
                    return fail(
                        self,
                        Severity::Warning,
                        info.output_location.clone(),
                        format!("skipped (skip-if-unknown-filter): {e}"),
                    );
                }
                return fail(
                    self,
                    Severity::Error,
                    info.output_location.clone(),
                    e.to_string(),
                );
            }
        };
        let rule = Rule::new(RuleParts {
            name: info.name,
            desc: info.desc,
            priority: info.priority,
            tags: info.tags,
            source: info.source,
            enabled: info.enabled,
            condition: node,
            condition_text: info.cond.text.trim().to_owned(),
            output,
            output_text: info.output.trim().to_owned(),
            location: info.location.clone(),
        });
        match rule.event_types() {
            Some([]) => self.report.push(
                Severity::Warning,
                info.location,
                ItemKind::Rule,
                Some(&name),
                "no event type can satisfy the condition: the rule never matches",
            ),
            None if info.warn_evttypes => self.report.push(
                Severity::Warning,
                info.location,
                ItemKind::Rule,
                Some(&name),
                "the condition does not restrict evt.type: the rule is evaluated for every event",
            ),
            _ => {}
        }
        Some(rule)
    }
}

/// What [`Rule::new`] is built from.
pub(super) struct RuleParts {
    pub name: String,
    pub desc: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub source: String,
    pub enabled: bool,
    pub condition: Node,
    pub condition_text: String,
    pub output: OutputTemplate,
    pub output_text: String,
    pub location: Location,
}

fn is_unknown_field(e: &CompileError) -> bool {
    match e {
        CompileError::Field {
            error: FieldError::Unknown(_),
            ..
        } => true,
        CompileError::InMacro { error, .. } => is_unknown_field(error),
        _ => false,
    }
}

fn read_priority(node: &MarkedYaml<'_>) -> Result<Priority, ItemError> {
    let text = as_string(node, "priority")?;
    text.trim().parse::<Priority>().map_err(|e| ItemError {
        line: line_of(node),
        reason: e.to_string(),
    })
}

fn dedup(tags: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    tags.into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}
