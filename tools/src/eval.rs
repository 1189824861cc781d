//! `habitctl eval`: offline evaluation of the syscall-sequence model on labelled traces.
//!
//! Reads directories in the ADFA-LD layout (one process per `.txt` file: its syscall numbers,
//! separated by white space; directories are searched recursively), trains on `--train`,
//! scores `--normal` and `--attack`, and prints one line per model:
//!
//! ```text
//! model=habitd auc=0.842 dr@1%=0.138 dr@5%=0.298
//! model=stide auc=0.827 dr@1%=0.040 dr@5%=0.218
//! ```
//!
//! The scoring is `habit_models::sequence`, the code habitd runs, not a copy. Detection rates
//! use the threshold at which 1 % (5 %) of the `--normal` scores lie above it; the threshold
//! the model calibrated on its own training data is checked against `--normal` on stderr.
//!
//! `--half choose|test` scores one half of each test set, so that a variant can be chosen on
//! one half and reported on the other (the figures of the half used for choosing are
//! optimistic). A test directory is split by its entries, every other one in name order: a
//! sub-directory goes to one half whole (ADFA-LD's attack folders are recording sessions that
//! share background processes, so splitting a session would put near-copies of a trace on
//! both sides), and a flat directory (ADFA-LD's validation set) is split file by file.
//! Training always uses all of `--train`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use habit_models::sequence::metrics::{detection_rate, rate_above, roc_auc};
use habit_models::sequence::{SequenceConfig, SequenceModel, Stide, TraceScorer};

/// Flags of `habitctl eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Normal traces to learn from (e.g. ADFA-LD/Training_Data_Master).
    #[arg(long, value_name = "DIR")]
    train: PathBuf,
    /// Normal traces to test (e.g. ADFA-LD/Validation_Data_Master).
    #[arg(long, value_name = "DIR")]
    normal: PathBuf,
    /// Attack traces to test (e.g. ADFA-LD/Attack_Data_Master).
    #[arg(long, value_name = "DIR")]
    attack: PathBuf,
    /// Which model to evaluate: habitd's, the STIDE reference, or both (one line each).
    #[arg(long, value_enum, default_value = "all")]
    model: ModelChoice,
    /// Variant: order of a background model for habitd (0 = none, the default; see
    /// `SequenceConfig::background_order` for why).
    #[arg(long, value_name = "N", default_value_t = SequenceConfig::default().background_order)]
    background_order: usize,
    /// Variant: weight of the background model's surprise (0..=1).
    #[arg(long, value_name = "W", default_value_t = SequenceConfig::default().background_weight)]
    background_weight: f64,
    /// Which half of `--normal` and `--attack` to score: `choose` to pick a variant, `test` to
    /// report it on traces the choice never saw, `all` (default) for both halves.
    #[arg(long, value_enum, default_value = "all")]
    half: Half,
}

/// A half of the test sets (see the module docs for how they are split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Half {
    /// Every trace.
    All,
    /// The even-numbered sub-directories (or files): for choosing settings.
    Choose,
    /// The odd-numbered ones: for reporting the chosen settings.
    Test,
}

impl Half {
    /// Whether the part numbered `index` (sub-directory or file, 0-based) belongs to this half.
    fn holds(self, index: usize) -> bool {
        match self {
            Half::All => true,
            Half::Choose => index.is_multiple_of(2),
            Half::Test => !index.is_multiple_of(2),
        }
    }

    /// The suffix of an output line (`""` for all traces, so the default output is unchanged).
    fn label(self) -> &'static str {
        match self {
            Half::All => "",
            Half::Choose => " half=choose",
            Half::Test => " half=test",
        }
    }
}

/// The models `habitctl eval` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelChoice {
    /// habitd's sequence model.
    Habitd,
    /// STIDE: the fraction of unseen 6-grams.
    Stide,
    /// Both, habitd first.
    All,
}

/// Runs the evaluation; returns the lines for standard output. Progress and the calibration
/// check go to standard error.
pub fn run(args: &EvalArgs) -> Result<String> {
    let train = read_traces(&args.train)?;
    let normal = half_of(&args.normal, args.half)?;
    let attack = half_of(&args.attack, args.half)?;
    eprintln!(
        "habitctl eval: {} training, {} normal and {} attack traces{}",
        train.len(),
        normal.len(),
        attack.len(),
        args.half.label()
    );
    let mut out = String::new();
    if matches!(args.model, ModelChoice::Habitd | ModelChoice::All) {
        let config = SequenceConfig {
            background_order: args.background_order,
            background_weight: args.background_weight,
            ..SequenceConfig::default()
        };
        let started = Instant::now();
        let model = SequenceModel::train(&train, config).context("cannot train the model")?;
        eprintln!(
            "habitd: learned {} distinct 6-grams in {:.1?}",
            model.known_len(),
            started.elapsed()
        );
        let started = Instant::now();
        let (normal_scores, attack_scores) = score_all(&model, &normal, &attack);
        eprintln!(
            "habitd: scored {} syscalls in {:.1?}",
            normal.iter().chain(&attack).map(Vec::len).sum::<usize>(),
            started.elapsed()
        );
        if let Some(calibration) = model.calibration() {
            for rate in [0.01, 0.05] {
                let threshold = calibration.threshold(rate);
                eprintln!(
                    "habitd: threshold for {:.0}% false alarms calibrated on {} held-out \
                     training traces: {threshold:.3}; on --normal it alarms on {:.1}%",
                    rate * 100.0,
                    calibration.held_out,
                    rate_above(&normal_scores, threshold) * 100.0
                );
            }
        }
        line(
            &mut out,
            model.name(),
            args.half,
            &normal_scores,
            &attack_scores,
        )?;
    }
    if matches!(args.model, ModelChoice::Stide | ModelChoice::All) {
        let stide = Stide::train(&train);
        let (normal_scores, attack_scores) = score_all(&stide, &normal, &attack);
        line(
            &mut out,
            stide.name(),
            args.half,
            &normal_scores,
            &attack_scores,
        )?;
    }
    Ok(out)
}

/// Appends `model=NAME auc=… dr@1%=… dr@5%=…` (and ` half=…` when one half was scored).
fn line(out: &mut String, name: &str, half: Half, normal: &[f64], attack: &[f64]) -> Result<()> {
    let (Some(auc), Some(dr1), Some(dr5)) = (
        roc_auc(normal, attack),
        detection_rate(normal, attack, 0.01),
        detection_rate(normal, attack, 0.05),
    ) else {
        bail!("{name}: no scores to compare (a test directory is empty, or a score is NaN)");
    };
    writeln!(
        out,
        "model={name} auc={auc:.3} dr@1%={dr1:.3} dr@5%={dr5:.3}{}",
        half.label()
    )?;
    Ok(())
}

/// Scores both test sets, on all cores (scoring is read-only on the model).
fn score_all<M: TraceScorer + Sync>(
    model: &M,
    normal: &[Vec<u32>],
    attack: &[Vec<u32>],
) -> (Vec<f64>, Vec<f64>) {
    (score_parallel(model, normal), score_parallel(model, attack))
}

fn score_parallel<M: TraceScorer + Sync>(model: &M, traces: &[Vec<u32>]) -> Vec<f64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = traces.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = traces
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|t| model.score_trace(t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(scores) => scores,
                // A scoring thread only panics on a bug: re-raise it here, never drop its
                // part (the scores would no longer line up with the traces).
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Reads every `.txt` file under `dir` (recursively, in path order) as one trace.
fn read_traces(dir: &Path) -> Result<Vec<Vec<u32>>> {
    half_of(dir, Half::All)
}

/// Reads the traces under `dir` that belong to `half`. The parts split are the entries of
/// `dir` itself: a sub-directory with all the traces under it, or a trace file lying directly
/// in `dir` (so a flat directory is split file by file).
fn half_of(dir: &Path, half: Half) -> Result<Vec<Vec<u32>>> {
    let files = trace_files(dir)?;
    let mut parts: Vec<Option<&std::ffi::OsStr>> = files.iter().map(|f| part(dir, f)).collect();
    parts.dedup();
    let chosen: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let index = parts.iter().position(|&p| p == part(dir, f));
            index.is_some_and(|index| half.holds(index))
        })
        .collect();
    if chosen.is_empty() {
        bail!("no traces in the {half:?} half of {}", dir.display());
    }
    chosen.into_iter().map(|file| read_trace(file)).collect()
}

/// The entry of `dir` that `file` is, or lies under.
fn part<'f>(dir: &Path, file: &'f Path) -> Option<&'f std::ffi::OsStr> {
    file.strip_prefix(dir)
        .ok()?
        .components()
        .next()
        .map(|c| c.as_os_str())
}

/// The `.txt` files under `dir`, in path order (so a sub-directory's files are adjacent).
fn trace_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_txt(dir, &mut files)
        .with_context(|| format!("cannot read the trace directory {}", dir.display()))?;
    if files.is_empty() {
        bail!("no traces (.txt files) under {}", dir.display());
    }
    files.sort();
    Ok(files)
}

fn collect_txt(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_txt(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "txt") {
            files.push(path);
        }
    }
    Ok(())
}

fn read_trace(file: &Path) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    text.split_whitespace()
        .map(|token| {
            token
                .parse::<u32>()
                .with_context(|| format!("{}: {token:?} is not a syscall number", file.display()))
        })
        .collect()
}
