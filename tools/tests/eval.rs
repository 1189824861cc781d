//! `habitctl eval` end to end on small generated trace directories (the ADFA-LD layout).
//!
//! A synthetic program has two code paths; normal runs take them in the learned order, the
//! "attacks" use the same syscalls in another order. The built binary must train on one
//! directory, score the others and print one line per model in the documented format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

/// A deterministic pseudo-random sequence (no dependency needed for a test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const PATH_A: [u32; 6] = [5, 3, 3, 6, 4, 4];
const PATH_B: [u32; 5] = [195, 5, 192, 6, 91];
const REORDERED_A: [u32; 6] = [4, 3, 5, 6, 3, 4];
const REORDERED_B: [u32; 5] = [5, 195, 6, 192, 91];

fn trace(rng: &mut Lcg, a: &[u32], b: &[u32]) -> String {
    let mut calls: Vec<u32> = vec![11, 45, 33, 192, 5, 197, 192, 6];
    for _ in 0..(20 + rng.next(40)) {
        if rng.next(3) == 0 {
            calls.extend(b);
        } else {
            calls.extend(a);
        }
    }
    calls.push(252);
    let mut text = String::new();
    for nr in calls {
        write!(text, "{nr} ").unwrap();
    }
    text
}

fn write_dir(dir: &Path, count: usize, seed: u64, a: &[u32], b: &[u32]) {
    // Nested like ADFA-LD's Attack_Data_Master/<class>/ to exercise the recursive search.
    let mut rng = Lcg(seed);
    for i in 0..count {
        let sub = dir.join(format!("class_{}", i % 2));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("T-{i}.txt")), trace(&mut rng, a, b)).unwrap();
    }
    // Files that are not traces are ignored.
    std::fs::write(dir.join("README.md"), "not a trace").unwrap();
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_habitctl"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

fn dataset() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    write_dir(&root.path().join("train"), 30, 1, &PATH_A, &PATH_B);
    write_dir(&root.path().join("normal"), 40, 2, &PATH_A, &PATH_B);
    write_dir(
        &root.path().join("attack"),
        10,
        3,
        &REORDERED_A,
        &REORDERED_B,
    );
    root
}

fn dirs(root: &Path) -> Vec<String> {
    ["train", "normal", "attack"]
        .iter()
        .flat_map(|name| {
            [
                format!("--{name}"),
                root.join(name).to_string_lossy().into_owned(),
            ]
        })
        .collect()
}

/// Parses `model=NAME auc=X dr@1%=Y dr@5%=Z`.
fn parse(line: &str) -> (String, f64, f64, f64) {
    let fields: Vec<(&str, &str)> = line
        .split(' ')
        .map(|field| field.split_once('=').unwrap())
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["model", "auc", "dr@1%", "dr@5%"], "{line}");
    let number = |i: usize| {
        let text = fields[i].1;
        assert_eq!(text.len(), 5, "three decimals: {line}");
        text.parse::<f64>().unwrap()
    };
    (fields[0].1.to_owned(), number(1), number(2), number(3))
}

#[test]
fn both_models_by_default_and_habitd_separates_the_reordering() {
    let root = dataset();
    let args = dirs(root.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = eval(&args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (name, auc, dr1, dr5) = parse(lines[0]);
    assert_eq!(name, "habitd");
    assert_eq!((auc, dr1, dr5), (1.0, 1.0, 1.0), "{stdout}");
    let (name, auc, _, _) = parse(lines[1]);
    assert_eq!(name, "stide");
    assert!(auc > 0.9, "{stdout}");
    assert!(
        stderr.contains("30 training, 40 normal and 10 attack traces"),
        "{stderr}"
    );
    assert!(stderr.contains("held-out training traces"), "{stderr}");
}

#[test]
fn one_model_on_request() {
    let root = dataset();
    let mut args = dirs(root.path());
    args.extend(["--model".to_owned(), "stide".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = eval(&args);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.starts_with("model=stide auc="), "{stdout}");
}

#[test]
fn bad_input_is_an_error() {
    let root = dataset();
    // A directory without traces.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut args = dirs(root.path());
    args[5] = empty.to_string_lossy().into_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = eval(&args);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no traces (.txt files)"), "{stderr}");
    // A file that is not a list of syscall numbers names the file and the token.
    std::fs::write(root.path().join("attack").join("bad.txt"), "3 4 read 5").unwrap();
    let args = dirs(root.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = eval(&args);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("bad.txt") && stderr.contains("\"read\""),
        "{stderr}"
    );
}

#[test]
fn halves_split_sub_directories_whole_and_flat_directories_by_file() {
    let root = dataset();
    // A flat normal directory of 7 traces: the halves take files 0, 2, 4, 6 and 1, 3, 5.
    let flat = root.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let mut rng = Lcg(4);
    for i in 0..7 {
        std::fs::write(
            flat.join(format!("N-{i}.txt")),
            trace(&mut rng, &PATH_A, &PATH_B),
        )
        .unwrap();
    }
    for (half, nested, flat_count) in [
        ("choose", "20 normal and 5 attack", "4 normal and 5 attack"),
        ("test", "20 normal and 5 attack", "3 normal and 5 attack"),
    ] {
        // Nested: each of class_0 and class_1 goes to one half whole.
        let mut args = dirs(root.path());
        args.extend(["--half".to_owned(), half.to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = eval(&args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("30 training, {nested} traces half={half}")),
            "{stderr}"
        );
        for line in stdout.lines() {
            let plain = line
                .strip_suffix(&format!(" half={half}"))
                .unwrap_or_else(|| panic!("the line names its half: {line}"));
            parse(plain);
        }
        // Flat: file by file.
        let mut args = dirs(root.path());
        args[3] = flat.to_string_lossy().into_owned();
        args.extend(["--half".to_owned(), half.to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = eval(&args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("30 training, {flat_count} traces half={half}")),
            "{stderr}"
        );
    }
}
