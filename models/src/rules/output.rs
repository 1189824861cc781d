//! Rule outputs: Falco's `output` strings with `%field` substitution, parsed once.
//!
//! `%proc.name`, `%proc.aname[2]` and `%evt.arg.flags` are replaced by the event's values;
//! a field the event lacks renders as `<NA>`, as in Falco. A `%` that does not start a field
//! name (`100%`) stays as written. An unknown field name is an error when the rule loads, the
//! way Falco refuses an output with an invalid formatting token, so a typo cannot silently
//! print `<NA>` forever.

use std::fmt::Write as _;

use super::field::{EventFields, FieldError, FieldRef};

/// What Falco prints for a field the event does not have.
pub const NOT_AVAILABLE: &str = "<NA>";

#[derive(Debug, Clone)]
enum Segment {
    Text(Box<str>),
    Field(usize),
}

/// A parsed output template.
#[derive(Debug, Clone)]
pub struct OutputTemplate {
    segments: Box<[Segment]>,
    /// The distinct fields, in order of first appearance, with their Falco spelling.
    fields: Box<[(Box<str>, FieldRef)]>,
}

/// An output field that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid output field '%{token}' at column {column}: {error}")]
pub struct OutputError {
    /// The token after `%`.
    pub token: String,
    /// Column in the output text (from 1).
    pub column: usize,
    /// What is wrong.
    pub error: FieldError,
}

impl OutputTemplate {
    /// Parses an output string. Surrounding blanks are dropped (a folded YAML scalar ends with
    /// a newline).
    pub fn parse(text: &str) -> Result<OutputTemplate, OutputError> {
        let text = text.trim();
        // Falco's leading `*` ("print only if every field has a value") does not apply to
        // alerts, which are always printed; accept and drop it.
        let text = text.strip_prefix('*').unwrap_or(text);
        let mut segments = Vec::new();
        let mut fields: Vec<(Box<str>, FieldRef)> = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(pct) = rest.find('%') {
            literal.push_str(&rest[..pct]);
            let after = &rest[pct + 1..];
            // An optional width (`%12proc.name`), accepted and ignored.
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let name_part = &after[digits..];
            let token_len = if name_part.starts_with(|c: char| c.is_ascii_alphabetic()) {
                name_part
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .unwrap_or(name_part.len())
            } else {
                0
            };
            let token = name_part[..token_len].trim_end_matches('.');
            if token.is_empty() {
                literal.push('%');
                rest = after;
                continue;
            }
            let mut consumed = digits + token.len();
            let mut bracket = None;
            if name_part[token.len()..].starts_with('[')
                && let Some(close) = name_part[token.len()..].find(']')
            {
                bracket = Some(&name_part[token.len() + 1..token.len() + close]);
                consumed += close + 1;
            }
            let column = text[..text.len() - rest.len() + pct].chars().count() + 1;
            let field = FieldRef::resolve(token, bracket).map_err(|error| OutputError {
                token: match bracket {
                    Some(b) => format!("{token}[{b}]"),
                    None => token.to_owned(),
                },
                column,
                error,
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal).into()));
            }
            let index = match fields.iter().position(|(_, f)| *f == field) {
                Some(i) => i,
                None => {
                    fields.push((field.to_string().into(), field));
                    fields.len() - 1
                }
            };
            segments.push(Segment::Field(index));
            rest = &after[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Text(literal.into()));
        }
        Ok(OutputTemplate {
            segments: segments.into(),
            fields: fields.into(),
        })
    }

    /// Renders the output for an event into `out` (appending).
    pub fn render_into<E: EventFields + ?Sized>(&self, event: &E, out: &mut String) {
        for segment in self.segments.iter() {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Field(i) => {
                    let Some((_, field)) = self.fields.get(*i) else {
                        continue;
                    };
                    match event.get(field.field, field.arg.as_ref()) {
                        // Writing to a String cannot fail.
                        Some(value) => {
                            let _ = write!(out, "{value}");
                        }
                        None => out.push_str(NOT_AVAILABLE),
                    }
                }
            }
        }
    }

    /// Renders the output for an event.
    pub fn render<E: EventFields + ?Sized>(&self, event: &E) -> String {
        let mut out = String::new();
        self.render_into(event, &mut out);
        out
    }

    /// The fields the output names, in order of first appearance, with their Falco spelling
    /// (`proc.aname[2]`): the keys of Falco's `output_fields`.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldRef)> {
        self.fields.iter().map(|(name, f)| (name.as_ref(), f))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::MapEvent;

    #[test]
    fn substitutes_fields_like_falco() {
        let t = OutputTemplate::parse(
            "Shell spawned | user=%user.name uid=%user.uid gparent=%proc.aname[2] \
             flags=%evt.arg.flags tty=%proc.tty (%container.id) 100% done.",
        )
        .unwrap();
        let ev = MapEvent::new()
            .with("user.name", "root")
            .with("user.uid", 0)
            .with("proc.aname[2]", "sshd")
            .with("evt.arg.flags", "O_RDONLY")
            .with("container.id", "abc123");
        assert_eq!(
            t.render(&ev),
            "Shell spawned | user=root uid=0 gparent=sshd flags=O_RDONLY tty=<NA> (abc123) 100% done."
        );
        let names: Vec<_> = t.fields().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "user.name",
                "user.uid",
                "proc.aname[2]",
                "evt.arg.flags",
                "proc.tty",
                "container.id"
            ]
        );
    }

    #[test]
    fn repeated_fields_and_punctuation() {
        let t = OutputTemplate::parse("%proc.name:%proc.name. %fd.sip,%fd.sport\n").unwrap();
        let ev = MapEvent::new()
            .with("proc.name", "nc")
            .with("fd.sip", "10.0.0.1")
            .with("fd.sport", 4444);
        assert_eq!(t.render(&ev), "nc:nc. 10.0.0.1,4444");
        assert_eq!(t.fields().count(), 3);
    }

    #[test]
    fn unknown_field_is_an_error_with_column() {
        let e = OutputTemplate::parse("x=%proc.nam y").unwrap_err();
        assert_eq!(e.column, 3);
        assert!(e.to_string().contains("unknown field 'proc.nam'"), "{e}");
        let e = OutputTemplate::parse("%proc.name[1]").unwrap_err();
        assert!(e.to_string().contains("takes no argument"), "{e}");
    }
}
