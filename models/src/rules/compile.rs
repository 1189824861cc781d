//! Compiling a parsed condition into the form that is evaluated per event, and evaluating it.
//!
//! Compilation does all the string work once: macros are inlined, list names expanded into
//! hash sets, field names resolved to [`Field`]s, literals converted to the field's type,
//! `icontains` needles lower-cased, globs and path sets built. What remains per event is a walk
//! over [`Node`]s calling [`EventFields::get`] and comparing values.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::condition::{Expr, FieldName, Literal, Op, ParseError, Rhs};
use super::field::{EventFields, Field, FieldError, FieldRef, FieldType, Multiplicity, Value};
use super::matchers::{Glob, PathSet, contains_ignore_ascii_case};

type Set<T> = HashSet<T, ahash::RandomState>;

/// Macros nested deeper than this are refused (it also stops runaway recursion).
const MAX_MACRO_DEPTH: usize = 64;

/// Why a condition does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A syntax error in the rule's own condition.
    #[error("syntax error: {0}")]
    Syntax(#[from] ParseError),
    /// A field name is unknown or its argument wrong.
    #[error("{error}{}", at(*.column))]
    Field {
        /// What is wrong with the field.
        error: FieldError,
        /// Column in the condition text (from 1; 0 when unknown).
        column: usize,
    },
    /// The operator does not apply to the field's type.
    #[error("operator '{op}' cannot be used on {field} (a {ty} field){}", at(*.column))]
    Operator {
        /// The operator.
        op: Op,
        /// The field.
        field: String,
        /// The field's type.
        ty: &'static str,
        /// Column in the condition text (from 1; 0 when unknown).
        column: usize,
    },
    /// A literal is not a value of the field's type.
    #[error("'{value}' is not a valid {ty} for {field}{}", at(*.column))]
    Value {
        /// The literal.
        value: String,
        /// The field.
        field: String,
        /// The expected type.
        ty: &'static str,
        /// Column in the condition text (from 1; 0 when unknown).
        column: usize,
    },
    /// A name that is neither a macro nor anything else.
    #[error("undefined macro '{name}'{}", at(*.column))]
    UndefinedMacro {
        /// The name.
        name: String,
        /// Column in the condition text (from 1; 0 when unknown).
        column: usize,
    },
    /// A macro that (indirectly) uses itself.
    #[error("macro '{0}' refers to itself")]
    MacroCycle(String),
    /// Macros nested too deeply.
    #[error("macros nested deeper than {MAX_MACRO_DEPTH} levels")]
    MacroDepth,
    /// A macro this condition uses has a syntax error.
    #[error("uses macro '{name}', which has a syntax error ({location}): {error}")]
    BrokenMacro {
        /// The macro.
        name: String,
        /// Where it is defined (`file:line`).
        location: String,
        /// Its error.
        error: ParseError,
    },
    /// An error inside a macro this condition uses.
    #[error("in macro '{name}' ({location}): {error}")]
    InMacro {
        /// The macro.
        name: String,
        /// Where it is defined (`file:line`).
        location: String,
        /// The error in the macro's condition.
        error: Box<CompileError>,
    },
}

/// A macro as the compiler sees it: its parsed condition, or why it does not parse.
#[derive(Debug, Clone)]
pub struct MacroDef {
    /// The parsed condition.
    pub expr: Result<Expr, ParseError>,
    /// Its condition text, for error columns.
    pub text: String,
    /// Where it is defined, `file:line`, for messages.
    pub location: String,
}

/// What a condition may refer to by name.
pub struct Scope<'a> {
    /// Macros by name.
    pub macros: &'a HashMap<String, MacroDef>,
    /// Lists by name, fully expanded (items that name earlier lists already replaced).
    pub lists: &'a HashMap<String, Vec<String>>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Node {
    /// A constant (an empty `or`, a folded sub-expression).
    Const(bool),
    /// All of.
    And(Box<[Node]>),
    /// Any of.
    Or(Box<[Node]>),
    /// Negation.
    Not(Box<Node>),
    /// One field test.
    Check(Box<Check>),
}

/// A field and the test applied to its value.
#[derive(Debug, Clone)]
pub struct Check {
    /// The field.
    pub field: FieldRef,
    /// The test.
    pub test: Test,
}

/// A test on a value, with its operand already in the field's type.
#[derive(Debug, Clone)]
pub enum Test {
    /// The field is present.
    Exists,
    /// Text tests.
    Str(StrTest),
    /// Number tests.
    Num(NumTest),
    /// Boolean tests: `=` (true) or `!=` (false) to a value.
    Bool {
        /// `true` for `=`, `false` for `!=`.
        eq: bool,
        /// The value compared with.
        value: bool,
    },
    /// IP address tests.
    Ip(IpTest),
}

/// Tests on text.
#[derive(Debug, Clone)]
pub enum StrTest {
    /// Equal.
    Eq(Box<str>),
    /// Not equal.
    Ne(Box<str>),
    /// Ordered comparison (byte-wise, as libsinsp's `strcmp`).
    Cmp(Op, Box<str>),
    /// One of (`in`; for a set-valued field: every value one of).
    In(Set<Box<str>>),
    /// For a set-valued field, one of its values is in the list.
    Intersects(Set<Box<str>>),
    /// Substring.
    Contains(Box<str>),
    /// Substring ignoring ASCII case; the needle is lower-cased.
    IContains(Box<str>),
    /// Prefix.
    StartsWith(Box<str>),
    /// Suffix.
    EndsWith(Box<str>),
    /// Glob (case-sensitive or not).
    Glob(Glob),
    /// Path prefix set.
    Pmatch(PathSet),
}

/// Tests on numbers.
#[derive(Debug, Clone)]
pub enum NumTest {
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Cmp(Op, i64),
    /// One of.
    In(Set<i64>),
    /// For a set-valued field, one of its values is in the list.
    Intersects(Set<i64>),
}

/// An address or a network (an address is a network of full length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// Tests on IP addresses: membership in addresses or networks.
#[derive(Debug, Clone)]
pub enum IpTest {
    /// In (`=`, `in`, `intersects`) the networks.
    In(Box<[IpNet]>),
    /// Not in (`!=`) the network.
    NotIn(IpNet),
}

/// Compiles a rule's condition.
pub fn compile(expr: &Expr, text: &str, scope: &Scope<'_>) -> Result<Node, CompileError> {
    let mut cx = Compiler {
        scope,
        stack: Vec::new(),
    };
    cx.node(expr, text).map(simplify)
}

struct Compiler<'a, 'b> {
    scope: &'a Scope<'b>,
    /// The macros being expanded, outermost first.
    stack: Vec<&'a str>,
}

/// ` at column N`, or nothing when the position is unknown (0): exceptions are built from
/// YAML values, not from condition text.
fn at(column: usize) -> String {
    if column == 0 {
        String::new()
    } else {
        format!(" at column {column}")
    }
}

/// The column (from 1) of `offset` in `text`; 0 for an empty text (no position).
fn column(text: &str, offset: usize) -> usize {
    if text.is_empty() {
        return 0;
    }
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    before[line_start..].chars().count() + 1
}

impl<'a> Compiler<'a, '_> {
    fn node(&mut self, expr: &Expr, text: &str) -> Result<Node, CompileError> {
        Ok(match expr {
            Expr::And(children) => Node::And(
                children
                    .iter()
                    .map(|c| self.node(c, text))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(children) => Node::Or(
                children
                    .iter()
                    .map(|c| self.node(c, text))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(inner) => Node::Not(Box::new(self.node(inner, text)?)),
            Expr::Macro { name, offset } => self.macro_node(name, *offset, text)?,
            Expr::Check {
                field,
                op,
                rhs,
                offset,
            } => Node::Check(Box::new(self.check(field, *op, rhs, *offset, text)?)),
        })
    }

    fn macro_node(&mut self, name: &str, offset: usize, text: &str) -> Result<Node, CompileError> {
        let Some((key, def)) = self.scope.macros.get_key_value(name) else {
            return Err(CompileError::UndefinedMacro {
                name: name.to_owned(),
                column: column(text, offset),
            });
        };
        if self.stack.contains(&key.as_str()) {
            return Err(CompileError::MacroCycle(name.to_owned()));
        }
        if self.stack.len() >= MAX_MACRO_DEPTH {
            return Err(CompileError::MacroDepth);
        }
        let expr = match &def.expr {
            Ok(expr) => expr,
            Err(error) => {
                return Err(CompileError::BrokenMacro {
                    name: name.to_owned(),
                    location: def.location.clone(),
                    error: error.clone(),
                });
            }
        };
        self.stack.push(key);
        let result = self.node(expr, &def.text);
        self.stack.pop();
        result.map_err(|error| match error {
            // Report the innermost macro only; cycles and broken macros name theirs already.
            e @ (CompileError::InMacro { .. }
            | CompileError::MacroCycle(_)
            | CompileError::MacroDepth
            | CompileError::BrokenMacro { .. }) => e,
            e => CompileError::InMacro {
                name: name.to_owned(),
                location: def.location.clone(),
                error: Box::new(e),
            },
        })
    }

    /// The values of a list operand, with list names expanded.
    fn list_items<'r>(&self, rhs: &'r Rhs) -> Vec<(Cow<'r, str>, usize)> {
        let mut out = Vec::new();
        let push = |lit: &'r Literal, out: &mut Vec<(Cow<'r, str>, usize)>| match (!lit.quoted)
            .then(|| self.scope.lists.get(&lit.text))
            .flatten()
        {
            Some(items) => out.extend(items.iter().map(|i| (Cow::Owned(i.clone()), lit.offset))),
            None => out.push((Cow::Borrowed(lit.text.as_str()), lit.offset)),
        };
        match rhs {
            Rhs::List(items) => {
                for lit in items {
                    push(lit, &mut out);
                }
            }
            Rhs::ListName(lit) | Rhs::Value(lit) => push(lit, &mut out),
            Rhs::None => {}
        }
        out
    }

    fn check(
        &mut self,
        name: &FieldName,
        op: Op,
        rhs: &Rhs,
        offset: usize,
        text: &str,
    ) -> Result<Check, CompileError> {
        let col = column(text, offset);
        let field = FieldRef::resolve(&name.name, name.arg.as_deref())
            .map_err(|error| CompileError::Field { error, column: col })?;
        let ty = field.field.value_type();
        let bad_op = || CompileError::Operator {
            op,
            field: name.to_string(),
            ty: ty.as_str(),
            column: col,
        };
        if op == Op::Exists {
            return Ok(Check {
                field,
                test: Test::Exists,
            });
        }
        let items = self.list_items(rhs);
        let bad_value = |value: &str, at: usize| CompileError::Value {
            value: value.to_owned(),
            field: name.to_string(),
            ty: ty.as_str(),
            column: column(text, at),
        };
        let single = || -> &str {
            match rhs {
                Rhs::Value(lit) => lit.text.as_str(),
                _ => "",
            }
        };
        let test = match ty {
            FieldType::Str => {
                let v = single();
                Test::Str(match op {
                    Op::Eq => StrTest::Eq(v.into()),
                    Op::Ne => StrTest::Ne(v.into()),
                    Op::Lt | Op::Le | Op::Gt | Op::Ge => StrTest::Cmp(op, v.into()),
                    Op::Contains => StrTest::Contains(v.into()),
                    Op::IContains => StrTest::IContains(v.to_ascii_lowercase().into()),
                    Op::StartsWith => StrTest::StartsWith(v.into()),
                    Op::EndsWith => StrTest::EndsWith(v.into()),
                    Op::Glob => StrTest::Glob(Glob::new(v, false)),
                    Op::IGlob => StrTest::Glob(Glob::new(v, true)),
                    Op::In => StrTest::In(items.iter().map(|(s, _)| s.as_ref().into()).collect()),
                    Op::Intersects => {
                        StrTest::Intersects(items.iter().map(|(s, _)| s.as_ref().into()).collect())
                    }
                    Op::Pmatch => {
                        StrTest::Pmatch(PathSet::new(items.iter().map(|(s, _)| s.as_ref())))
                    }
                    Op::Exists => return Err(bad_op()),
                })
            }
            FieldType::Num => {
                let num = |s: &str, at: usize| parse_num(s).ok_or_else(|| bad_value(s, at));
                Test::Num(match op {
                    Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                        let at = match rhs {
                            Rhs::Value(lit) => lit.offset,
                            _ => offset,
                        };
                        NumTest::Cmp(op, num(single(), at)?)
                    }
                    Op::In | Op::Intersects => {
                        let set = items
                            .iter()
                            .map(|(s, at)| num(s, *at))
                            .collect::<Result<Set<i64>, _>>()?;
                        if op == Op::In {
                            NumTest::In(set)
                        } else {
                            NumTest::Intersects(set)
                        }
                    }
                    _ => return Err(bad_op()),
                })
            }
            FieldType::Bool => {
                let (eq, at) = match (op, rhs) {
                    (Op::Eq, Rhs::Value(lit)) => (true, lit.offset),
                    (Op::Ne, Rhs::Value(lit)) => (false, lit.offset),
                    _ => return Err(bad_op()),
                };
                let value = match single() {
                    "true" => true,
                    "false" => false,
                    other => return Err(bad_value(other, at)),
                };
                Test::Bool { eq, value }
            }
            FieldType::Ip => {
                let net = |s: &str, at: usize| IpNet::parse(s).ok_or_else(|| bad_value(s, at));
                Test::Ip(match op {
                    Op::Eq | Op::In | Op::Intersects => IpTest::In(
                        items
                            .iter()
                            .map(|(s, at)| net(s, *at))
                            .collect::<Result<_, _>>()?,
                    ),
                    Op::Ne => {
                        let at = match rhs {
                            Rhs::Value(lit) => lit.offset,
                            _ => offset,
                        };
                        IpTest::NotIn(net(single(), at)?)
                    }
                    _ => return Err(bad_op()),
                })
            }
        };
        Ok(Check { field, test })
    }
}

fn parse_num(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<i64>().ok()?,
    };
    Some(if neg { -value } else { value })
}

/// Flattens nested `and`/`or` and folds constants, so evaluation walks fewer nodes.
fn simplify(node: Node) -> Node {
    match node {
        Node::And(children) => {
            let mut out = Vec::with_capacity(children.len());
            for child in children.into_vec().into_iter().map(simplify) {
                match child {
                    Node::Const(true) => {}
                    Node::Const(false) => return Node::Const(false),
                    Node::And(grand) => out.extend(grand.into_vec()),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Node::Const(true),
                1 => out.pop().unwrap_or(Node::Const(true)),
                _ => Node::And(out.into()),
            }
        }
        Node::Or(children) => {
            let mut out = Vec::with_capacity(children.len());
            for child in children.into_vec().into_iter().map(simplify) {
                match child {
                    Node::Const(false) => {}
                    Node::Const(true) => return Node::Const(true),
                    Node::Or(grand) => out.extend(grand.into_vec()),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Node::Const(false),
                1 => out.pop().unwrap_or(Node::Const(false)),
                _ => Node::Or(out.into()),
            }
        }
        Node::Not(inner) => match simplify(*inner) {
            Node::Const(b) => Node::Const(!b),
            Node::Not(inner) => *inner,
            other => Node::Not(Box::new(other)),
        },
        other => other,
    }
}

/// The event types a condition can match, from its `evt.type` checks; `None` when it does not
/// restrict them (the rule must then see every event). Negations give `None`: the set of all
/// event types is open-ended here.
pub fn event_types(node: &Node) -> Option<BTreeSet<Box<str>>> {
    match node {
        Node::Const(true) => None,
        Node::Const(false) => Some(BTreeSet::new()),
        Node::Check(check) if check.field.field == Field::EvtType => match &check.test {
            Test::Str(StrTest::Eq(v)) => Some(BTreeSet::from([v.clone()])),
            Test::Str(StrTest::In(set)) => Some(set.iter().cloned().collect()),
            _ => None,
        },
        Node::Check(_) | Node::Not(_) => None,
        Node::And(children) => children
            .iter()
            .filter_map(event_types)
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Node::Or(children) => {
            let mut all = BTreeSet::new();
            for child in children.iter() {
                all.extend(event_types(child)?);
            }
            Some(all)
        }
    }
}

/// Evaluates a compiled condition on an event.
pub fn eval<E: EventFields + ?Sized>(node: &Node, event: &E) -> bool {
    match node {
        Node::Const(b) => *b,
        Node::And(children) => children.iter().all(|c| eval(c, event)),
        Node::Or(children) => children.iter().any(|c| eval(c, event)),
        Node::Not(inner) => !eval(inner, event),
        Node::Check(check) => eval_check(check, event),
    }
}

fn eval_check<E: EventFields + ?Sized>(check: &Check, event: &E) -> bool {
    let Some(value) = event.get(check.field.field, check.field.arg.as_ref()) else {
        // Falco: a field the event lacks fails every check, `!=` included.
        return false;
    };
    if matches!(check.test, Test::Exists) {
        return true;
    }
    match value {
        Value::List(items) => {
            let all_in = check.field.field.multiplicity() != Multiplicity::Ancestors
                && matches!(
                    check.test,
                    Test::Str(StrTest::In(_)) | Test::Num(NumTest::In(_))
                );
            if all_in {
                !items.is_empty() && items.iter().all(|v| test_scalar(&check.test, v))
            } else {
                items.iter().any(|v| test_scalar(&check.test, v))
            }
        }
        scalar => test_scalar(&check.test, &scalar),
    }
}

fn test_scalar(test: &Test, value: &Value<'_>) -> bool {
    match test {
        Test::Exists => true,
        Test::Str(t) => match value {
            Value::Str(s) => test_str(t, s),
            Value::List(_) => false,
            // An implementation may answer a number or an address for a text field; compare
            // its text (rare, so the allocation does not matter).
            other => test_str(t, &other.to_string()),
        },
        Test::Num(t) => {
            let n = match value {
                Value::Num(n) => *n,
                Value::Str(s) => match parse_num(s) {
                    Some(n) => n,
                    None => return false,
                },
                Value::Bool(b) => i64::from(*b),
                Value::Ip(_) | Value::List(_) => return false,
            };
            match t {
                NumTest::Cmp(op, v) => match op {
                    Op::Eq => n == *v,
                    Op::Ne => n != *v,
                    Op::Lt => n < *v,
                    Op::Le => n <= *v,
                    Op::Gt => n > *v,
                    Op::Ge => n >= *v,
                    _ => false,
                },
                NumTest::In(set) | NumTest::Intersects(set) => set.contains(&n),
            }
        }
        Test::Bool { eq, value: want } => {
            let b = match value {
                Value::Bool(b) => *b,
                Value::Num(n) => *n != 0,
                Value::Str(s) => match s.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => return false,
                },
                Value::Ip(_) | Value::List(_) => return false,
            };
            (b == *want) == *eq
        }
        Test::Ip(t) => {
            let ip = match value {
                Value::Ip(ip) => *ip,
                Value::Str(s) => match s.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return false,
                },
                _ => return false,
            };
            match t {
                IpTest::In(nets) => nets.iter().any(|n| n.contains(ip)),
                IpTest::NotIn(net) => !net.contains(ip),
            }
        }
    }
}

fn test_str(test: &StrTest, s: &str) -> bool {
    match test {
        StrTest::Eq(v) => s == v.as_ref(),
        StrTest::Ne(v) => s != v.as_ref(),
        StrTest::Cmp(op, v) => {
            let ord = s.cmp(v.as_ref());
            match op {
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                Op::Ge => ord.is_ge(),
                _ => false,
            }
        }
        StrTest::In(set) | StrTest::Intersects(set) => set.contains(s),
        StrTest::Contains(v) => s.contains(v.as_ref()),
        StrTest::IContains(v) => contains_ignore_ascii_case(s, v),
        StrTest::StartsWith(v) => s.starts_with(v.as_ref()),
        StrTest::EndsWith(v) => s.ends_with(v.as_ref()),
        StrTest::Glob(g) => g.is_match(s),
        StrTest::Pmatch(p) => p.is_match(s),
    }
}

/// The fields a compiled condition reads, for callers that want to know what an event must
/// carry.
pub fn fields(node: &Node, out: &mut BTreeSet<FieldRef>) {
    match node {
        Node::Const(_) => {}
        Node::And(c) | Node::Or(c) => c.iter().for_each(|n| fields(n, out)),
        Node::Not(n) => fields(n, out),
        Node::Check(check) => {
            out.insert(check.field.clone());
        }
    }
}
