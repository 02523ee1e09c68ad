//! Building and updating an index: find the text and Markdown files, cut each into passages, embed
//! them, and write a new generation of the index. With `--update`, a file whose content hash is
//! unchanged keeps its rows (copied, not re-embedded), changed and new files are embedded, and files
//! no longer among the inputs are dropped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pipelines::Embedder;
use crate::search::passages;
use crate::search::store::{self, FileEntry, Index, Manifest, ModelInfo, Record, Writer};

/// File extensions read when walking a directory (files named directly are read whatever their name).
pub const TEXT_EXTENSIONS: [&str; 5] = ["txt", "text", "md", "markdown", "rst"];

/// What to do with an index already in the output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Stop with an error.
    #[default]
    Refuse,
    /// Add, change and remove files by content hash.
    Update,
    /// Build from scratch, replacing it.
    Overwrite,
}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Tokens per passage, `[CLS]` and `[SEP]` included.
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring passages.
    pub overlap: usize,
    pub existing: Existing,
    /// Passages embedded together.
    pub batch_size: usize,
}

/// What a build did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Files found in directories but not indexed, and why (binary, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
    pub passages: usize,
}

/// A file to index; `named` when given directly (its problems are errors, not skips).
struct Source {
    path: PathBuf,
    named: bool,
    size: u64,
}

/// Builds or updates the index in `out` from `inputs` (files and directories). `progress` is told
/// the bytes read so far and the total.
pub fn build(
    embedder: &Embedder,
    model: ModelInfo,
    inputs: &[PathBuf],
    out: &Path,
    options: &IndexOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report> {
    let previous = previous_index(out, &model, options)?;
    let sources = collect(inputs)?;
    let total: u64 = sources.iter().map(|s| s.size).sum();
    let windows = embedder
        .pipeline()
        .tokenizer
        .clone()
        .with_windows(options.chunk_tokens, options.overlap)?;
    let mut writer = Writer::create(out, store::next_generation(out), model.dim)?;
    let mut manifest = Manifest::new(model, options.chunk_tokens, options.overlap);
    let known: HashMap<&str, &FileEntry> = previous
        .iter()
        .flat_map(|p| p.manifest.files.iter().map(|f| (f.path.as_str(), f)))
        .collect();
    let mut report = Report::default();
    let mut done = 0;
    for source in &sources {
        let name = source.path.display().to_string();
        done += source.size;
        let text = match read_text(&source.path) {
            Ok(text) => text,
            Err(e) if !source.named => {
                report.skipped.push((source.path.clone(), e.to_string()));
                progress(done, total);
                continue;
            }
            Err(e) => return Err(e),
        };
        let hash = format!("{:016x}", fnv1a(text.as_bytes()));
        let first_row = writer.rows();
        match (known.get(name.as_str()), &previous) {
            (Some(old), Some(index)) if old.hash == hash => {
                copy_rows(index, old, &mut writer)?;
                report.unchanged += 1;
            }
            (old, _) => {
                embed_file(
                    embedder,
                    &windows,
                    &name,
                    &text,
                    options.batch_size,
                    &mut writer,
                )?;
                if old.is_some() {
                    report.changed += 1;
                } else {
                    report.added += 1;
                }
            }
        }
        manifest.files.push(FileEntry {
            path: name,
            hash,
            first_row,
            rows: writer.rows() - first_row,
        });
        progress(done, total);
    }
    let kept: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    report.removed = known.keys().filter(|p| !kept.contains(*p)).count();
    report.passages = writer.rows();
    writer.finish(manifest)?;
    Ok(report)
}

/// The index already in `out`, when updating (`None` for a new or rebuilt index); errors when the
/// directory may not be touched or the index does not match.
fn previous_index(out: &Path, model: &ModelInfo, options: &IndexOptions) -> Result<Option<Index>> {
    if !out.join(store::MANIFEST).exists() {
        let not_empty = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
        if not_empty {
            return Err(Error::InvalidInput(format!(
                "{} exists and is not an index; give a new or empty directory",
                out.display()
            )));
        }
        return Ok(None);
    }
    match options.existing {
        Existing::Refuse => Err(Error::InvalidInput(format!(
            "{} already holds an index; pass --update to add, change and remove files, or \
             --overwrite to rebuild it",
            out.display()
        ))),
        Existing::Overwrite => Ok(None),
        Existing::Update => {
            let manifest = Manifest::read(out)?.expect("the manifest exists");
            check_same(&manifest, model, options, out)?;
            Ok(Some(Index::open(out)?))
        }
    }
}

/// An update must use the model and passage settings the index was built with.
fn check_same(
    manifest: &Manifest,
    model: &ModelInfo,
    options: &IndexOptions,
    out: &Path,
) -> Result<()> {
    let was = &manifest.model;
    if was.fingerprint != model.fingerprint || was.dim != model.dim || was.pooling != model.pooling
    {
        return Err(Error::InvalidInput(format!(
            "{} was built with the model {} ({} dimensions, {} pooling); --update must use the same \
             model, or rebuild with --overwrite",
            out.display(),
            was.name,
            was.dim,
            was.pooling
        )));
    }
    if (manifest.chunk_tokens, manifest.overlap) != (options.chunk_tokens, options.overlap) {
        return Err(Error::InvalidInput(format!(
            "{} was built with --chunk-tokens {} --overlap {}; --update must use the same, or \
             rebuild with --overwrite",
            out.display(),
            manifest.chunk_tokens,
            manifest.overlap
        )));
    }
    Ok(())
}

/// The files of `inputs`: files as given, directories walked for text files (hidden entries and
/// symbolic links to directories skipped), each once, as absolute paths.
fn collect(inputs: &[PathBuf]) -> Result<Vec<Source>> {
    let mut seen = BTreeSet::new();
    let mut sources = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_dir() {
            walk(input, &mut seen, &mut sources)?;
        } else {
            add(input, true, meta.len(), &mut seen, &mut sources)?;
        }
    }
    Ok(sources)
}

fn walk(dir: &Path, seen: &mut BTreeSet<PathBuf>, sources: &mut Vec<Source>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let Ok(link) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if hidden {
            continue;
        }
        if link.is_dir() {
            walk(&path, seen, sources)?;
        } else if is_text_name(&path) {
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() {
                    add(&path, false, meta.len(), seen, sources)?;
                }
            }
        }
    }
    Ok(())
}

fn is_text_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| TEXT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn add(
    path: &Path,
    named: bool,
    size: u64,
    seen: &mut BTreeSet<PathBuf>,
    sources: &mut Vec<Source>,
) -> Result<()> {
    let path = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    if seen.insert(path.clone()) {
        sources.push(Source { path, named, size });
    }
    Ok(())
}

/// A file's text; a file with NUL bytes or invalid UTF-8 is refused as binary.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.contains(&0) {
        return Err(Error::data(
            path,
            0,
            "a binary file (it holds NUL bytes), not text",
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::data(
            path,
            line,
            format!("not UTF-8 text (invalid byte at offset {at})"),
        )
    })
}

/// Cuts one file into passages, embeds them and appends them.
fn embed_file(
    embedder: &Embedder,
    windows: &crate::Tokenizer,
    name: &str,
    text: &str,
    batch_size: usize,
    writer: &mut Writer,
) -> Result<()> {
    let passages = passages::split(windows, text)?;
    for batch in passages.chunks(batch_size.max(1)) {
        let encodings: Vec<_> = batch.iter().map(|p| p.encoding.clone()).collect();
        let vectors = embedder.pooled(&encodings, true)?;
        for (passage, vector) in batch.iter().zip(vectors) {
            let record = Record {
                file: name.to_string(),
                start: passage.start,
                end: passage.end,
                text: passage.text.clone(),
            };
            writer.push(&record, &vector)?;
        }
    }
    Ok(())
}

/// Copies an unchanged file's rows from the previous generation.
fn copy_rows(index: &Index, entry: &FileEntry, writer: &mut Writer) -> Result<()> {
    let dim = index.dim();
    let vectors = index.vectors();
    for row in entry.first_row..entry.first_row + entry.rows {
        let vector = vectors
            .get(row * dim..(row + 1) * dim)
            .ok_or_else(|| Error::data(&index.dir, 0, format!("corrupt index: no row {row}")))?;
        writer.push(&index.record(row)?, vector)?;
    }
    Ok(())
}

/// FNV-1a, 64 bits: a stable content hash for change detection (not for adversaries).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fingerprint of the checkpoint in `dir`: its config, tokenizer and sentence-transformers files and
/// the sizes of its weight files. Two indexes agree on a model when their fingerprints do.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut hash = fnv1a(b"bert-index-model");
    let mix = |hash: u64, bytes: &[u8]| fnv1a(&[hash.to_le_bytes().as_slice(), bytes].concat());
    for name in [
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            hash = mix(hash, &bytes);
        }
    }
    let mut weights: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let weight = name.ends_with(".safetensors") || name.ends_with(".bin");
            Some((name, e.metadata().ok()?.len())).filter(|_| weight)
        })
        .collect();
    weights.sort();
    for (name, size) in weights {
        hash = mix(hash, format!("{name}:{size}").as_bytes());
    }
    Ok(format!("{hash:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }
}
