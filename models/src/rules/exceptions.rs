//! Falco rule exceptions: the `exceptions` entries of a rule turned into the condition they
//! exclude.
//!
//! Falco builds that condition as text and appends `and not (...)` to the rule's condition;
//! habitd builds the same tree directly, which avoids quoting problems with values that contain
//! blanks or quotes. Values are read as Falco's parser would read them once pasted: a quoted
//! value is unquoted, and a bare value that names a list stands for the list.

use super::condition::{self, Expr, FieldName, Literal, Op, Rhs};
use super::report::Location;

/// A single field or comparison, or a list of them.
#[derive(Debug, Clone)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// An exception value: a string, or a list of strings (for `in` and friends), or a tuple.
#[derive(Debug, Clone)]
pub(super) enum ExValue {
    Item(String),
    List(Vec<ExValue>),
}

/// One entry of a rule's `exceptions`, as read.
#[derive(Debug, Clone)]
pub(super) struct ExceptionInfo {
    pub name: String,
    pub fields: Option<OneOrMany>,
    pub comps: Option<OneOrMany>,
    pub values: Vec<ExValue>,
    pub location: Location,
}

/// An exception value as a literal: quoted values are unquoted (and never name a list), as
/// Falco's parser reads them once it has pasted them into the condition.
fn literal(value: &str) -> Literal {
    match condition::unquote(value) {
        Some(text) => Literal {
            text,
            quoted: true,
            offset: 0,
        },
        None => Literal {
            text: value.to_owned(),
            quoted: false,
            offset: 0,
        },
    }
}

fn field_name(spelling: &str) -> FieldName {
    match spelling.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, arg)) => FieldName {
            name: name.to_owned(),
            arg: Some(arg.to_owned()),
        },
        None => FieldName {
            name: spelling.to_owned(),
            arg: None,
        },
    }
}

fn parse_op(s: &str) -> Result<Op, String> {
    Ok(match s.trim() {
        "=" | "==" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "in" => Op::In,
        "intersects" => Op::Intersects,
        "pmatch" => Op::Pmatch,
        "contains" => Op::Contains,
        "icontains" => Op::IContains,
        "startswith" => Op::StartsWith,
        "endswith" => Op::EndsWith,
        "glob" => Op::Glob,
        "iglob" => Op::IGlob,
        other => return Err(format!("'{other}' is not a supported comparison operator")),
    })
}

/// The condition an exception excludes, as Falco builds it: for one field,
/// `field comp (v1, v2, ...)`; for several, `(f1 c1 v1 and f2 c2 v2) or ...` over the value
/// tuples. `None` when there are no values.
pub(super) fn exception_expr(ex: &ExceptionInfo) -> Result<Option<Expr>, String> {
    if ex.values.is_empty() {
        return Ok(None);
    }
    let check = |field: &str, op: Op, rhs: Rhs| Expr::Check {
        field: field_name(field),
        op,
        rhs,
        offset: 0,
    };
    match &ex.fields {
        None => Err("'fields' is missing".to_owned()),
        Some(OneOrMany::One(field)) => {
            let op = match &ex.comps {
                None => Op::In,
                Some(OneOrMany::One(c)) => parse_op(c)?,
                Some(OneOrMany::Many(_)) => {
                    return Err("'fields' and 'comps' must both be strings or both lists".into());
                }
            };
            if !op.takes_list() {
                return Err(
                    "when 'fields' is a single field, 'comps' must be in, pmatch or intersects"
                        .into(),
                );
            }
            let mut items = Vec::new();
            for v in &ex.values {
                match v {
                    ExValue::Item(s) => items.push(literal(s)),
                    ExValue::List(_) => {
                        return Err(
                            "with a single field, 'values' must be a list of strings".into()
                        );
                    }
                }
            }
            Ok(Some(check(field, op, Rhs::List(items))))
        }
        Some(OneOrMany::Many(fields)) => {
            let comps: Vec<Op> = match &ex.comps {
                None => vec![Op::Eq; fields.len()],
                Some(OneOrMany::Many(c)) => {
                    c.iter().map(|c| parse_op(c)).collect::<Result<_, _>>()?
                }
                Some(OneOrMany::One(_)) => {
                    return Err("'fields' and 'comps' must both be strings or both lists".into());
                }
            };
            if comps.len() != fields.len() {
                return Err(format!(
                    "'fields' has {} entries but 'comps' has {}",
                    fields.len(),
                    comps.len()
                ));
            }
            let mut alternatives = Vec::new();
            for tuple in &ex.values {
                let ExValue::List(values) = tuple else {
                    return Err("with a list of fields, each of 'values' must be a list".into());
                };
                if values.len() != fields.len() {
                    return Err(format!(
                        "a value tuple has {} entries for {} fields",
                        values.len(),
                        fields.len()
                    ));
                }
                let mut all = Vec::new();
                for ((field, op), value) in fields.iter().zip(&comps).zip(values) {
                    let rhs = match value {
                        ExValue::List(items) => {
                            if !op.takes_list() {
                                return Err(format!(
                                    "a list value needs in, intersects or pmatch, not '{op}'"
                                ));
                            }
                            Rhs::List(
                                items
                                    .iter()
                                    .map(|i| match i {
                                        ExValue::Item(s) => Ok(literal(s)),
                                        ExValue::List(_) => {
                                            Err("lists in exception values cannot nest".to_owned())
                                        }
                                    })
                                    .collect::<Result<_, _>>()?,
                            )
                        }
                        ExValue::Item(s) if op.takes_list() => Rhs::List(vec![literal(s)]),
                        ExValue::Item(s) => Rhs::Value(literal(s)),
                    };
                    if *op == Op::Exists {
                        return Err("'exists' cannot be used in exceptions".into());
                    }
                    all.push(check(field, *op, rhs));
                }
                alternatives.push(Expr::And(all));
            }
            Ok(Some(Expr::Or(alternatives)))
        }
    }
}
