//! [`MapEvent`]: an event described by a map of field names to values, for tests and offline
//! tools (`habitctl`), where there is no kernel event behind the fields.

use std::collections::HashMap;

use super::field::{EventFields, Field, FieldArg, FieldRef, Value};

/// An event given as field values: `MapEvent::new().with("evt.type", "execve")`.
///
/// Keys are Falco field spellings (`proc.aname[2]`, `evt.arg.flags` or `evt.arg[flags]`); they
/// are normalised, so either spelling finds the other. A key that names no field is kept but
/// never read (see [`MapEvent::unknown_keys`]).
///
/// The process lineage can be given once: `proc.aname` as a list, parent first. Then
/// `proc.pname` and `proc.aname[N]` answer from it unless set explicitly, and
/// `proc.aname[0]` is `proc.name`, as in Falco.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapEvent {
    values: HashMap<FieldRef, Value<'static>, ahash::RandomState>,
    /// Keys that name no field: kept so that they can be reported.
    unknown: HashMap<String, Value<'static>, ahash::RandomState>,
}

/// A JSON event that is not an object of field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapEventError {
    /// The JSON is not an object.
    #[error("an event must be a JSON object of field names to values")]
    NotAnObject,
    /// A value is not a string, number, boolean or array of those.
    #[error("the value of '{0}' must be a string, an integer, a boolean or an array of those")]
    BadValue(String),
}

impl MapEvent {
    /// An event without fields.
    pub fn new() -> MapEvent {
        MapEvent::default()
    }

    /// Sets a field (builder style).
    #[must_use]
    pub fn with<'a>(mut self, key: &str, value: impl Into<Value<'a>>) -> MapEvent {
        self.set(key, value);
        self
    }

    /// Sets a field.
    pub fn set<'a>(&mut self, key: &str, value: impl Into<Value<'a>>) -> &mut MapEvent {
        let value = value.into().into_owned();
        match FieldRef::parse(key) {
            Ok(field) => {
                self.values.insert(field, value);
            }
            Err(_) => {
                self.unknown.insert(key.to_owned(), value);
            }
        }
        self
    }

    /// Removes a field.
    pub fn remove(&mut self, key: &str) -> Option<Value<'static>> {
        match FieldRef::parse(key) {
            Ok(field) => self.values.remove(&field),
            Err(_) => self.unknown.remove(key),
        }
    }

    /// The keys that name no supported field (likely typos in a test or an event file).
    pub fn unknown_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.unknown.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// Builds an event from a JSON object such as
    /// `{"evt.type": "execve", "proc.name": "bash", "user.uid": 0, "proc.aname": ["sshd"]}`.
    pub fn from_json(json: &serde_json::Value) -> Result<MapEvent, MapEventError> {
        fn convert(key: &str, v: &serde_json::Value) -> Result<Value<'static>, MapEventError> {
            Ok(match v {
                serde_json::Value::String(s) => Value::from(s.clone()),
                serde_json::Value::Bool(b) => Value::Bool(*b),
                serde_json::Value::Number(n) => Value::Num(
                    n.as_i64()
                        .ok_or_else(|| MapEventError::BadValue(key.into()))?,
                ),
                serde_json::Value::Array(items) => Value::List(
                    items
                        .iter()
                        .map(|i| convert(key, i))
                        .collect::<Result<_, _>>()?,
                ),
                serde_json::Value::Null | serde_json::Value::Object(_) => {
                    return Err(MapEventError::BadValue(key.into()));
                }
            })
        }
        let object = json.as_object().ok_or(MapEventError::NotAnObject)?;
        let mut event = MapEvent::new();
        for (key, value) in object {
            event.set(key, convert(key, value)?);
        }
        Ok(event)
    }

    fn lookup(&self, field: Field, arg: Option<&FieldArg>) -> Option<&Value<'static>> {
        // No allocation unless the argument is a name.
        self.values.get(&FieldRef {
            field,
            arg: arg.cloned(),
        })
    }

    fn ancestor(&self, name_field: Field, list_field: Field, n: u32) -> Option<Value<'_>> {
        match n {
            0 => self.lookup(name_field, None).map(borrow),
            n => match self.lookup(list_field, None) {
                Some(Value::List(items)) => items.get(n as usize - 1).map(borrow),
                _ => None,
            },
        }
    }
}

/// A borrowed view of a stored value (no copy of text).
fn borrow<'a>(v: &'a Value<'static>) -> Value<'a> {
    match v {
        Value::Str(s) => Value::str(s),
        Value::List(items) => Value::List(items.iter().map(borrow).collect()),
        other => other.clone(),
    }
}

impl EventFields for MapEvent {
    fn get(&self, field: Field, arg: Option<&FieldArg>) -> Option<Value<'_>> {
        if let Some(v) = self.lookup(field, arg) {
            return Some(borrow(v));
        }
        // Derive lineage fields from one another, as a process table would.
        let (name, list) = match field {
            Field::ProcAname | Field::ProcPname => (Field::ProcName, Field::ProcAname),
            Field::ProcAexe | Field::ProcPexe => (Field::ProcExe, Field::ProcAexe),
            Field::ProcAexepath | Field::ProcPexepath => (Field::ProcExepath, Field::ProcAexepath),
            Field::ProcApid | Field::ProcPpid => (Field::ProcPid, Field::ProcApid),
            Field::ProcAcmdline | Field::ProcPcmdline => (Field::ProcCmdline, Field::ProcAcmdline),
            _ => return None,
        };
        let parent = match list {
            Field::ProcAname => Field::ProcPname,
            Field::ProcAexe => Field::ProcPexe,
            Field::ProcAexepath => Field::ProcPexepath,
            Field::ProcApid => Field::ProcPpid,
            _ => Field::ProcPcmdline,
        };
        if field == parent {
            return self.ancestor(name, list, 1);
        }
        match arg.and_then(FieldArg::index) {
            Some(1) => self
                .lookup(parent, None)
                .map(borrow)
                .or_else(|| self.ancestor(name, list, 1)),
            Some(n) => self.ancestor(name, list, n),
            // The whole chain, parent first: from the parent alone if that is all there is.
            None => self
                .lookup(parent, None)
                .map(|p| Value::List(vec![borrow(p)])),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn lineage_is_derived() {
        let ev = MapEvent::new()
            .with("proc.name", "sh")
            .with("proc.aname", vec!["nginx", "containerd-shim", "systemd"]);
        assert_eq!(ev.get(Field::ProcPname, None), Some(Value::str("nginx")));
        let idx = |i| Some(FieldArg::Index(i));
        assert_eq!(
            ev.get(Field::ProcAname, idx(0).as_ref()),
            Some(Value::str("sh"))
        );
        assert_eq!(
            ev.get(Field::ProcAname, idx(3).as_ref()),
            Some(Value::str("systemd"))
        );
        assert_eq!(ev.get(Field::ProcAname, idx(4).as_ref()), None);
        let ev = MapEvent::new().with("proc.pname", "bash");
        assert_eq!(
            ev.get(Field::ProcAname, None),
            Some(Value::List(vec![Value::str("bash")]))
        );
        assert_eq!(
            ev.get(Field::ProcAname, idx(1).as_ref()),
            Some(Value::str("bash"))
        );
    }

    #[test]
    fn keys_are_normalised_and_json_loads() {
        let ev = MapEvent::new().with("evt.arg[flags]", "O_TRUNC");
        assert_eq!(
            ev.get(Field::EvtArg, Some(&FieldArg::Key("flags".into()))),
            Some(Value::str("O_TRUNC"))
        );
        let json = serde_json::json!({"evt.type": "execve", "user.uid": 0, "x.y": true, "proc.aname": ["a"]});
        let ev = MapEvent::from_json(&json).unwrap();
        assert_eq!(ev.get(Field::UserUid, None), Some(Value::Num(0)));
        assert_eq!(ev.unknown_keys(), ["x.y"]);
        assert!(MapEvent::from_json(&serde_json::json!([1])).is_err());
        assert!(MapEvent::from_json(&serde_json::json!({"a.b": null})).is_err());
    }
}
