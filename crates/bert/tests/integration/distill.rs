//! Sentence-embedding distillation end to end on tiny checkpoints: the loss falls, a student trained
//! on a few sentences until it converges gives the teacher's vectors, sentence pairs report retrieval
//! accuracy both ways, the output is a sentence-transformers directory the embedder loads, and bad
//! input stops with the file, line or sizes named.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::common::{fixture, minilm};
use bert::finetune::distill::{
    prepare_distill, save_modules, DistillData, DistillTask, SentenceFile,
};
use bert::finetune::masked_lm::MaskedLmText;
use bert::finetune::student::{make_student, StudentRecipe};
use bert::finetune::Prepared;
use bert::pipelines::{EmbedOptions, Embedder, FillMask, PipelineOptions};
use bert::pooling::dense::{write_projection, DenseConfig};
use bert::pooling::{write_sentence_transformers, Pooling, PROJECTION_DIR};
use bert::tokenizer::Tokenizer;
use bert::train::{evaluate, train, TrainingOptions};
use bert::weights::checkpoint::Checkpoint;
use serde_json::{Map, Value};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-distill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SENTENCES: [&str; 6] = [
    "the sea was good",
    "a movie",
    "the city was bad",
    "the day was great",
    "a school",
    "the farm was terrible",
];

fn write(path: &Path, lines: &[&str]) -> PathBuf {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_path_buf()
}

fn data(teacher: &Path, train: SentenceFile) -> DistillData {
    DistillData {
        teacher: teacher.to_path_buf(),
        eval: Some(train.clone()),
        train,
        max_length: Some(16),
        batch_size: 4,
        projection: false,
        masked_lm: None,
    }
}

/// Trains to the end; the kept model's evaluation.
fn run(prepared: &Prepared<DistillTask>, options: &TrainingOptions) -> Map<String, Value> {
    let stop = AtomicBool::new(false);
    let outcome = train(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        options,
        &stop,
        &mut |_| {},
    )
    .unwrap();
    outcome.best.unwrap()
}

/// Options for a tiny student's run of `epochs` over six sentences, into `dir/out`.
fn tiny_run(dir: &Path, epochs: usize) -> TrainingOptions {
    let mut options = TrainingOptions::new(dir.join("out"), fixture("tiny-mlm"));
    options.epochs = Some(epochs);
    options.batch_size = 6;
    options.learning_rate = 3e-3;
    options.seed = 3;
    options
}

/// A number among an evaluation's metrics.
fn metric(metrics: &Map<String, Value>, name: &str) -> f64 {
    metrics[name].as_f64().unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The student (tiny-mlm's encoder) learns the teacher's (tiny-base's) vectors of six sentences until
/// it gives them back; the saved directory, with its sentence-transformers modules, embeds them so.
#[test]
fn a_student_trained_to_convergence_gives_the_teachers_vectors() {
    let dir = temp_dir("converge");
    let train_file = SentenceFile {
        sentences: write(&dir.join("train.txt"), &SENTENCES),
        target: None,
    };
    let data = data(&fixture("tiny-base"), train_file);
    let prepared = prepare_distill(&fixture("tiny-mlm"), &data, 3).unwrap();
    let before = evaluate(&prepared.task, 8).unwrap()["loss"]
        .as_f64()
        .unwrap();
    let options = tiny_run(&dir, 400);
    let after = run(&prepared, &options)["loss"].as_f64().unwrap();
    assert!(after < before / 20.0, "loss {before} -> {after}");
    save_modules(&dir.join("out"), &fixture("tiny-mlm"), &data).unwrap();

    let teacher = Embedder::load(&fixture("tiny-base"), &EmbedOptions::default()).unwrap();
    let student = Embedder::load(&dir.join("out"), &EmbedOptions::default()).unwrap();
    let wanted = teacher.embed_texts(&SENTENCES).unwrap();
    let got = student.embed_texts(&SENTENCES).unwrap();
    for ((w, g), text) in wanted.iter().zip(&got).zip(SENTENCES) {
        assert!(cosine(w, g) > 0.99, "{text}: cosine {}", cosine(w, g));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With masked-LM text the student also learns to fill in masked words: held-out masked-LM accuracy
/// rises while the distillation loss falls, and the saved `BertForMaskedLM` is a fill-mask model and
/// a sentence encoder in one.
#[test]
fn masked_lm_text_makes_the_student_a_fill_mask_model_too() {
    let dir = temp_dir("mlm");
    let lines = write(&dir.join("mlm.txt"), &SENTENCES);
    let train_file = SentenceFile {
        sentences: write(&dir.join("train.txt"), &SENTENCES),
        target: None,
    };
    let mut data = data(&fixture("tiny-base"), train_file);
    data.masked_lm = Some(MaskedLmText {
        path: lines.clone(),
        eval: Some(lines),
        weight: 0.1,
    });
    let prepared = prepare_distill(&fixture("tiny-mlm"), &data, 3).unwrap();
    let before = evaluate(&prepared.task, 8).unwrap();
    let options = tiny_run(&dir, 300);
    let after = run(&prepared, &options);
    assert!(
        metric(&after, "mlm_accuracy") >= 0.6 && metric(&before, "mlm_accuracy") < 0.4,
        "masked-LM accuracy {} -> {}",
        metric(&before, "mlm_accuracy"),
        metric(&after, "mlm_accuracy")
    );
    assert!(
        metric(&after, "loss") < metric(&before, "loss") / 5.0,
        "distillation loss {} -> {}",
        metric(&before, "loss"),
        metric(&after, "loss")
    );
    let out = dir.join("out");
    save_modules(&out, &fixture("tiny-mlm"), &data).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    let filler = FillMask::load(&out, &PipelineOptions::default()).unwrap();
    let encoding = filler.encode("the farm was [MASK]").unwrap();
    let predicted = &filler.predict(&[encoding], 1).unwrap()[0][0][0];
    // One of the words that end the training lines "the ... was ...".
    let endings = ["good", "bad", "great", "terrible"];
    assert!(
        endings.contains(&predicted.token.as_str()),
        "{}",
        predicted.token
    );
    let teacher = Embedder::load(&fixture("tiny-base"), &EmbedOptions::default()).unwrap();
    let student = Embedder::load(&out, &EmbedOptions::default()).unwrap();
    let wanted = teacher.embed_texts(&SENTENCES).unwrap();
    let got = student.embed_texts(&SENTENCES).unwrap();
    for ((w, g), text) in wanted.iter().zip(&got).zip(SENTENCES) {
        assert!(cosine(w, g) > 0.95, "{text}: cosine {}", cosine(w, g));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A teacher whose vectors are wider than the student's states: tiny-base with a 32 -> 48 `Dense`
/// projection (random weights) and normalisation.
fn projected_teacher(dir: &Path) -> PathBuf {
    let teacher = dir.join("teacher");
    std::fs::create_dir_all(&teacher).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-base")).unwrap().flatten() {
        std::fs::copy(entry.path(), teacher.join(entry.file_name())).unwrap();
    }
    write_sentence_transformers(&teacher, Pooling::Mean, true, 16, 32, true).unwrap();
    let device = candle_core::Device::Cpu;
    let weight = candle_core::Tensor::randn(0f32, 0.3, (48, 32), &device).unwrap();
    let bias = candle_core::Tensor::randn(0f32, 0.1, 48, &device).unwrap();
    write_projection(&teacher.join(PROJECTION_DIR), &weight, &bias).unwrap();
    teacher
}

/// A student narrower than its teacher's vectors is refused without --projection; with it, the
/// student learns a projection too, saved as a `Dense` module (out of the encoder's weights), and
/// the saved directory gives the teacher's vectors.
#[test]
fn a_narrower_student_learns_a_projection() {
    let dir = temp_dir("projection");
    let teacher = projected_teacher(&dir);
    let train_file = SentenceFile {
        sentences: write(&dir.join("train.txt"), &SENTENCES),
        target: None,
    };
    let mut data = data(&teacher, train_file);
    let err = prepare_distill(&fixture("tiny-mlm"), &data, 3)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("48") && err.to_string().contains("--projection"),
        "{err}"
    );
    data.projection = true;
    let prepared = prepare_distill(&fixture("tiny-mlm"), &data, 3).unwrap();
    assert!(prepared
        .newly_initialized
        .iter()
        .any(|n| n.starts_with("projection")));
    let options = tiny_run(&dir, 400);
    run(&prepared, &options);
    let out = dir.join("out");
    save_modules(&out, &fixture("tiny-mlm"), &data).unwrap();

    let modules = std::fs::read_to_string(out.join("modules.json")).unwrap();
    let kinds: Vec<&str> = modules
        .match_indices("models.")
        .map(|(at, _)| &modules[at + 7..at + 11])
        .collect();
    assert_eq!(kinds, ["Tran", "Pool", "Dens", "Norm"], "{modules}");
    let dense = DenseConfig::read(&out.join(PROJECTION_DIR)).unwrap();
    assert_eq!((dense.in_features, dense.out_features), (32, 48));
    assert!(Checkpoint::open(&out)
        .unwrap()
        .names()
        .all(|n| !n.starts_with("projection")));
    let wanted = Embedder::load(&teacher, &EmbedOptions::default())
        .unwrap()
        .embed_texts(&SENTENCES)
        .unwrap();
    let got = Embedder::load(&out, &EmbedOptions::default())
        .unwrap()
        .embed_texts(&SENTENCES)
        .unwrap();
    for ((w, g), text) in wanted.iter().zip(&got).zip(SENTENCES) {
        assert_eq!(g.len(), 48);
        assert!(cosine(w, g) > 0.99, "{text}: cosine {}", cosine(w, g));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// From sentence pairs the student also learns to map the second sentence of each pair to the
/// teacher's vector of the first; the evaluation reports retrieval accuracy both ways.
#[test]
fn pairs_train_both_sides_and_report_retrieval_accuracy() {
    let dir = temp_dir("pairs");
    // The second line's "translation" is the sentence itself: read once, its rows still in line.
    let targets = [
        "sea good",
        "a movie",
        "city bad",
        "day great",
        "school",
        "farm terrible",
    ];
    let pairs = SentenceFile {
        sentences: write(&dir.join("source.txt"), &SENTENCES),
        target: Some(write(&dir.join("target.txt"), &targets)),
    };
    let data = data(&fixture("tiny-base"), pairs);
    let prepared = prepare_distill(&fixture("tiny-mlm"), &data, 3).unwrap();
    let before = evaluate(&prepared.task, 8).unwrap();
    let options = tiny_run(&dir, 300);
    let after = run(&prepared, &options);
    assert!(metric(&after, "loss") < metric(&before, "loss") / 5.0);
    for key in ["src2trg_accuracy", "trg2src_accuracy"] {
        assert!(metric(&after, key) >= metric(&before, key), "{key}");
        assert_eq!(metric(&after, key), 1.0, "{key} {after:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_names_the_files_lines_and_sizes() {
    let dir = temp_dir("bad");
    let six = write(&dir.join("six.txt"), &SENTENCES);
    let five = write(&dir.join("five.txt"), &SENTENCES[..5]);
    let error = |train: SentenceFile, teacher: &Path| match prepare_distill(
        &fixture("tiny-mlm"),
        &data(teacher, train),
        3,
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let message = error(
        SentenceFile {
            sentences: six.clone(),
            target: Some(five.clone()),
        },
        &fixture("tiny-base"),
    );
    assert!(
        message.contains("six.txt")
            && message.contains("6 lines")
            && message.contains("five.txt")
            && message.contains("has 5"),
        "{message}"
    );
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"the sea\nthe caf\xe9\n").unwrap();
    let message = error(
        SentenceFile {
            sentences: latin1,
            target: None,
        },
        &fixture("tiny-base"),
    );
    assert!(message.contains("latin1.txt:2"), "{message}");
    let empty = write(&dir.join("empty.txt"), &[""]);
    let message = error(
        SentenceFile {
            sentences: empty,
            target: None,
        },
        &fixture("tiny-base"),
    );
    assert!(
        message.contains("empty.txt") && message.contains("no sentences"),
        "{message}"
    );
    if let Some(teacher) = minilm() {
        let message = error(
            SentenceFile {
                sentences: six,
                target: None,
            },
            &teacher,
        );
        assert!(
            message.contains("384") && message.contains("32") && message.contains("projection"),
            "{message}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A student of every second layer: half the layers, each the teacher's layer 0, 2, ... with its
/// weights unchanged, embeddings and tokenizer carried over, loadable as a sentence encoder.
#[test]
fn a_student_of_every_other_layer_keeps_those_layers() {
    let dir = temp_dir("layers");
    let student = dir.join("student");
    let config = make_student(&fixture("tiny-base"), &every(2), &student)
        .unwrap()
        .config;
    assert_eq!(config.num_hidden_layers, 1);
    let teacher = Checkpoint::open(&fixture("tiny-base")).unwrap();
    let made = Checkpoint::open(&student).unwrap();
    let load = |c: &Checkpoint, name: &str| {
        let t = c.load(name, &candle_core::Device::Cpu).unwrap().unwrap();
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let names: Vec<&str> = made.names().collect();
    assert!(names.iter().all(|n| !n.contains("layer.1.")), "{names:?}");
    for name in teacher.names().filter(|n| !n.contains("layer.1.")) {
        assert_eq!(load(&teacher, name), load(&made, name), "{name}");
    }
    assert!(Embedder::load(&student, &EmbedOptions::default()).is_ok());
    let err = make_student(&fixture("tiny-base"), &every(3), &dir.join("x")).unwrap_err();
    assert!(err.to_string().contains("has 2 layers"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn every(k: usize) -> StudentRecipe {
    StudentRecipe {
        keep_layers_every: k,
        vocab_size: None,
        texts: Vec::new(),
    }
}

fn cut_to(size: usize, texts: &Path) -> StudentRecipe {
    StudentRecipe {
        vocab_size: Some(size),
        texts: vec![texts.to_path_buf()],
        ..every(1)
    }
}

fn pieces(tokenizer: &Tokenizer, text: &str) -> Vec<String> {
    let ids = tokenizer.encode_plain(text).unwrap();
    (ids.iter().map(|&id| tokenizer.id_to_token(id).unwrap())).collect()
}

/// A vocabulary cut to the pieces the text uses gives the same vectors of that text (same pieces,
/// same rows); cut below that, words split into smaller pieces the student still has (no unknown
/// token), and a cut below the text's characters is refused with the count it needs.
#[test]
fn a_cut_vocabulary_keeps_the_texts_pieces_and_rows() {
    let dir = temp_dir("vocab");
    let texts = write(&dir.join("train.txt"), &SENTENCES);
    let teacher_dir = fixture("tiny-base");
    let teacher_tokens = Tokenizer::from_dir(&teacher_dir).unwrap();
    let mut used: Vec<String> = SENTENCES
        .iter()
        .flat_map(|s| pieces(&teacher_tokens, s))
        .collect();
    used.sort();
    used.dedup();
    let tight = dir.join("tight");
    let err = make_student(&teacher_dir, &cut_to(8, &texts), &tight).unwrap_err();
    assert!(err.to_string().contains("needs at least"), "{err}");
    let needed: usize = err
        .to_string()
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    make_student(&teacher_dir, &cut_to(needed + 1, &texts), &tight).unwrap();
    let whole = dir.join("whole");
    let made = make_student(&teacher_dir, &cut_to(needed + used.len(), &texts), &whole).unwrap();
    assert!(made.config.vocab_size < 249 && made.vocab_before == 249);
    let kept = Tokenizer::from_dir(&whole).unwrap();
    assert!(
        used.iter().all(|p| kept.token_to_id(p).is_some()),
        "{used:?}"
    );
    let embed = |d: &Path| {
        let embedder = Embedder::load(d, &EmbedOptions::default()).unwrap();
        embedder.embed_sorted(&SENTENCES, 4, &mut |_| {}).unwrap()
    };
    let (teacher, student) = (embed(&teacher_dir), embed(&whole));
    for (t, s) in teacher.iter().zip(&student) {
        let diff = t
            .iter()
            .zip(s)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
    let cut = Tokenizer::from_dir(&tight).unwrap();
    assert_eq!(cut.vocab_size(), needed + 1);
    assert_eq!(cut.pad_id(), 0);
    for sentence in SENTENCES {
        let split = pieces(&cut, sentence);
        assert!(!split.contains(&"[UNK]".to_string()), "{split:?}");
        let glued = cut.tokens_to_string(&split);
        assert_eq!(
            glued,
            teacher_tokens.tokens_to_string(&pieces(&teacher_tokens, sentence))
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
