//! Data-parallel training under `mpirun` (the `mpi` feature): two ranks with batch B train the same
//! model as one process with batch 2B, in one shard or in two on threads (pretraining, and fine-tuning
//! for classification and token classification, whose loss is a mean over a count that differs between
//! ranks); a resumed run under MPI ends where an uninterrupted one does; a rank that dies stops the job
//! with a message from rank 0 and leaves the last checkpoint whole. Without the feature, `bert` refuses
//! to run under `mpirun`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bert/tests/fixtures")
        .join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A corpus of `documents` documents, varied enough that instances differ in length and masks.
fn corpus(dir: &Path, documents: usize) -> PathBuf {
    let words = [
        "the", "sea", "city", "tree", "water", "school", "food", "story", "night", "life",
    ];
    let mut text = String::new();
    for d in 0..documents {
        for s in 0..(3 + d % 5) {
            let (a, b) = (words[(d + s) % 10], words[(d * 3 + s * 7) % 10]);
            let tail = " and the night".repeat((d + s) % 4);
            text.push_str(&format!("the {a} of the {b} is the {a}{tail} .\n"));
        }
        text.push('\n');
    }
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// `fixtures/tiny-base` with dropout off (so that the runs compared are deterministic), in `dir`.
fn model_without_dropout(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-base")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in [
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "classifier_dropout",
    ] {
        config[key] = 0.0.into();
    }
    std::fs::write(&path, config.to_string()).unwrap();
    model
}

fn bert() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bert"));
    command.env("RAYON_NUM_THREADS", "1");
    command
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `words`, then each flag and its value, then `rest`.
fn command_line(
    words: &[&str],
    flags: &[(&str, &Path)],
    batch: &str,
    rest: &[&str],
) -> Vec<String> {
    let mut args = strings(words);
    for (flag, value) in flags {
        args.push(flag.to_string());
        args.push(value.display().to_string());
    }
    args.extend(strings(&["--batch-size", batch]));
    args.extend(strings(rest));
    args
}

fn pretrain_args(corpus: &Path, config: &Path, out: &Path, batch: &str) -> Vec<String> {
    let corpus = corpus.display().to_string();
    let tokenizer = fixture("tokenizer/uncased");
    let flags = [
        ("--tokenizer", tokenizer.as_path()),
        ("--config", config),
        ("--out", out),
    ];
    let rest = [
        "--max-seq-length",
        "32",
        "--max-steps",
        "8",
        "--learning-rate",
        "1e-3",
        "--warmup-steps",
        "2",
        "--eval-every",
        "4",
        "--eval-documents",
        "4",
        "--eval-stride",
        "5",
        "--save-every",
        "4",
        "--log-every",
        "1",
    ];
    command_line(&["pretrain", &corpus], &flags, batch, &rest)
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_ranks() {
    let dir = scratch("no-mpi");
    let corpus = corpus(&dir, 10);
    let config = model_without_dropout(&dir).join("config.json");
    let out = dir.join("run");
    let run = bert()
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .args(pretrain_args(&corpus, &config, &out, "4"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = stderr(&run);
    assert!(
        err.contains("one of 2 ranks") && err.contains("--features mpi"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The tests that need MPI: built with the `mpi` feature, skipped with a message where `mpirun` is missing.
#[cfg(feature = "mpi")]
mod under_mpirun {
    use super::*;

    /// The training and evaluation losses of a run, in order.
    fn losses(out: &Path) -> Vec<f64> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter_map(|v| {
                ["loss", "loss_eval", "eval_mlm_loss"]
                    .iter()
                    .find_map(|key| v[*key].as_f64())
            })
            .collect()
    }

    fn assert_same_losses(one: &Path, two: &Path) {
        let (a, b) = (losses(one), losses(two));
        assert!(a.len() >= 4 && a.len() == b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * x.abs(), "losses {a:?} vs {b:?}");
        }
    }

    /// The final weights agree within 2e-5 of each tensor's largest magnitude (rounding in sums of
    /// another order, which Adam's normalisation carries into the weights step after step; seen up
    /// to 1.3e-5 after ten fine-tuning steps). Attention key biases are
    /// the exception: softmax ignores them, so their gradient is rounding noise that Adam scales up to
    /// full steps whatever its size, and a change of summation order moves them by up to the learning
    /// rate per step; they must stay within `key_bias_bound`.
    fn assert_same_weights(one: &Path, two: &Path, key_bias_bound: f32) {
        use bert::weights::checkpoint::Checkpoint;
        let device = candle_core::Device::Cpu;
        let (a, b) = (
            Checkpoint::open(one).unwrap(),
            Checkpoint::open(two).unwrap(),
        );
        let names: Vec<String> = a.names().map(String::from).collect();
        assert!(names.len() > 20);
        for name in names {
            let load = |c: &Checkpoint| -> Vec<f32> {
                let t = c.load(&name, &device).unwrap().unwrap();
                t.flatten_all().unwrap().to_vec1().unwrap()
            };
            let (x, y) = (load(&a), load(&b));
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            let bound = if name.ends_with("key.bias") {
                key_bias_bound
            } else {
                2e-5 * scale.max(1e-3)
            };
            assert!(
                worst <= bound,
                "{name}: differs by {worst} (largest {scale})"
            );
        }
    }

    /// `mpirun`, if installed.
    fn mpirun() -> Option<Command> {
        let found = Command::new("mpirun").arg("--version").output().is_ok();
        if !found {
            eprintln!("skipped: MPI is not installed (no `mpirun` on PATH)");
            return None;
        }
        let mut command = Command::new("mpirun");
        // OpenMPI refuses to start as root (CI containers) without these.
        command
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("RAYON_NUM_THREADS", "1")
            .args(["--oversubscribe", "-np"]);
        Some(command)
    }

    /// `bert ARGS` on one process and under `mpirun -np 2`.
    /// `mpirun -np 2 bert ARGS`, if MPI is installed.
    fn on_two_ranks(args: &[String]) -> Option<Command> {
        let mut command = mpirun()?;
        command.arg("2").arg(env!("CARGO_BIN_EXE_bert")).args(args);
        Some(command)
    }

    fn one_and_two_ranks(one: &[String], two: &[String]) -> Option<(Output, Output)> {
        let mut ranks = on_two_ranks(two)?;
        let single = bert().args(one).output().unwrap();
        assert!(single.status.success(), "{}", stderr(&single));
        let ranks = ranks.output().unwrap();
        assert!(ranks.status.success(), "{}", stderr(&ranks));
        Some((single, ranks))
    }

    #[test]
    fn two_ranks_pretrain_what_one_process_does_with_the_global_batch_and_resume_to_the_same_end() {
        let dir = scratch("pretrain");
        let corpus = corpus(&dir, 40);
        let config = model_without_dropout(&dir).join("config.json");
        let (one, two) = (dir.join("one"), dir.join("two"));
        let Some((_, ranks)) = one_and_two_ranks(
            &pretrain_args(&corpus, &config, &one, "8"),
            &pretrain_args(&corpus, &config, &two, "4"),
        ) else {
            return;
        };
        // Rank 0 alone reports.
        let err = stderr(&ranks);
        assert_eq!(err.matches("done: 8 steps").count(), 1, "{err}");
        assert_same_losses(&one, &two);
        assert_same_weights(&one, &two, 1e-6);
        let state = std::fs::read_to_string(two.join("checkpoint-8/trainer_state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["settings"]["world_size"], 2);
        assert_eq!(state["examples_in_epoch"], 64);
        let metrics = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("exchange_seconds"), "{metrics}");
        // Two shards on threads of one process are the same two global shards.
        let threads = dir.join("threads");
        let mut args = pretrain_args(&corpus, &config, &threads, "8");
        args.extend(strings(&["--shards", "2"]));
        let out = bert().args(&args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_same_losses(&two, &threads);
        assert_same_weights(&two, &threads, 1e-6);

        // Interrupted after step 4 (its later files removed), then resumed under MPI: the same end.
        let resumed = dir.join("resumed");
        std::fs::create_dir_all(&resumed).unwrap();
        for name in ["checkpoint-4", "metrics.jsonl"] {
            copy_all(&two.join(name), &resumed.join(name));
        }
        let mut args = pretrain_args(&corpus, &config, &resumed, "4");
        args.push("--resume".into());
        let out = on_two_ranks(&args).unwrap().output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_same_losses(&two, &resumed);
        assert_same_weights(&two, &resumed, 0.0);
    }

    fn copy_all(from: &Path, to: &Path) {
        if from.is_file() {
            std::fs::copy(from, to).unwrap();
            return;
        }
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            copy_all(&path, &to.join(path.file_name().unwrap()));
        }
    }

    fn finetune_args(task: &[&str], model: &Path, out: &Path, batch: &str) -> Vec<String> {
        let words = [&["finetune"], task].concat();
        let rest = [
            "--epochs",
            "2",
            "--learning-rate",
            "2e-3",
            "--eval-steps",
            "3",
            "--log-every",
            "1",
        ];
        command_line(&words, &[("--model", model), ("--out", out)], batch, &rest)
    }

    #[test]
    fn two_ranks_finetune_what_one_process_does_with_the_global_batch() {
        let dir = scratch("finetune");
        let model = model_without_dropout(&dir);
        // Classification: 37 reviews, so the last global batch is split unevenly.
        let mut csv = String::from("review,sentiment\n");
        let subjects = ["movie", "story", "day", "city", "film", "song"];
        for i in 0..37 {
            let (word, label) = if i % 3 == 0 {
                ("bad", "neg")
            } else {
                ("good", "pos")
            };
            let text = format!("the {} was {word} ", subjects[i % 6]).repeat(1 + i % 3);
            csv.push_str(&format!("\"{text}\",{label}\n"));
        }
        let train = dir.join("train.csv");
        std::fs::write(&train, csv).unwrap();
        let train = train.display().to_string();
        let task = [
            "--train",
            &train,
            "--eval",
            &train,
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
        ];
        let (one, two) = (dir.join("classify-one"), dir.join("classify-two"));
        let Some(_) = one_and_two_ranks(
            &finetune_args(&task, &model, &one, "8"),
            &finetune_args(&task, &model, &two, "4"),
        ) else {
            return;
        };
        assert_same_losses(&one, &two);
        // 10 steps at learning rate 2e-3.
        assert_same_weights(&one, &two, 2.0 * 2e-3 * 10.0);
        assert_same_results(&one, &two);

        // Token classification: the loss is a mean over labelled tokens, whose count differs by rank.
        let mut conll = String::new();
        let words = [
            ("john", "B-PER"),
            ("smith", "I-PER"),
            ("paris", "B-LOC"),
            ("went", "O"),
            ("to", "O"),
        ];
        for s in 0..29 {
            for w in 0..(2 + s % 7) {
                let (word, tag) = words[(s + w * 3) % words.len()];
                conll.push_str(&format!("{word} {tag}\n"));
            }
            conll.push('\n');
        }
        let train = dir.join("train.conll");
        std::fs::write(&train, conll).unwrap();
        let train = train.display().to_string();
        let task = ["--task", "ner", "--train", &train, "--eval", &train];
        let (one, two) = (dir.join("ner-one"), dir.join("ner-two"));
        one_and_two_ranks(
            &finetune_args(&task, &model, &one, "6"),
            &finetune_args(&task, &model, &two, "3"),
        );
        assert_same_losses(&one, &two);
        assert_same_weights(&one, &two, 2.0 * 2e-3 * 10.0);
        assert_same_results(&one, &two);
    }

    /// The same `eval_results.json`, but for rounding in the loss.
    fn assert_same_results(one: &Path, two: &Path) {
        let read = |dir: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval_results.json")).unwrap())
                .unwrap()
        };
        let (mut a, mut b) = (read(one), read(two));
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs(), "eval loss {x} vs {y}");
        a["loss"] = 0.into();
        b["loss"] = 0.into();
        assert_eq!(a, b);
    }

    #[test]
    fn a_rank_that_dies_stops_the_job_with_a_message_from_rank_0_and_the_last_checkpoint_survives()
    {
        let dir = scratch("dies");
        let corpus = corpus(&dir, 40);
        let config = model_without_dropout(&dir).join("config.json");
        let out = dir.join("run");
        let mut args = pretrain_args(&corpus, &config, &out, "4");
        let steps = args.iter().position(|a| a == "--max-steps").unwrap();
        args[steps + 1] = "100000000".into();
        let save = args.iter().position(|a| a == "--save-every").unwrap();
        args[save + 1] = "50".into();
        let Some(mut job) = on_two_ranks(&args) else {
            return;
        };
        let job = job.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let started = std::time::Instant::now();
        while bert::train::checkpoints(&out).unwrap().is_empty() {
            assert!(
                started.elapsed().as_secs() < 120,
                "no checkpoint after 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let rank1 = rank_pid(&out, 1).expect("rank 1's process");
        Command::new("kill")
            .args(["-9", &rank1.to_string()])
            .status()
            .unwrap();
        let finished = job.wait_with_output().unwrap();
        assert!(!finished.status.success());
        let err = stderr(&finished);
        assert!(
            err.contains("rank 0 of 2: mpirun is stopping the job (a rank failed")
                && err.contains("The last good checkpoint is "),
            "{err}"
        );
        // The newest checkpoint is whole: it resumes (under MPI, with the same settings).
        let (step, newest) = bert::train::checkpoints(&out).unwrap().pop().unwrap();
        assert!(
            newest.join("model.safetensors").exists()
                && newest.join("optimizer.safetensors").exists()
        );
        args[steps + 1] = (step + 2).to_string();
        args.push("--resume".into());
        let resumed = on_two_ranks(&args).unwrap().output().unwrap();
        assert!(resumed.status.success(), "{}", stderr(&resumed));
        assert!(
            stderr(&resumed).contains(&format!("done: {} steps", step + 2)),
            "{}",
            stderr(&resumed)
        );
    }

    /// The process id of rank `rank` of the job whose command line names `dir` (mpirun gives each rank
    /// its number in the environment).
    fn rank_pid(dir: &Path, rank: usize) -> Option<u32> {
        let marker = format!("OMPI_COMM_WORLD_RANK={rank}");
        let dir = dir.display().to_string();
        std::fs::read_dir("/proc").ok()?.find_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let ours = String::from_utf8_lossy(&cmdline).contains(&dir);
            let ranked = String::from_utf8_lossy(&environ)
                .split('\0')
                .any(|v| v == marker);
            (ours && ranked).then_some(pid)
        })
    }
}
