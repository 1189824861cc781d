//! The condition language: a hand-written recursive-descent parser into an [`Expr`] tree.
//!
//! The grammar is Falco's (libsinsp's filter parser), so that Falco's rule files parse the same
//! way here:
//!
//! ```text
//! or     := and ( "or" and )*
//! and    := not ( "and" not )*
//! not    := "not" not | check
//! check  := "(" or ")" | field [ "[" arg "]" ] cond | macro-name
//! cond   := "exists" | num-op number | str-op string | list-op ( "(" [string ("," string)*] ")" | list-name )
//! ```
//!
//! `not` binds tighter than `and`, which binds tighter than `or`. Strings are quoted (`"..."`
//! or `'...'`, with `\"`, `\\`, `\n`... escapes) or bare: a bare string runs until a blank,
//! a parenthesis, a comma, a quote or `=`, so `/etc/shadow`, `runc:[1:CHILD]` and `-1` need no
//! quotes. Word operators (`contains`, `in`...) and `and`/`or`/`not` must be followed by a
//! blank (or `(` where a list or group follows).
//!
//! The parser only builds the tree; field names, macros and lists are resolved when a rule is
//! compiled, because macros and lists may be defined after the rules that
//! use them.

use std::fmt;

/// Deeper nesting than this is refused: the parser recurses once per level, and a rules file
/// must not be able to overflow the stack.
const MAX_DEPTH: usize = 200;

/// A condition syntax error, with its position in the condition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at {}{}", fmt_position(*.line, *.column), fmt_near(.near))]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the condition text.
    pub offset: usize,
    /// Line in the condition text, from 1.
    pub line: usize,
    /// Column (in characters) in that line, from 1.
    pub column: usize,
    /// The text at the error, up to 24 characters.
    pub near: String,
}

fn fmt_position(line: usize, column: usize) -> String {
    if line == 1 {
        format!("column {column}")
    } else {
        format!("line {line} column {column}")
    }
}

fn fmt_near(near: &str) -> String {
    if near.is_empty() {
        " (end of condition)".to_owned()
    } else {
        format!(" near '{near}'")
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=` or `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `in`: the value is one of the list.
    In,
    /// `intersects`: one of the (several) values is in the list.
    Intersects,
    /// `pmatch`: the path is one of the listed paths or below one of them.
    Pmatch,
    /// `contains`: substring.
    Contains,
    /// `icontains`: substring, ignoring ASCII case.
    IContains,
    /// `startswith`.
    StartsWith,
    /// `endswith`.
    EndsWith,
    /// `glob`: shell wildcard match (`*`, `?`, `[...]`), `*` matching `/` too.
    Glob,
    /// `iglob`: `glob` ignoring ASCII case.
    IGlob,
    /// `exists`: the event has the field.
    Exists,
}

impl Op {
    /// The operator as written in conditions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Intersects => "intersects",
            Op::Pmatch => "pmatch",
            Op::Contains => "contains",
            Op::IContains => "icontains",
            Op::StartsWith => "startswith",
            Op::EndsWith => "endswith",
            Op::Glob => "glob",
            Op::IGlob => "iglob",
            Op::Exists => "exists",
        }
    }

    /// Whether the right-hand side is a list.
    pub const fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::Pmatch)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A literal value on the right of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// The value, quotes removed and escapes resolved.
    pub text: String,
    /// Whether it was quoted. A bare word in a list may name a list; a quoted one never does.
    pub quoted: bool,
    /// Byte offset in the condition text.
    pub offset: usize,
}

/// The right-hand side of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rhs {
    /// Nothing (`exists`).
    None,
    /// One value.
    Value(Literal),
    /// A parenthesised list of values; bare items may name lists.
    List(Vec<Literal>),
    /// A list name without parentheses (`proc.name in shell_binaries`).
    ListName(Literal),
}

/// A field as written in a condition: its dotted name and its bracket argument, unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName {
    /// The dotted name (`proc.aname`, `evt.arg.flags`).
    pub name: String,
    /// The bracket argument (`2` in `proc.aname[2]`).
    pub arg: Option<String>,
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arg {
            Some(arg) => write!(f, "{}[{arg}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// All of.
    And(Vec<Expr>),
    /// Any of.
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// A macro, by name.
    Macro {
        /// The name.
        name: String,
        /// Byte offset in the condition text.
        offset: usize,
    },
    /// A field compared with a value.
    Check {
        /// The field.
        field: FieldName,
        /// The operator.
        op: Op,
        /// The value(s).
        rhs: Rhs,
        /// Byte offset of the field in the condition text.
        offset: usize,
    },
}

/// Parses a condition.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
    };
    p.blank();
    if p.at_end() {
        return Err(p.error("the condition is empty"));
    }
    let expr = p.parse_or()?;
    p.blank();
    if !p.at_end() {
        return Err(p.error(
            "unexpected text after a complete expression: expected 'and', 'or' or the end",
        ));
    }
    Ok(expr)
}

/// Resolves a quoted literal as Falco's parser does (`"a\"b"` → `a"b`). Returns `None` when
/// `s` is not exactly one well-formed quoted string. List items and exception values that are
/// written with quotes (`'"sh -c uname"'` in YAML) are read through this.
pub fn unquote(s: &str) -> Option<String> {
    let mut p = Parser {
        src: s,
        pos: 0,
        depth: 0,
    };
    match p.quoted() {
        Ok(Some(text)) if p.at_end() => Some(text),
        _ => None,
    }
}

const STR_OPS: &[(&str, Op)] = &[
    ("contains", Op::Contains),
    ("icontains", Op::IContains),
    ("startswith", Op::StartsWith),
    ("endswith", Op::EndsWith),
    ("glob", Op::Glob),
    ("iglob", Op::IGlob),
    ("in", Op::In),
    ("intersects", Op::Intersects),
    ("pmatch", Op::Pmatch),
    ("exists", Op::Exists),
];

/// Falco operators habitd does not implement, named so that the error says so plainly.
const UNSUPPORTED_OPS: &[&str] = &["bcontains", "bstartswith", "regex"];

/// Falco's field transformers (`tolower(proc.name)`), which habitd does not implement.
const TRANSFORMERS: &[&str] = &["tolower", "toupper", "b64", "basename", "val", "len"];

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let near: String = self.src[offset.min(self.src.len())..]
            .chars()
            .take_while(|c| *c != '\n')
            .take(24)
            .collect();
        ParseError {
            message: message.into(),
            offset,
            line,
            column,
            near,
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.pos, message)
    }

    /// Skips blanks; true if there were any.
    fn blank(&mut self) -> bool {
        let start = self.pos;
        let skipped = self
            .rest()
            .find(|c: char| !matches!(c, ' ' | '\t' | '\r' | '\n' | '\x08'))
            .unwrap_or(self.rest().len());
        self.pos += skipped;
        self.pos > start
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes the keyword `word` if it stands alone here (followed by a blank, `(` or the
    /// end), and nothing else.
    fn keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if !rest.starts_with(word) {
            return false;
        }
        match rest[word.len()..].chars().next() {
            None | Some(' ' | '\t' | '\r' | '\n' | '(') => {
                self.pos += word.len();
                true
            }
            _ => false,
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut children = vec![self.parse_and()?];
        loop {
            self.blank();
            if !self.keyword("or") {
                break;
            }
            self.blank();
            children.push(self.parse_and()?);
        }
        self.depth -= 1;
        Ok(if children.len() == 1 {
            children.remove(0)
        } else {
            Expr::Or(children)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut children = vec![self.parse_not()?];
        loop {
            self.blank();
            if !self.keyword("and") {
                break;
            }
            self.blank();
            children.push(self.parse_not()?);
        }
        self.depth -= 1;
        Ok(if children.len() == 1 {
            children.remove(0)
        } else {
            Expr::And(children)
        })
    }

    fn parse_not(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        self.blank();
        let expr = if self.keyword("not") {
            self.blank();
            Expr::Not(Box::new(self.parse_not()?))
        } else {
            self.parse_check()?
        };
        self.depth -= 1;
        Ok(expr)
    }

    fn parse_check(&mut self) -> Result<Expr, ParseError> {
        self.blank();
        let start = self.pos;
        if self.eat("(") {
            let inner = self.parse_or()?;
            self.blank();
            if !self.eat(")") {
                let opened = self.error_at(start, "");
                return Err(self.error(format!(
                    "the '(' at {} is not closed: expected ')'",
                    fmt_position(opened.line, opened.column)
                )));
            }
            return Ok(inner);
        }
        let Some(ident) = self.identifier() else {
            return Err(match self.peek() {
                None => {
                    self.error("expected a field check, a macro name or '(' but the condition ends")
                }
                Some(')') => {
                    self.error("unexpected ')': expected a field check, a macro name or '('")
                }
                Some(_) => self.error("expected a field check, a macro name or '('"),
            });
        };
        // A field name has at least two dotted parts, each starting with a letter.
        let mut name_end = self.pos;
        while self.rest().starts_with('.')
            && self.rest()[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
        {
            self.pos += 1;
            self.identifier();
            name_end = self.pos;
        }
        if name_end == start + ident.len() {
            if self.peek() == Some('(') && TRANSFORMERS.contains(&ident) {
                return Err(self.error_at(
                    start,
                    format!("field transformers such as '{ident}(...)' are not supported"),
                ));
            }
            return Ok(Expr::Macro {
                name: ident.to_owned(),
                offset: start,
            });
        }
        let name = self.src[start..name_end].to_owned();
        let arg = if self.eat("[") {
            let arg = match self.quoted()? {
                Some(text) => text,
                None => {
                    let bare = self
                        .take_while(|c| !matches!(c, '[' | ']' | '"' | '\'') && !c.is_whitespace());
                    if bare.is_empty() {
                        return Err(self.error(format!(
                            "expected an argument for '{name}[...]': a quoted or bare string"
                        )));
                    }
                    bare.to_owned()
                }
            };
            if !self.eat("]") {
                return Err(self.error(format!("expected ']' closing the argument of '{name}'")));
            }
            Some(arg)
        } else {
            None
        };
        let field = FieldName { name, arg };
        let (op, rhs) = self.parse_condition(&field)?;
        Ok(Expr::Check {
            field,
            op,
            rhs,
            offset: start,
        })
    }

    fn parse_condition(&mut self, field: &FieldName) -> Result<(Op, Rhs), ParseError> {
        self.blank();
        let op_start = self.pos;
        let op = if self.eat("==") || self.eat("=") {
            Op::Eq
        } else if self.eat("!=") {
            Op::Ne
        } else if self.eat("<=") {
            Op::Le
        } else if self.eat("<") {
            Op::Lt
        } else if self.eat(">=") {
            Op::Ge
        } else if self.eat(">") {
            Op::Gt
        } else {
            let word = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some(&(_, op)) = STR_OPS.iter().find(|(w, _)| *w == word) else {
                let message = if word.is_empty() {
                    format!("expected an operator after '{field}'")
                } else if UNSUPPORTED_OPS.contains(&word) {
                    format!("operator '{word}' is not supported")
                } else {
                    format!(
                        "'{word}' is not an operator: expected one of =, !=, <, <=, >, >=, \
                         contains, icontains, startswith, endswith, glob, iglob, in, \
                         intersects, pmatch, exists"
                    )
                };
                return Err(self.error_at(op_start, message));
            };
            // A word operator stands alone: `containsx` is no operator.
            match self.peek() {
                None | Some(' ' | '\t' | '\r' | '\n') => {}
                Some('(') if op.takes_list() => {}
                Some(')') if op == Op::Exists => {}
                Some(_) => {
                    return Err(self.error_at(
                        op_start,
                        format!("expected a blank after the operator '{word}'"),
                    ));
                }
            }
            op
        };
        if op == Op::Exists {
            return Ok((op, Rhs::None));
        }
        self.blank();
        if op.takes_list() {
            return self.list_value(op).map(|rhs| (op, rhs));
        }
        let offset = self.pos;
        let value = match op {
            Op::Lt | Op::Le | Op::Gt | Op::Ge => self.number(),
            _ => self.string()?,
        };
        match value {
            Some((text, quoted)) => Ok((
                op,
                Rhs::Value(Literal {
                    text,
                    quoted,
                    offset,
                }),
            )),
            None => Err(self.error(match op {
                Op::Lt | Op::Le | Op::Gt | Op::Ge => format!("expected a number after '{op}'"),
                _ => format!("expected a value after '{op}'"),
            })),
        }
    }

    fn list_value(&mut self, op: Op) -> Result<Rhs, ParseError> {
        if self.eat("(") {
            let mut items = Vec::new();
            self.blank();
            if self.eat(")") {
                return Ok(Rhs::List(items));
            }
            loop {
                self.blank();
                let offset = self.pos;
                let Some((text, quoted)) = self.string()? else {
                    return Err(self.error(format!("expected a value in the list of '{op}'")));
                };
                items.push(Literal {
                    text,
                    quoted,
                    offset,
                });
                self.blank();
                if self.eat(",") {
                    continue;
                }
                if self.eat(")") {
                    return Ok(Rhs::List(items));
                }
                return Err(self.error("expected ',' or ')' in a list"));
            }
        }
        let offset = self.pos;
        match self.identifier() {
            Some(name) => Ok(Rhs::ListName(Literal {
                text: name.to_owned(),
                quoted: false,
                offset,
            })),
            None => Err(self.error(format!(
                "expected a list '(a, b, ...)' or a list name after '{op}'"
            ))),
        }
    }

    /// `[A-Za-z][A-Za-z0-9_]*`
    fn identifier(&mut self) -> Option<&'a str> {
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            return None;
        }
        Some(self.take_while(|c| c.is_ascii_alphanumeric() || c == '_'))
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !f(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// A quoted or bare string; `None` if there is none here.
    fn string(&mut self) -> Result<Option<(String, bool)>, ParseError> {
        if let Some(text) = self.quoted()? {
            return Ok(Some((text, true)));
        }
        let bare = self
            .take_while(|c| !matches!(c, '(' | ')' | '"' | '\'' | '=' | ',') && !c.is_whitespace());
        Ok((!bare.is_empty()).then(|| (bare.to_owned(), false)))
    }

    /// A decimal or hexadecimal number, as text; `None` if there is none here.
    fn number(&mut self) -> Option<(String, bool)> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        let starts_like_number = text
            .trim_start_matches(['+', '-'])
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit());
        if !starts_like_number {
            return None;
        }
        self.pos += len;
        Some((text.to_owned(), false))
    }

    /// A quoted string with escapes resolved; `Ok(None)` if no quote starts here.
    fn quoted(&mut self) -> Result<Option<String>, ParseError> {
        let Some(quote) = self.peek().filter(|c| *c == '"' || *c == '\'') else {
            return Ok(None);
        };
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + c.len_utf8();
                return Ok(Some(out));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((j, escaped)) = chars.next() else {
                break;
            };
            out.push(match escaped {
                'b' => '\x08',
                'f' => '\x0c',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                ' ' => '\\',
                '\\' => '\\',
                '/' => '/',
                '"' | '\'' if escaped == quote => escaped,
                other => {
                    return Err(self.error_at(
                        start + j - 1,
                        format!("unsupported escape sequence '\\{other}' in a quoted string"),
                    ));
                }
            });
        }
        Err(self.error_at(start, "unterminated quoted string"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn check(name: &str, op: Op, value: &str) -> Expr {
        Expr::Check {
            field: FieldName {
                name: name.into(),
                arg: None,
            },
            op,
            rhs: Rhs::Value(Literal {
                text: value.into(),
                quoted: false,
                offset: 0,
            }),
            offset: 0,
        }
    }

    /// Offsets make trees hard to compare by hand; zero them.
    fn strip(e: Expr) -> Expr {
        match e {
            Expr::And(v) => Expr::And(v.into_iter().map(strip).collect()),
            Expr::Or(v) => Expr::Or(v.into_iter().map(strip).collect()),
            Expr::Not(e) => Expr::Not(Box::new(strip(*e))),
            Expr::Macro { name, .. } => Expr::Macro { name, offset: 0 },
            Expr::Check { field, op, rhs, .. } => {
                let zero = |l: Literal| Literal { offset: 0, ..l };
                let rhs = match rhs {
                    Rhs::Value(l) => Rhs::Value(zero(l)),
                    Rhs::List(v) => Rhs::List(v.into_iter().map(zero).collect()),
                    Rhs::ListName(l) => Rhs::ListName(zero(l)),
                    Rhs::None => Rhs::None,
                };
                Expr::Check {
                    field,
                    op,
                    rhs,
                    offset: 0,
                }
            }
        }
    }

    fn p(s: &str) -> Expr {
        strip(parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn precedence_not_and_or() {
        let m = |n: &str| Expr::Macro {
            name: n.into(),
            offset: 0,
        };
        assert_eq!(
            p("a or b and c"),
            Expr::Or(vec![m("a"), Expr::And(vec![m("b"), m("c")])])
        );
        assert_eq!(
            p("not a and b"),
            Expr::And(vec![Expr::Not(Box::new(m("a"))), m("b")])
        );
        assert_eq!(
            p("(a or b) and not (c)"),
            Expr::And(vec![
                Expr::Or(vec![m("a"), m("b")]),
                Expr::Not(Box::new(m("c")))
            ])
        );
        assert_eq!(
            p("not not a"),
            Expr::Not(Box::new(Expr::Not(Box::new(m("a")))))
        );
        assert_eq!(p("not(a)"), Expr::Not(Box::new(m("a"))));
        assert_eq!(p("a and(b)"), Expr::And(vec![m("a"), m("b")]));
        // Words that merely start like keywords are names.
        assert_eq!(
            p("nothing or order"),
            Expr::Or(vec![m("nothing"), m("order")])
        );
    }

    #[test]
    fn checks_and_values() {
        assert_eq!(p("proc.name=bash"), check("proc.name", Op::Eq, "bash"));
        assert_eq!(p("proc.name == bash"), check("proc.name", Op::Eq, "bash"));
        assert_eq!(p("proc.name!=\"sshd\""), {
            let mut e = check("proc.name", Op::Ne, "sshd");
            if let Expr::Check {
                rhs: Rhs::Value(l), ..
            } = &mut e
            {
                l.quoted = true;
            }
            e
        });
        assert_eq!(p("fd.num>=0"), check("fd.num", Op::Ge, "0"));
        assert_eq!(p("fd.num=-1"), check("fd.num", Op::Eq, "-1"));
        assert_eq!(p("proc.tty != 0"), check("proc.tty", Op::Ne, "0"));
        assert_eq!(
            p("fd.name startswith /etc/"),
            check("fd.name", Op::StartsWith, "/etc/")
        );
        assert_eq!(
            p("proc.duration <= 5000000000"),
            check("proc.duration", Op::Le, "5000000000")
        );
        assert_eq!(
            p("evt.rawarg.flags > 0x10"),
            check("evt.rawarg.flags", Op::Gt, "0x10")
        );
        assert!(matches!(
            p("proc.pname exists"),
            Expr::Check {
                op: Op::Exists,
                rhs: Rhs::None,
                ..
            }
        ));
        match p("proc.aname[2]=linux-bench") {
            Expr::Check { field, .. } => {
                assert_eq!(field.name, "proc.aname");
                assert_eq!(field.arg.as_deref(), Some("2"));
            }
            other => panic!("{other:?}"),
        }
        match p("proc.pname in (runc:[0:PARENT], \"puma reactor\", 'a\\'b', shells)") {
            Expr::Check {
                op: Op::In,
                rhs: Rhs::List(items),
                ..
            } => {
                let texts: Vec<_> = items.iter().map(|l| (l.text.as_str(), l.quoted)).collect();
                assert_eq!(
                    texts,
                    [
                        ("runc:[0:PARENT]", false),
                        ("puma reactor", true),
                        ("a'b", true),
                        ("shells", false)
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(p("proc.name in ()"), Expr::Check { rhs: Rhs::List(v), .. } if v.is_empty())
        );
        assert!(matches!(
            p("proc.name in shell_binaries"),
            Expr::Check {
                rhs: Rhs::ListName(_),
                ..
            }
        ));
        assert!(matches!(
            p("proc.name in(a,b)"),
            Expr::Check { rhs: Rhs::List(v), .. } if v.len() == 2
        ));
    }

    #[test]
    fn folded_multiline_conditions_parse() {
        let text = "open_read\n    and (fd.name in (a, b) or\n      fd.directory in (/etc/pam.d))\n    and not proc.name in (x)\n";
        assert!(matches!(p(text), Expr::And(v) if v.len() == 3));
    }

    #[test]
    fn errors_carry_position() {
        let e = parse("proc.name = bash and (fd.name = x").unwrap_err();
        assert_eq!(e.column, 34);
        assert_eq!(
            e.to_string(),
            "the '(' at column 22 is not closed: expected ')' at column 34 (end of condition)"
        );
        let e = parse("proc.name bogus x").unwrap_err();
        assert_eq!((e.line, e.column), (1, 11));
        assert!(e.to_string().contains("'bogus' is not an operator"), "{e}");
        let e = parse("a and\n  proc.name = ").unwrap_err();
        assert_eq!((e.line, e.column), (2, 15));
        assert!(e.to_string().contains("line 2 column 15"), "{e}");
        let e = parse("proc.name = \"unterminated").unwrap_err();
        assert_eq!(e.column, 13);
        let e = parse("a b").unwrap_err();
        assert_eq!(e.column, 3);
        assert!(e.message.contains("expected 'and', 'or'"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse("tolower(proc.name) = bash").unwrap_err();
        assert!(e.message.contains("transformers"), "{e}");
        let e = parse("fd.num > abc").unwrap_err();
        assert!(e.message.contains("expected a number"), "{e}");
        let e = parse("proc.name bcontains 41").unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
        let e = parse("a and )").unwrap_err();
        assert!(e.message.contains("unexpected ')'"), "{e}");
        let e = parse(&"(".repeat(500)).unwrap_err();
        assert!(e.message.contains("nesting"), "{e}");
    }

    #[test]
    fn unquote_resolves_escapes() {
        assert_eq!(unquote("\"(systemd)\"").as_deref(), Some("(systemd)"));
        assert_eq!(
            unquote(r#""sh -c node -e \"require('nan')\"""#).as_deref(),
            Some(r#"sh -c node -e "require('nan')""#)
        );
        assert_eq!(unquote("'a'").as_deref(), Some("a"));
        assert_eq!(unquote("plain"), None);
        assert_eq!(unquote("\"a\" b"), None);
    }
}
