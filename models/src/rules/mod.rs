//! Falco-compatible static rules: load Falco rules files, compile them once, evaluate them on
//! events.
//!
//! Users already write Falco rules, and Falco's own rule set encodes years of tuning, so habitd
//! runs them as they are: the YAML format (`rule`, `macro`, `list`, exceptions, `append` and
//! `override`), the condition language, the field names and the `%field` outputs. The daemon
//! fuses rule hits with the learned baselines on top of this API; this module knows nothing
//! about baselines beyond the two tags it steers them with ([`ALWAYS_TAG`], [`NEVER_LEARN_TAG`]).
//!
//! habitd's own rules ship here too ([`DEFAULT_RULES`], loaded by [`load_with_builtin`]), so
//! that `habitd run` and `habitctl rules check` load them the same way.
//!
//! ```
//! use habit_models::rules::{MapEvent, RuleSet};
//!
//! let (rules, report) = RuleSet::load_str(
//!     "example.yaml",
//!     r#"
//! - list: shell_binaries
//!   items: [bash, sh, zsh]
//! - macro: spawned_process
//!   condition: evt.type in (execve, execveat)
//! - rule: Shell in container
//!   desc: A shell started in a container.
//!   condition: spawned_process and container.id != host and proc.name in (shell_binaries)
//!   output: Shell in container (user=%user.name command=%proc.cmdline)
//!   priority: WARNING
//!   tags: [container, shell, T1059]
//! "#,
//! );
//! assert!(report.is_clean(), "{report}");
//! assert_eq!(report.summary(), "loaded 1 of 1 rules");
//!
//! let event = MapEvent::new()
//!     .with("evt.type", "execve")
//!     .with("container.id", "3ad7c1e2b9f0")
//!     .with("proc.name", "bash")
//!     .with("proc.cmdline", "bash -i")
//!     .with("user.name", "root");
//! let mut hits = Vec::new();
//! rules.matching(&event, &mut hits);
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].output, "Shell in container (user=root command=bash -i)");
//! ```
//!
//! How it works:
//! - **Loading** ([`RuleLoader`]) reads YAML with line numbers (saphyr) and applies Falco's
//!   append/override semantics across all files; problems are collected per item in a
//!   [`LoadReport`], and a broken rule is skipped without stopping the rest.
//! - **Parsing** ([`condition`]) is a hand-written recursive-descent parser following
//!   libsinsp's grammar, with positions in its errors.
//! - **Compiling** inlines macros, expands lists into hash sets, resolves field
//!   names to [`Field`]s and converts literals to the field's type, once.
//! - **Indexing**: each rule's possible `evt.type` values are derived from its condition; an
//!   event is only tested against the rules of its type plus those that do not restrict the
//!   type.
//! - **Evaluating** reads fields through [`EventFields`], which the daemon implements over its
//!   event and process table.

mod builtin;
mod compile;
pub mod condition;
mod exceptions;
mod field;
mod load;
mod map_event;
mod matchers;
mod output;
mod report;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_builtin;
#[cfg(test)]
mod tests_falco;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub use builtin::{
    ALWAYS_TAG, DEFAULT_RULES, DEFAULT_RULES_NAME, NEVER_LEARN_TAG, add_default_rules,
    default_rules, load_with_builtin,
};
pub use compile::CompileError;
pub use field::{
    ArgKind, EventFields, Field, FieldArg, FieldError, FieldRef, FieldType, Multiplicity, Value,
};
pub use load::{LoadError, RuleLoader, SYSCALL_SOURCE};
pub use map_event::{MapEvent, MapEventError};
pub use output::{NOT_AVAILABLE, OutputError, OutputTemplate};
pub use report::{ItemKind, LoadReport, Location, Problem, Severity};

use crate::priority::Priority;
use compile::Node;

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    desc: String,
    priority: Priority,
    tags: Vec<String>,
    source: String,
    enabled: bool,
    condition: Node,
    condition_text: String,
    output: OutputTemplate,
    output_text: String,
    /// The `evt.type` values the condition can match; `None` when it does not restrict them.
    event_types: Option<Box<[Box<str>]>>,
    location: Location,
}

impl Rule {
    fn new(p: load::RuleParts) -> Rule {
        let event_types = compile::event_types(&p.condition).map(|set| set.into_iter().collect());
        Rule {
            name: p.name,
            desc: p.desc,
            priority: p.priority,
            tags: p.tags,
            source: p.source,
            enabled: p.enabled,
            condition: p.condition,
            condition_text: p.condition_text,
            output: p.output,
            output_text: p.output_text,
            event_types,
            location: p.location,
        }
    }

    /// The rule's name (Falco's `rule` key), which alerts carry as `rule`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description.
    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Its tags, in file order, without duplicates.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether it has a tag (`habitd.always`, `T1059`).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Its event source (`syscall`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it is evaluated.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The condition as written (appends included, exceptions not).
    pub fn condition_text(&self) -> &str {
        &self.condition_text
    }

    /// The output template as written.
    pub fn output_text(&self) -> &str {
        &self.output_text
    }

    /// The `evt.type` values the rule can match, sorted; `None` when the condition does not
    /// restrict them (the rule is tested on every event).
    pub fn event_types(&self) -> Option<&[Box<str>]> {
        self.event_types.as_deref()
    }

    /// Where the rule is defined.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the condition holds for an event (enabled or not).
    pub fn matches<E: EventFields + ?Sized>(&self, event: &E) -> bool {
        compile::eval(&self.condition, event)
    }

    /// The output for an event, `%field`s substituted.
    pub fn render_output<E: EventFields + ?Sized>(&self, event: &E) -> String {
        self.output.render(event)
    }

    /// The output template.
    pub fn output(&self) -> &OutputTemplate {
        &self.output
    }

    /// The values of the fields the output names, for Falco's `output_fields`: the field's
    /// Falco spelling and its rendered value (`None` when the event lacks it).
    pub fn output_fields<E: EventFields + ?Sized>(&self, event: &E) -> Vec<OutputField<'_>> {
        self.output
            .fields()
            .map(|(name, f)| OutputField {
                name,
                value: event.get(f.field, f.arg.as_ref()).map(|v| v.to_string()),
            })
            .collect()
    }

    /// The fields the condition reads (macros and exceptions included): what an event must
    /// carry for this rule to be decided.
    pub fn condition_fields(&self) -> BTreeSet<FieldRef> {
        let mut out = BTreeSet::new();
        compile::fields(&self.condition, &mut out);
        out
    }
}

/// One field of a rule's output and its value for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputField<'r> {
    /// The Falco spelling (`proc.aname[2]`).
    pub name: &'r str,
    /// The rendered value; `None` when the event lacks it (Falco's JSON `null`).
    pub value: Option<String>,
}

/// A rule that matched an event.
#[derive(Debug, Clone)]
pub struct RuleMatch<'r> {
    /// The rule (name, priority, tags...).
    pub rule: &'r Rule,
    /// The rendered output.
    pub output: String,
    /// The output's fields and values.
    pub output_fields: Vec<OutputField<'r>>,
}

/// Loaded, compiled rules, indexed by event type.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// For each event type, the enabled rules to test, in load order: the rules of that type
    /// merged with those that take any type.
    by_type: HashMap<Box<str>, Box<[usize]>, ahash::RandomState>,
    /// Enabled rules that take any event type, in load order.
    any: Box<[usize]>,
}

impl RuleSet {
    fn new(rules: Vec<Rule>) -> RuleSet {
        let mut set = RuleSet {
            rules,
            ..RuleSet::default()
        };
        set.reindex();
        set
    }

    fn reindex(&mut self) {
        let any: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].enabled && self.rules[i].event_types.is_none())
            .collect();
        let mut by_type: HashMap<Box<str>, Vec<usize>, ahash::RandomState> = HashMap::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            for t in rule.event_types.iter().flatten() {
                by_type.entry(t.clone()).or_default().push(i);
            }
        }
        self.by_type = by_type
            .into_iter()
            .map(|(t, mut ids)| {
                ids.extend(&any);
                ids.sort_unstable();
                ids.dedup();
                (t, ids.into())
            })
            .collect();
        self.any = any.into();
    }

    /// Loads rules files, in order (later files may append to or override earlier ones).
    /// Never fails: what could not be loaded is in the report.
    pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> (RuleSet, LoadReport) {
        let mut loader = RuleLoader::new();
        for path in paths {
            loader.add_file(path.as_ref());
        }
        loader.finish()
    }

    /// Loads rules from a text; `name` stands for the file in the report.
    pub fn load_str(name: &str, text: &str) -> (RuleSet, LoadReport) {
        let mut loader = RuleLoader::new();
        loader.add_str(name, text);
        loader.finish()
    }

    /// Every loaded rule (enabled or not), in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by name.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// How many rules are loaded.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Enables or disables a rule; false if there is no such rule.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> bool {
        let Some(rule) = self.rules.iter_mut().find(|r| r.name == name) else {
            return false;
        };
        rule.enabled = enabled;
        self.reindex();
        true
    }

    /// The event types the enabled rules need, or `None` when some enabled rule takes every
    /// event. The daemon can use it to decide which events to send to user space at all.
    pub fn event_types(&self) -> Option<BTreeSet<&str>> {
        if !self.any.is_empty() {
            return None;
        }
        Some(self.by_type.keys().map(|t| t.as_ref()).collect())
    }

    /// The enabled rules an event of type `evt_type` is tested against, in load order.
    pub fn candidates<'r>(&'r self, evt_type: &str) -> impl Iterator<Item = &'r Rule> + 'r {
        let ids: &[usize] = self.by_type.get(evt_type).unwrap_or(&self.any);
        ids.iter().filter_map(|&i| self.rules.get(i))
    }

    /// Collects the enabled rules whose condition holds for `event` into `out` (cleared
    /// first), in load order, without rendering outputs. The fast path: rendering costs
    /// allocations, and a caller that suppresses some hits need not render those.
    pub fn matching_rules<'r, E: EventFields + ?Sized>(
        &'r self,
        event: &E,
        out: &mut Vec<&'r Rule>,
    ) {
        out.clear();
        let ids: &[usize] = match event.get(Field::EvtType, None) {
            Some(Value::Str(t)) => self.by_type.get(t.as_ref()).unwrap_or(&self.any),
            _ => &self.any,
        };
        out.extend(
            ids.iter()
                .filter_map(|&i| self.rules.get(i))
                .filter(|r| r.matches(event)),
        );
    }

    /// Collects the enabled rules that match `event` into `out` (cleared first), in load
    /// order, with their outputs rendered.
    pub fn matching<'r, E: EventFields + ?Sized>(
        &'r self,
        event: &E,
        out: &mut Vec<RuleMatch<'r>>,
    ) {
        out.clear();
        let ids: &[usize] = match event.get(Field::EvtType, None) {
            Some(Value::Str(t)) => self.by_type.get(t.as_ref()).unwrap_or(&self.any),
            _ => &self.any,
        };
        for rule in ids.iter().filter_map(|&i| self.rules.get(i)) {
            if rule.matches(event) {
                out.push(RuleMatch {
                    rule,
                    output: rule.render_output(event),
                    output_fields: rule.output_fields(event),
                });
            }
        }
    }
}
