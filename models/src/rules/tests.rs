//! Tests of the engine on small rule files: operators, lists, macros, append and override,
//! exceptions, the report, the event-type index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Loads `yaml` and panics with the report if anything is wrong.
fn load_clean(yaml: &str) -> RuleSet {
    let (set, report) = RuleSet::load_str("test.yaml", yaml);
    assert!(report.problems().is_empty(), "{report}");
    set
}

/// A rules file with one rule of this condition.
fn one_rule(condition: &str) -> String {
    format!(
        "- rule: R\n  desc: d\n  condition: {}\n  output: out\n  priority: WARNING\n",
        serde_json::to_string(condition).unwrap()
    )
}

/// Whether the one rule of `condition` matches `event`.
fn holds(condition: &str, event: &MapEvent) -> bool {
    let (set, report) = RuleSet::load_str("test.yaml", &one_rule(condition));
    assert!(report.is_clean(), "{condition}: {report}");
    assert_eq!(set.len(), 1, "{condition}: {report}");
    set.rules()[0].matches(event)
}

fn names(set: &RuleSet, event: &MapEvent) -> Vec<String> {
    let mut out = Vec::new();
    set.matching_rules(event, &mut out);
    out.iter().map(|r| r.name().to_owned()).collect()
}

fn ev() -> MapEvent {
    MapEvent::new()
        .with("evt.type", "openat")
        .with("proc.name", "Bash")
        .with("proc.cmdline", "bash -c 'cat /etc/shadow'")
        .with("fd.name", "/etc/shadow")
        .with("fd.num", 3)
        .with("user.uid", 1000)
        .with("evt.is_open_read", true)
        .with("fd.sip", "10.1.2.3")
        .with("fd.types", vec!["file", "ipv4"])
        .with("proc.aname", vec!["sshd", "systemd"])
}

#[test]
fn each_operator() {
    let e = ev();
    let cases: &[(&str, bool)] = &[
        ("fd.name = /etc/shadow", true),
        ("fd.name == \"/etc/shadow\"", true),
        ("fd.name = /etc/passwd", false),
        ("fd.name != /etc/passwd", true),
        ("fd.name != /etc/shadow", false),
        ("user.uid = 1000", true),
        ("user.uid != 0", true),
        ("user.uid < 1001", true),
        ("user.uid <= 1000", true),
        ("user.uid > 1000", false),
        ("user.uid >= 1000", true),
        ("user.uid > 0x3e7", true),
        ("fd.num = -1", false),
        ("user.uid in (0, 1000)", true),
        ("user.uid in (0, 1)", false),
        ("proc.name in (bash, Bash)", true),
        ("proc.name in (bash)", false),
        ("proc.name intersects (Bash, zsh)", true),
        ("fd.types intersects (ipv4, ipv6)", true),
        ("fd.types in (file, ipv4, unix)", true),
        ("fd.types in (file, unix)", false),
        ("proc.cmdline contains /etc/shadow", true),
        ("proc.cmdline contains SHADOW", false),
        ("proc.cmdline icontains SHADOW", true),
        ("proc.name icontains BASH", true),
        ("fd.name startswith /etc/", true),
        ("fd.name startswith /usr", false),
        ("fd.name endswith shadow", true),
        ("fd.name endswith passwd", false),
        ("fd.name glob '/etc/*'", true),
        ("fd.name glob '/etc/s?adow'", true),
        ("fd.name glob '/usr/*'", false),
        ("proc.name glob 'b*'", false),
        ("proc.name iglob 'b*'", true),
        ("fd.name pmatch (/etc, /usr)", true),
        ("fd.name pmatch (/et)", false),
        ("fd.name exists", true),
        ("fd.directory exists", false),
        ("evt.is_open_read = true", true),
        ("evt.is_open_read != true", false),
        ("evt.is_open_read = false", false),
        ("fd.sip = 10.1.2.3", true),
        ("fd.sip != 10.1.2.4", true),
        ("fd.sip in (\"10.0.0.0/8\", 192.168.0.0/16)", true),
        ("fd.sip in (172.16.0.0/12)", false),
        ("proc.aname = systemd", true),
        ("proc.aname in (init, sshd)", true),
        ("proc.aname[1] = sshd", true),
        ("proc.aname[2] = systemd", true),
        ("proc.aname[0] = Bash", true),
        ("proc.aname[1] = systemd", false),
    ];
    for (condition, want) in cases {
        assert_eq!(holds(condition, &e), *want, "{condition}");
    }
}

#[test]
fn missing_fields_fail_every_check_like_falco() {
    let e = MapEvent::new().with("evt.type", "openat");
    assert!(!holds("proc.name = bash", &e));
    assert!(!holds("proc.name != bash", &e));
    assert!(holds("not proc.name in (bash)", &e));
    assert!(!holds("proc.name exists", &e));
    assert!(holds("not proc.name exists", &e));
}

#[test]
fn boolean_logic_and_precedence() {
    let e = ev();
    assert!(holds("fd.num = 1 or fd.num = 3 and user.uid = 1000", &e));
    assert!(!holds("(fd.num = 1 or fd.num = 3) and user.uid = 0", &e));
    assert!(holds("not fd.num = 1 and not fd.num = 2", &e));
    assert!(!holds("not (fd.num = 3 or fd.num = 2)", &e));
    assert!(holds("not not fd.num = 3", &e));
}

#[test]
fn event_argument_by_name_and_position() {
    let e = MapEvent::new()
        .with("evt.type", "openat")
        .with("evt.arg.flags", "O_WRONLY|O_TRUNC")
        .with("evt.arg[0]", "AT_FDCWD")
        .with("evt.rawarg.mode", 0o644);
    assert!(holds("evt.arg.flags contains O_TRUNC", &e));
    assert!(holds("evt.arg[flags] contains O_TRUNC", &e));
    assert!(holds("evt.arg[0] = AT_FDCWD", &e));
    assert!(holds("evt.rawarg.mode = 420", &e));
}

#[test]
fn lists_nest_and_quoted_items_unquote() {
    let set = load_clean(
        r#"
- list: shells
  items: [bash, sh, '"(systemd)"', "runc:[1:CHILD]", '"sh -c \"x\""', 'sh -c y']
- list: more
  items: [shells, zsh]
- list: numbers
  items: [80, 443, 0x10]
- rule: R
  desc: d
  condition: evt.type = execve and proc.name in (more, fish)
  output: o
  priority: INFO
- rule: Ports
  desc: d
  condition: evt.type = connect and fd.sport in (numbers)
  output: o
  priority: INFO
- rule: Quoted name is a value
  desc: d
  condition: evt.type = execve and proc.name in ("shells")
  output: o
  priority: INFO
"#,
    );
    let exec = |name: &str| {
        MapEvent::new()
            .with("evt.type", "execve")
            .with("proc.name", name)
    };
    for name in [
        "bash",
        "zsh",
        "fish",
        "(systemd)",
        "runc:[1:CHILD]",
        "sh -c \"x\"",
        "sh -c y",
    ] {
        assert_eq!(names(&set, &exec(name)), ["R"], "{name}");
    }
    assert_eq!(names(&set, &exec("more")), Vec::<String>::new());
    assert_eq!(names(&set, &exec("shells")), ["Quoted name is a value"]);
    let connect = |port: i64| {
        MapEvent::new()
            .with("evt.type", "connect")
            .with("fd.sport", port)
    };
    assert_eq!(names(&set, &connect(443)), ["Ports"]);
    assert_eq!(names(&set, &connect(16)), ["Ports"]);
    assert!(names(&set, &connect(22)).is_empty());
}

#[test]
fn list_and_macro_append_and_override() {
    let set = load_clean(
        r#"
- list: bins
  items: [a]
- list: bins
  items: [b]
  override:
    items: append
- list: other
  items: [x]
- list: other
  items: [y]
  override:
    items: replace
- macro: m
  condition: proc.name in (bins)
- macro: m
  condition: or proc.name = c
  override:
    condition: append
- macro: n
  condition: proc.name = never
- macro: n
  condition: proc.name in (other)
  override:
    condition: replace
- rule: M
  desc: d
  condition: evt.type = execve and m
  output: o
  priority: INFO
- rule: N
  desc: d
  condition: evt.type = execve and n
  output: o
  priority: INFO
"#,
    );
    let exec = |name: &str| {
        MapEvent::new()
            .with("evt.type", "execve")
            .with("proc.name", name)
    };
    assert_eq!(names(&set, &exec("a")), ["M"]);
    assert_eq!(names(&set, &exec("b")), ["M"]);
    assert_eq!(names(&set, &exec("c")), ["M"]);
    assert_eq!(names(&set, &exec("y")), ["N"]);
    assert!(names(&set, &exec("x")).is_empty());
    assert!(names(&set, &exec("never")).is_empty());
}

#[test]
fn legacy_append_still_works_with_a_warning() {
    let (set, report) = RuleSet::load_str(
        "t.yaml",
        r#"
- list: bins
  items: [a]
- list: bins
  items: [b]
  append: true
- rule: R
  desc: d
  condition: evt.type = execve and proc.name in (bins)
  output: o
  priority: INFO
- rule: R
  condition: and user.uid = 0
  append: true
"#,
    );
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.warnings().count(), 2, "{report}");
    assert!(report.to_string().contains("deprecated"), "{report}");
    let e = MapEvent::new()
        .with("evt.type", "execve")
        .with("proc.name", "b")
        .with("user.uid", 0);
    assert_eq!(names(&set, &e), ["R"]);
    assert!(names(&set, &e.clone().with("user.uid", 1)).is_empty());
    assert_eq!(
        set.get("R").unwrap().condition_text(),
        "evt.type = execve and proc.name in (bins) and user.uid = 0"
    );
}

#[test]
fn rule_override_append_and_replace() {
    let (set, report) = RuleSet::load_str(
        "t.yaml",
        r#"
- rule: R
  desc: first
  condition: evt.type = execve and proc.name = a
  output: "proc=%proc.name"
  priority: INFO
  tags: [one]
- rule: R
  desc: more
  condition: or proc.name = b
  output: "user=%user.name"
  tags: [two]
  priority: CRITICAL
  override:
    desc: append
    condition: append
    output: append
    tags: append
    priority: replace
- rule: Off
  desc: d
  condition: evt.type = execve
  output: o
  priority: INFO
- rule: Off
  enabled: false
  override:
    enabled: replace
"#,
    );
    assert!(report.is_clean(), "{report}");
    // The append is textual, as in Falco: `evt.type = execve and proc.name = a or proc.name
    // = b` no longer restricts evt.type, and the report says so.
    assert_eq!(report.warnings().count(), 1, "{report}");
    assert!(report.to_string().contains("does not restrict evt.type"));
    let r = set.get("R").unwrap();
    assert_eq!(r.desc(), "first more");
    assert_eq!(r.priority(), Priority::Critical);
    assert_eq!(r.tags(), ["one", "two"]);
    assert_eq!(r.output_text(), "proc=%proc.name user=%user.name");
    let e = MapEvent::new()
        .with("evt.type", "execve")
        .with("proc.name", "b")
        .with("user.name", "root");
    assert!(r.matches(&e));
    assert_eq!(r.render_output(&e), "proc=b user=root");
    assert!(!set.get("Off").unwrap().is_enabled());
    assert_eq!(names(&set, &e), ["R"]);
}

#[test]
fn enabled_only_item_and_redefinition() {
    let mut set = load_clean(
        r#"
- rule: A
  desc: d
  condition: evt.type = execve and proc.name = x
  output: o
  priority: INFO
- rule: B
  desc: d
  condition: evt.type = execve
  output: o
  priority: INFO
- rule: A
  desc: redefined
  condition: evt.type = execve and proc.name = y
  output: o
  priority: ERROR
- rule: B
  enabled: false
"#,
    );
    // A redefinition replaces the rule in place; B is switched off.
    assert_eq!(
        set.rules().iter().map(Rule::name).collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert_eq!(set.get("A").unwrap().priority(), Priority::Error);
    let e = MapEvent::new()
        .with("evt.type", "execve")
        .with("proc.name", "y");
    assert_eq!(names(&set, &e), ["A"]);
    assert!(set.set_enabled("B", true));
    assert_eq!(names(&set, &e), ["A", "B"]);
    assert!(!set.set_enabled("nope", true));
}

#[test]
fn exceptions_single_and_multi_field() {
    let set = load_clean(
        r#"
- list: allowed_dirs
  items: [/usr/lib]
- rule: Write below etc
  desc: d
  condition: evt.type = openat and fd.name startswith /etc
  output: o
  priority: ERROR
  exceptions:
    - name: by_proc
      fields: proc.name
      values: [dpkg, "apt-get"]
    - name: proc_and_file
      fields: [proc.name, fd.name]
      comps: [=, startswith]
      values:
        - [vim, /etc/vim]
    - name: proc_in_list
      fields: [proc.name, fd.directory]
      comps: [in, in]
      values:
        - [[ansible, salt], [/etc/ssh, /etc/ssl]]
        - [nginx, allowed_dirs]
    - name: empty
      fields: [proc.name]
- rule: Write below etc
  exceptions:
    - name: by_proc
      values: [yum]
  override:
    exceptions: append
"#,
    );
    let open = |proc: &str, path: &str| {
        let dir = path.rsplit_once('/').map_or("/", |(d, _)| d);
        MapEvent::new()
            .with("evt.type", "openat")
            .with("proc.name", proc)
            .with("fd.name", path)
            .with("fd.directory", dir)
    };
    let fires = |proc: &str, path: &str| !names(&set, &open(proc, path)).is_empty();
    assert!(fires("bash", "/etc/passwd"));
    assert!(!fires("dpkg", "/etc/passwd"));
    assert!(!fires("apt-get", "/etc/passwd"));
    assert!(!fires("yum", "/etc/passwd"), "appended value");
    assert!(!fires("vim", "/etc/vim/vimrc"));
    assert!(fires("vim", "/etc/passwd"));
    assert!(!fires("salt", "/etc/ssh/sshd_config"));
    assert!(fires("salt", "/etc/pam.d/sshd"));
}

#[test]
fn broken_items_are_reported_and_the_rest_loads() {
    let text = r#"- required_engine_version: 0.57.0
- required_plugin_versions:
    - name: container
      version: 0.4.0
- macro: broken_macro
  condition: proc.name = (oops
- macro: unknown_field_macro
  condition: proc.nope = 1
- rule: Good
  desc: d
  condition: evt.type = execve
  output: ok %proc.name
  priority: NOTICE
- rule: Unknown field
  desc: d
  condition: evt.type = execve and proc.nam = bash
  output: o
  priority: NOTICE
- rule: Syntax error
  desc: d
  condition: evt.type = execve and (proc.name = bash
  output: o
  priority: NOTICE
- rule: Uses broken macro
  desc: d
  condition: evt.type = execve and broken_macro
  output: o
  priority: NOTICE
- rule: Uses bad field in macro
  desc: d
  condition: evt.type = execve and unknown_field_macro
  output: o
  priority: NOTICE
- rule: Undefined macro
  desc: d
  condition: evt.type = execve and no_such_macro
  output: o
  priority: NOTICE
- rule: Bad output
  desc: d
  condition: evt.type = execve
  output: "user=%user.nam"
  priority: NOTICE
- rule: Bad priority
  desc: d
  condition: evt.type = execve
  output: o
  priority: LOUD
- rule: Missing output
  desc: d
  condition: evt.type = execve
  priority: NOTICE
- rule: Bad number
  desc: d
  condition: evt.type = execve and user.uid = root
  output: o
  priority: NOTICE
- rule: Bad operator
  desc: d
  condition: evt.type = execve and user.uid contains 1
  output: o
  priority: NOTICE
- rule: Plugin rule
  desc: d
  condition: ka.verb = create
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: Optional
  desc: d
  condition: evt.type = execve and proc.future_field = 1
  output: o
  priority: NOTICE
  skip-if-unknown-filter: true
- rule: Append to nothing
  condition: and proc.name = x
  override:
    condition: append
"#;
    let (set, report) = RuleSet::load_str("bad.yaml", text);
    let shown = report.to_string();
    assert_eq!(
        set.rules().iter().map(Rule::name).collect::<Vec<_>>(),
        ["Good"],
        "{shown}"
    );
    // "Append to nothing" appends to no rule: it is a problem, not a rule.
    assert_eq!(report.summary(), "loaded 1 of 13 rules", "{shown}");
    assert_eq!(report.rules_skipped(), 12);
    assert!(!report.is_clean());
    let line = |needle: &str| {
        shown
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{shown}"))
            .to_owned()
    };
    assert_eq!(
        line("broken_macro'"),
        "bad.yaml:6: error: macro 'broken_macro': syntax error in condition: expected a value \
         after '=' at column 13 near '(oops'"
    );
    assert_eq!(
        line("'Unknown field'"),
        "bad.yaml:16: error: rule 'Unknown field': unknown field 'proc.nam' at column 23"
    );
    assert!(
        line("'Syntax error'").starts_with(
            "bad.yaml:21: error: rule 'Syntax error': syntax error in condition: the '(' at \
             column 23 is not closed: expected ')' at column 40 (end of condition)"
        ),
        "{shown}"
    );
    assert!(
        line("'Uses broken macro'")
            .contains("uses macro 'broken_macro', which has a syntax error (bad.yaml:5)")
    );
    assert!(line("'Uses bad field in macro'").contains(
        "in macro 'unknown_field_macro' (bad.yaml:7): unknown field 'proc.nope' at column 1"
    ));
    assert!(line("'Undefined macro'").contains("undefined macro 'no_such_macro' at column 23"));
    assert_eq!(
        line("'Bad output'"),
        "bad.yaml:42: error: rule 'Bad output': invalid output field '%user.nam' at column 6: unknown field 'user.nam'"
    );
    assert!(line("'Bad priority'").contains("unknown priority \"LOUD\""));
    assert!(line("'Missing output'").contains("a rule needs 'output'"));
    assert!(line("'Bad number'").contains("'root' is not a valid number for user.uid"));
    assert!(line("'Bad operator'").contains("operator 'contains' cannot be used on user.uid"));
    assert!(
        line("'Plugin rule'").contains("warning: rule 'Plugin rule': skipped: source 'k8s_audit'")
    );
    assert!(
        line("'Optional'").contains("warning: rule 'Optional': skipped (skip-if-unknown-filter)")
    );
    assert!(line("'Append to nothing'").contains("appends to a rule that is not defined earlier"));
    // The problems are in file order.
    let lines: Vec<usize> = report.problems().iter().map(|p| p.location.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
    assert!(shown.ends_with("loaded 1 of 13 rules"));
}

#[test]
fn file_level_problems() {
    let (set, report) = RuleSet::load_str("y.yaml", "- rule: x\n  desc: [unclosed\n");
    assert!(set.is_empty());
    let p = &report.problems()[0];
    assert_eq!((p.kind, p.severity), (ItemKind::File, Severity::Error));
    assert!(p.reason.starts_with("YAML syntax error at line"), "{p}");

    let (_, report) = RuleSet::load_str("m.yaml", "rule: x\n");
    assert!(
        report.to_string().contains("must be a YAML list of items"),
        "{report}"
    );

    let (_, report) = RuleSet::load_str("empty.yaml", "");
    assert!(report.problems().is_empty());
    assert_eq!(report.summary(), "loaded 0 of 0 rules");

    let missing = std::path::Path::new("/nonexistent/rules.yaml");
    let (_, report) = RuleSet::load_files(&[missing]);
    assert_eq!(report.unreadable_files(), [missing]);
    assert!(
        report
            .to_string()
            .starts_with("/nonexistent/rules.yaml: error: file: cannot read")
    );
}

#[test]
fn files_share_one_namespace_in_order() {
    let dir = std::env::temp_dir().join(format!("habit-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.yaml");
    let local = dir.join("local.yaml");
    std::fs::write(
        &base,
        "- list: allowed\n  items: [a]\n- rule: R\n  desc: d\n  condition: evt.type = execve and not proc.name in (allowed)\n  output: o\n  priority: INFO\n",
    )
    .unwrap();
    std::fs::write(
        &local,
        "- list: allowed\n  items: [b]\n  override:\n    items: append\n",
    )
    .unwrap();
    let (set, report) = RuleSet::load_files(&[&base, &local]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(report.problems().is_empty(), "{report}");
    let e = |n: &str| {
        MapEvent::new()
            .with("evt.type", "execve")
            .with("proc.name", n)
    };
    assert!(names(&set, &e("b")).is_empty());
    assert_eq!(names(&set, &e("c")), ["R"]);
}

#[test]
fn rules_are_indexed_by_event_type() {
    let (set, report) = RuleSet::load_str(
        "t.yaml",
        r#"
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- rule: Exec
  desc: d
  condition: spawned_process and proc.name = x
  output: o
  priority: INFO
- rule: Connect or exec
  desc: d
  condition: (evt.type = connect or spawned_process) and proc.name = x
  output: o
  priority: INFO
- rule: Any
  desc: d
  condition: proc.name = x
  output: o
  priority: INFO
- rule: Never
  desc: d
  condition: evt.type = open and evt.type = close
  output: o
  priority: INFO
"#,
    );
    let ty = |n: &str| {
        set.get(n)
            .unwrap()
            .event_types()
            .map(|t| t.iter().map(|s| s.as_ref()).collect::<Vec<&str>>())
    };
    assert_eq!(ty("Exec"), Some(vec!["execve", "execveat"]));
    assert_eq!(
        ty("Connect or exec"),
        Some(vec!["connect", "execve", "execveat"])
    );
    assert_eq!(ty("Any"), None);
    assert_eq!(ty("Never"), Some(vec![]));
    // Rules that do not restrict evt.type are evaluated for every event, with a warning.
    assert!(
        report
            .to_string()
            .contains("rule 'Any': the condition does not restrict evt.type")
    );
    assert!(
        report
            .to_string()
            .contains("rule 'Never': no event type can satisfy")
    );
    assert!(set.event_types().is_none());
    let candidates: Vec<&str> = set.candidates("connect").map(Rule::name).collect();
    assert_eq!(candidates, ["Connect or exec", "Any"]);
    let candidates: Vec<&str> = set.candidates("mmap").map(Rule::name).collect();
    assert_eq!(candidates, ["Any"]);
    let e = |t: &str| MapEvent::new().with("evt.type", t).with("proc.name", "x");
    assert_eq!(
        names(&set, &e("execve")),
        ["Exec", "Connect or exec", "Any"]
    );
    assert_eq!(names(&set, &e("mmap")), ["Any"]);
}

#[test]
fn macro_cycles_are_errors_not_hangs() {
    let (set, report) = RuleSet::load_str(
        "c.yaml",
        r#"
- macro: a
  condition: b
- macro: b
  condition: a
- rule: R
  desc: d
  condition: evt.type = execve and a
  output: o
  priority: INFO
"#,
    );
    assert!(set.is_empty());
    assert!(report.to_string().contains("refers to itself"), "{report}");
}

#[test]
fn matching_renders_outputs_and_fields() {
    let set = load_clean(
        r#"
- rule: Shell
  desc: d
  condition: evt.type = execve and proc.name = bash
  output: "Shell (user=%user.name parent=%proc.aname[1] cmd=%proc.cmdline tty=%proc.tty)"
  priority: WARNING
  tags: [shell, T1059]
"#,
    );
    let e = MapEvent::new()
        .with("evt.type", "execve")
        .with("proc.name", "bash")
        .with("proc.cmdline", "bash -i")
        .with("proc.pname", "sshd")
        .with("user.name", "root");
    let mut out = vec![];
    set.matching(&e, &mut out);
    assert_eq!(out.len(), 1);
    let m = &out[0];
    assert_eq!(m.rule.name(), "Shell");
    assert_eq!(m.rule.priority(), Priority::Warning);
    assert_eq!(m.rule.tags(), ["shell", "T1059"]);
    assert_eq!(
        m.output,
        "Shell (user=root parent=sshd cmd=bash -i tty=<NA>)"
    );
    assert_eq!(
        m.output_fields,
        [
            OutputField {
                name: "user.name",
                value: Some("root".into())
            },
            OutputField {
                name: "proc.aname[1]",
                value: Some("sshd".into())
            },
            OutputField {
                name: "proc.cmdline",
                value: Some("bash -i".into())
            },
            OutputField {
                name: "proc.tty",
                value: None
            },
        ]
    );
    // The buffer is reused: a second call replaces the first results.
    set.matching(&MapEvent::new().with("evt.type", "execve"), &mut out);
    assert!(out.is_empty());
}

#[test]
fn rule_sets_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<LoadReport>();
}

#[test]
fn duplicate_yaml_keys_are_reported_with_their_line() {
    let (set, report) = RuleSet::load_str(
        "d.yaml",
        "- rule: R\n  desc: a\n  desc: b\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n- rule: S\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n",
    );
    assert_eq!(
        report.to_string(),
        "d.yaml:3: error: item: duplicated key in mapping at column 3 (the last value is used)\n\
         loaded 2 of 2 rules"
    );
    // The rest of the file still loads.
    assert_eq!(set.get("R").unwrap().desc(), "b");
    assert!(set.get("S").is_some());
}
