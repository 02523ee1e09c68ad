//! Semantic search end to end on the tiny checkpoint: building an index from a folder, finding a
//! passage by its own text, incremental updates by content hash, and the ways an index can be wrong
//! (another model, other settings, a corrupt file, an interrupted build).

use std::path::{Path, PathBuf};

use bert::pipelines::{EmbedOptions, Embedder};
use bert::search::{self, Existing, IndexOptions, Searcher};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-search-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SEA: &str =
    "The sea was calm that night, and the old boat drifted slowly toward the harbour lights.";
const FOREST: &str = "Deep in the forest the wolves gathered, howling at a pale and distant moon.";
const CITY: &str = "The city never slept: taxis, neon signs and the noise of a million people.";

/// A folder of documents: two Markdown/text files, one nested, a binary file and a file of another
/// kind (not read when walking).
fn documents(root: &Path) -> PathBuf {
    let docs = root.join("docs");
    std::fs::create_dir_all(docs.join("nested")).unwrap();
    std::fs::write(docs.join("sea.md"), format!("# Sea\n\n{SEA}\n")).unwrap();
    std::fs::write(docs.join("nested/forest.txt"), FOREST).unwrap();
    std::fs::write(docs.join("photo.txt"), b"\x89PNG\0\0binary").unwrap();
    std::fs::write(docs.join("script.py"), "print('not indexed')").unwrap();
    std::fs::write(docs.join(".hidden.md"), "not indexed").unwrap();
    docs
}

struct Setup {
    embedder: Embedder,
    model: search::ModelInfo,
}

fn setup(name: &str) -> Setup {
    let dir = fixture(name);
    let embedder = Embedder::load(&dir, &EmbedOptions::default()).unwrap();
    let model = search::model_info(&dir.display().to_string(), &dir, &embedder).unwrap();
    Setup { embedder, model }
}

fn options(existing: Existing) -> IndexOptions {
    IndexOptions {
        chunk_tokens: 16,
        overlap: 4,
        existing,
        batch_size: 4,
    }
}

fn build(
    s: &Setup,
    inputs: &[PathBuf],
    out: &Path,
    existing: Existing,
) -> bert::Result<search::Report> {
    search::build(
        &s.embedder,
        s.model.clone(),
        inputs,
        out,
        &options(existing),
        &mut |_, _| {},
    )
}

#[test]
fn a_folder_is_indexed_and_a_passage_is_found_by_its_own_text() {
    let root = temp("basic");
    let docs = documents(&root);
    let out = root.join("index");
    let s = setup("tiny-base");
    let mut calls = Vec::new();
    let report = search::build(
        &s.embedder,
        s.model.clone(),
        std::slice::from_ref(&docs),
        &out,
        &options(Existing::Refuse),
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert_eq!((report.added, report.changed, report.removed), (2, 0, 0));
    assert_eq!(
        report.skipped.len(),
        1,
        "the binary file: {:?}",
        report.skipped
    );
    assert!(
        report.skipped[0].1.contains("binary"),
        "{:?}",
        report.skipped
    );
    assert!(
        report.passages > 4,
        "short windows make several passages per file"
    );
    assert_eq!(
        calls.last().map(|c| c.0),
        calls.last().map(|c| c.1),
        "progress reaches the total"
    );

    let searcher = Searcher::open(&out, Some(&fixture("tiny-base"))).unwrap();
    assert_eq!(searcher.index.rows(), report.passages);
    for row in 0..searcher.index.rows() {
        let record = searcher.index.record(row).unwrap();
        let hits = searcher.search(&record.text, 3).unwrap();
        assert_eq!(
            hits[0].text, record.text,
            "a passage's own text finds it first"
        );
        // Re-tokenized alone, a window cut inside a word differs a little from the window itself.
        assert!(
            hits[0].score > 0.95 && hits[0].score < 1.0 + 1e-5,
            "near 1: {}",
            hits[0].score
        );
        let file = std::fs::read_to_string(&hits[0].file).unwrap();
        assert_eq!(
            &file[hits[0].start..hits[0].end],
            hits[0].text,
            "byte range into the file"
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // The index records its model: opened without one, it loads it.
    let again = Searcher::open(&out, None).unwrap();
    assert_eq!(
        again.search(FOREST, 1).unwrap()[0].file,
        searcher.search(FOREST, 1).unwrap()[0].file
    );
}

#[test]
fn an_update_reuses_unchanged_files_and_follows_changes() {
    let root = temp("update");
    let docs = documents(&root);
    let out = root.join("index");
    let s = setup("tiny-base");
    build(&s, std::slice::from_ref(&docs), &out, Existing::Refuse).unwrap();
    let before = Searcher::open(&out, None).unwrap();
    let forest_rows: Vec<(bert::search::store::Record, Vec<f32>)> = (0..before.index.rows())
        .map(|r| {
            (
                before.index.record(r).unwrap(),
                before.index.vectors()[r * 32..(r + 1) * 32].to_vec(),
            )
        })
        .filter(|(record, _)| record.file.ends_with("forest.txt"))
        .collect();
    drop(before);

    let err = build(&s, std::slice::from_ref(&docs), &out, Existing::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--update") && err.contains("--overwrite"),
        "{err}"
    );

    std::fs::write(docs.join("sea.md"), format!("# Sea\n\n{SEA} {CITY}\n")).unwrap();
    std::fs::write(docs.join("city.md"), CITY).unwrap();
    std::fs::remove_file(docs.join("nested/forest.txt")).unwrap();
    std::fs::write(docs.join("nested/forest2.txt"), FOREST).unwrap();
    let report = build(&s, std::slice::from_ref(&docs), &out, Existing::Update).unwrap();
    assert_eq!(
        (
            report.added,
            report.changed,
            report.unchanged,
            report.removed
        ),
        (2, 1, 0, 1)
    );

    std::fs::write(docs.join("nested/forest2.txt"), FOREST).unwrap(); // same content: unchanged
    let report = build(&s, std::slice::from_ref(&docs), &out, Existing::Update).unwrap();
    assert_eq!(
        (
            report.added,
            report.changed,
            report.unchanged,
            report.removed
        ),
        (0, 0, 3, 0)
    );

    let after = Searcher::open(&out, None).unwrap();
    let files: std::collections::BTreeSet<String> = (0..after.index.rows())
        .map(|r| after.index.record(r).unwrap().file)
        .collect();
    assert!(files.iter().any(|f| f.ends_with("city.md")));
    assert!(
        !files.iter().any(|f| f.ends_with("nested/forest.txt")),
        "removed file gone"
    );
    // The same text in a renamed file embeds to the same vectors.
    let moved: Vec<Vec<f32>> = (0..after.index.rows())
        .filter(|&r| after.index.record(r).unwrap().file.ends_with("forest2.txt"))
        .map(|r| after.index.vectors()[r * 32..(r + 1) * 32].to_vec())
        .collect();
    assert_eq!(
        moved,
        forest_rows
            .iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    );
    // Only the current generation's files remain.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5, "the manifest and one generation: {names:?}");

    let other = IndexOptions {
        chunk_tokens: 20,
        ..options(Existing::Update)
    };
    let err = search::build(
        &s.embedder,
        s.model.clone(),
        &[docs],
        &out,
        &other,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("--chunk-tokens 16"), "{err}");
}

#[test]
fn an_interrupted_build_leaves_the_previous_index_whole() {
    let root = temp("interrupted");
    let docs = documents(&root);
    let out = root.join("index");
    let s = setup("tiny-base");
    build(&s, std::slice::from_ref(&docs), &out, Existing::Refuse).unwrap();
    let expected = Searcher::open(&out, None).unwrap().search(SEA, 3).unwrap();

    // A binary file named directly is an error, met after the folder's files were written.
    std::fs::write(docs.join("city.md"), CITY).unwrap();
    let blob = root.join("blob.dat");
    std::fs::write(&blob, b"\0\x01\x02").unwrap();
    let err = build(&s, &[docs.clone(), blob], &out, Existing::Update).unwrap_err();
    assert!(
        err.to_string().contains("blob.dat") && err.to_string().contains("binary"),
        "{err}"
    );
    let unchanged = Searcher::open(&out, None).unwrap().search(SEA, 3).unwrap();
    assert_eq!(unchanged, expected, "the previous index is as it was");

    // The next build finishes and clears the interrupted generation's files.
    build(&s, &[docs], &out, Existing::Update).unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5, "the manifest and one generation: {names:?}");
}

#[test]
fn bad_inputs_and_mismatched_or_corrupt_indexes_are_refused_by_name() {
    let root = temp("bad");
    let docs = documents(&root);
    let s = setup("tiny-base");

    let missing = build(
        &s,
        &[root.join("nowhere")],
        &root.join("i0"),
        Existing::Refuse,
    )
    .unwrap_err();
    assert!(missing.to_string().contains("nowhere"), "{missing}");
    let latin1 = root.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait\nsecond line \xff").unwrap();
    let err = build(&s, &[latin1], &root.join("i1"), Existing::Refuse).unwrap_err();
    assert!(
        err.to_string().contains("latin1.txt:1") && err.to_string().contains("UTF-8"),
        "{err}"
    );
    std::fs::create_dir_all(root.join("busy")).unwrap();
    std::fs::write(root.join("busy/notes.txt"), "mine").unwrap();
    let err = build(
        &s,
        std::slice::from_ref(&docs),
        &root.join("busy"),
        Existing::Overwrite,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an index"), "{err}");
    assert!(
        root.join("busy/notes.txt").exists(),
        "nothing of the user's is touched"
    );

    let out = root.join("index");
    build(&s, std::slice::from_ref(&docs), &out, Existing::Refuse).unwrap();
    let err = Searcher::open(&out, Some(&fixture("tiny-mlm")))
        .err()
        .expect("another model");
    assert!(err.to_string().contains("different model"), "{err}");
    let other = setup("tiny-mlm");
    let err = build(&other, std::slice::from_ref(&docs), &out, Existing::Update).unwrap_err();
    assert!(err.to_string().contains("same model"), "{err}");

    let vectors = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "f32"))
        .unwrap();
    let bytes = std::fs::read(&vectors).unwrap();
    std::fs::write(&vectors, &bytes[..bytes.len() - 4]).unwrap();
    let err = Searcher::open(&out, None)
        .err()
        .expect("a truncated vector file");
    assert!(
        err.to_string().contains("corrupt index") && err.to_string().contains("vectors-"),
        "{err}"
    );
    std::fs::write(out.join("index.json"), "{\"format\": ").unwrap();
    let err = Searcher::open(&out, None).err().expect("a broken manifest");
    assert!(
        err.to_string().contains("index.json") && err.to_string().contains("corrupt"),
        "{err}"
    );
    let err = Searcher::open(&root.join("docs"), None)
        .err()
        .expect("not an index");
    assert!(err.to_string().contains("not an index"), "{err}");
    // --overwrite rebuilds over a broken index.
    build(&s, &[docs], &out, Existing::Overwrite).unwrap();
    assert!(Searcher::open(&out, None).unwrap().index.rows() > 0);
}

/// The three-file folder (sea, forest, city) indexed with the tiny checkpoint, opened for search.
fn three_file_index(name: &str) -> Searcher {
    let root = temp(name);
    let docs = documents(&root);
    std::fs::write(docs.join("city.md"), CITY).unwrap();
    let out = root.join("index");
    let s = setup("tiny-base");
    build(&s, std::slice::from_ref(&docs), &out, Existing::Refuse).unwrap();
    Searcher::open(&out, None).unwrap()
}

#[test]
fn bm25_and_hybrid_modes_rank_the_same_passages() {
    use bert::search::Mode;
    let searcher = three_file_index("modes");
    // A word only one file has: BM25 finds it there first, whatever the (random) embeddings say.
    let lexical = searcher.search_with("wolves", 3, Mode::Lexical).unwrap();
    assert!(lexical[0].file.ends_with("forest.txt"), "{lexical:?}");
    assert!(lexical
        .iter()
        .all(|h| h.text.to_lowercase().contains("wolves")));
    let hybrid = searcher.search_with("wolves", 3, Mode::Hybrid).unwrap();
    assert_eq!(hybrid.len(), 3);
    assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
    let dense = searcher
        .search_with("wolves", searcher.index.rows(), Mode::Dense)
        .unwrap();
    assert_eq!(
        dense.len(),
        searcher.index.rows(),
        "dense ranks every passage"
    );
    assert!("hybrid".parse::<Mode>().is_ok() && "bm26".parse::<Mode>().is_err());
}

#[test]
fn a_cross_encoder_reorders_hits_by_its_score() {
    use bert::pipelines::{PipelineOptions, TextClassifier};
    let searcher = three_file_index("rerank");
    let query = "where is the sea";
    let hits = searcher.search(query, 6).unwrap();

    let load =
        |name| TextClassifier::load(&fixture(name), &PipelineOptions::default(), None).unwrap();
    let reranker = load("tiny-regression");
    let reranked = search::rerank(&reranker, query, hits.clone()).unwrap();
    assert_eq!(reranked.len(), hits.len());
    for hit in &reranked {
        let pair = reranker.encode_pair(query, &hit.text).unwrap();
        let logit = reranker.logits(&[pair]).unwrap()[0][0];
        let expected = 1.0 / (1.0 + (-logit).exp());
        assert!(
            (hit.score - expected).abs() < 1e-5,
            "{} vs {expected}",
            hit.score
        );
        assert!(
            hits.iter()
                .any(|h| h.text == hit.text && h.file == hit.file),
            "the same passages"
        );
    }
    assert!(
        reranked.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );

    let err = search::rerank(&load("tiny-classify"), query, hits).unwrap_err();
    assert!(err.to_string().contains("one output"), "{err}");
}
