//! Pre-compiled string matchers: shell globs, path-prefix sets and case-insensitive search.
//!
//! These are small on purpose. Falco's `glob` is `fnmatch(3)` without `FNM_PATHNAME` (so `*`
//! also matches `/`) and without escapes; a regex engine would be a large dependency for that,
//! and compiling a glob into tokens once lets matching run without allocating.

use std::collections::HashSet;

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Literal text.
    Lit(Box<str>),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters, `/` included.
    Star,
    /// `[...]`: a character class.
    Class {
        negated: bool,
        ranges: Box<[(char, char)]>,
    },
}

/// A compiled shell glob (`*`, `?`, `[a-z]`, `[!x]`), optionally ignoring ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Box<[Token]>,
    fold_case: bool,
}

impl Glob {
    /// Compiles `pattern`. A `[` without its `]` is a literal `[`, as in `fnmatch`.
    pub fn new(pattern: &str, fold_case: bool) -> Glob {
        let fold = |s: &str| {
            if fold_case {
                s.to_ascii_lowercase()
            } else {
                s.to_owned()
            }
        };
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let special = match c {
                '*' => Some((Token::Star, 1)),
                '?' => Some((Token::Any, 1)),
                '[' => parse_class(&chars[i..], fold_case),
                _ => None,
            };
            match special {
                Some((token, len)) => {
                    if !lit.is_empty() {
                        tokens.push(Token::Lit(fold(&lit).into()));
                        lit.clear();
                    }
                    // `**` is the same as `*`.
                    if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                        tokens.push(token);
                    }
                    i += len;
                }
                None => {
                    lit.push(c);
                    i += 1;
                }
            }
        }
        if !lit.is_empty() {
            tokens.push(Token::Lit(fold(&lit).into()));
        }
        Glob {
            tokens: tokens.into(),
            fold_case,
        }
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        // Iterative matching with backtracking to the last `*` only: linear in practice, and
        // never exponential, whatever the pattern.
        let text: &[u8] = text.as_bytes();
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            if p < self.tokens.len() {
                match &self.tokens[p] {
                    Token::Star => {
                        star = Some((p, t));
                        p += 1;
                        continue;
                    }
                    Token::Lit(lit) => {
                        let lit = lit.as_bytes();
                        let end = t + lit.len();
                        if end <= text.len() && self.eq(&text[t..end], lit) {
                            t = end;
                            p += 1;
                            continue;
                        }
                    }
                    Token::Any => {
                        if let Some(len) = char_len(text, t) {
                            t += len;
                            p += 1;
                            continue;
                        }
                    }
                    Token::Class { negated, ranges } => {
                        if let Some((c, len)) = char_at(text, t) {
                            let c = if self.fold_case {
                                c.to_ascii_lowercase()
                            } else {
                                c
                            };
                            let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                            if inside != *negated {
                                t += len;
                                p += 1;
                                continue;
                            }
                        }
                    }
                }
            } else if t == text.len() {
                return true;
            }
            // Mismatch: let the last `*` swallow one more character, or fail.
            match star {
                Some((sp, st)) => match char_len(text, st) {
                    Some(len) => {
                        star = Some((sp, st + len));
                        p = sp + 1;
                        t = st + len;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }

    fn eq(&self, a: &[u8], b: &[u8]) -> bool {
        if self.fold_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }
}

fn char_at(text: &[u8], at: usize) -> Option<(char, usize)> {
    let rest = text.get(at..)?;
    // `text` came from a `&str` and `at` is always on a character boundary.
    let s = std::str::from_utf8(&rest[..rest.len().min(4)])
        .or_else(|e| std::str::from_utf8(&rest[..e.valid_up_to()]))
        .ok()?;
    s.chars().next().map(|c| (c, c.len_utf8()))
}

fn char_len(text: &[u8], at: usize) -> Option<usize> {
    char_at(text, at).map(|(_, len)| len)
}

/// Parses `[...]` at the start of `chars`; `None` if it is not a complete class.
fn parse_class(chars: &[char], fold_case: bool) -> Option<(Token, usize)> {
    let mut i = 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        let fold = |c: char| {
            if fold_case { c.to_ascii_lowercase() } else { c }
        };
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            let hi = chars[i + 2];
            ranges.push((fold(c), fold(hi)));
            i += 3;
        } else {
            ranges.push((fold(c), fold(c)));
            i += 1;
        }
    }
    Some((
        Token::Class {
            negated,
            ranges: ranges.into(),
        },
        i + 1,
    ))
}

/// A set of paths for `pmatch`: a path matches when it is one of them or lies below one of
/// them (`/etc` matches `/etc` and `/etc/passwd`, not `/etcfoo`).
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    prefixes: HashSet<Box<str>, ahash::RandomState>,
    root: bool,
}

impl PathSet {
    /// Builds the set from the listed paths.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> PathSet {
        let mut set = PathSet::default();
        for path in paths {
            let trimmed = path.trim_end_matches('/');
            if trimmed.is_empty() {
                set.root = path.starts_with('/');
                if !set.root {
                    continue;
                }
            } else {
                set.prefixes.insert(trimmed.into());
            }
        }
        set
    }

    /// Whether `path` is one of the paths or below one of them.
    pub fn is_match(&self, path: &str) -> bool {
        if self.root && path.starts_with('/') {
            return true;
        }
        let path = path.trim_end_matches('/');
        if self.prefixes.contains(path) {
            return true;
        }
        // Every proper prefix that ends just before a `/`.
        path.match_indices('/')
            .any(|(i, _)| i > 0 && self.prefixes.contains(&path[..i]))
    }
}

/// Whether `haystack` contains `needle_lower` (already ASCII-lower-cased), ignoring ASCII case,
/// without allocating a lower-cased copy of the haystack (Falco's `icontains` is ASCII-only).
pub fn contains_ignore_ascii_case(haystack: &str, needle_lower: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle_lower.as_bytes());
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    let first = n[0];
    (0..=h.len() - n.len())
        .any(|i| h[i].to_ascii_lowercase() == first && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_fnmatch_without_pathname() {
        let g = Glob::new("/home/*/.ssh/*", false);
        assert!(g.is_match("/home/alice/.ssh/id_rsa"));
        assert!(g.is_match("/home/a/b/.ssh/x"), "* crosses /");
        assert!(!g.is_match("/root/.ssh/id_rsa"));
        let g = Glob::new("*../*../*", false);
        assert!(g.is_match("/var/www/../../etc/passwd"));
        assert!(!g.is_match("/var/www/../etc/passwd"));
        assert!(Glob::new("a?c", false).is_match("abc"));
        assert!(!Glob::new("a?c", false).is_match("ac"));
        assert!(Glob::new("[a-c]x", false).is_match("bx"));
        assert!(!Glob::new("[!a-c]x", false).is_match("bx"));
        assert!(Glob::new("[!a-c]x", false).is_match("dx"));
        assert!(
            Glob::new("a[", false).is_match("a["),
            "unclosed [ is literal"
        );
        assert!(Glob::new("*", false).is_match(""));
        assert!(Glob::new("é*", false).is_match("été"));
        assert!(Glob::new("?t?", false).is_match("été"));
        assert!(!Glob::new("abc", false).is_match("ABC"));
        assert!(Glob::new("a*C", true).is_match("ABc"));
        assert!(Glob::new("[A-C]", true).is_match("b"));
        // Pathological patterns stay fast.
        let g = Glob::new(&"*a".repeat(20), false);
        assert!(!g.is_match(&"a".repeat(19)));
    }

    #[test]
    fn path_set_matches_components() {
        let s = PathSet::new(["/etc", "/usr/lib/"]);
        assert!(s.is_match("/etc"));
        assert!(s.is_match("/etc/"));
        assert!(s.is_match("/etc/passwd"));
        assert!(s.is_match("/usr/lib/x/y"));
        assert!(!s.is_match("/etcfoo"));
        assert!(!s.is_match("/usr"));
        assert!(PathSet::new(["/"]).is_match("/anything"));
    }

    #[test]
    fn icontains_ignores_ascii_case() {
        assert!(contains_ignore_ascii_case(
            "export AWS_ACCESS_KEY_ID=x",
            "aws_access_key_id"
        ));
        assert!(!contains_ignore_ascii_case("abc", "abcd"));
        assert!(contains_ignore_ascii_case("abc", ""));
    }
}
