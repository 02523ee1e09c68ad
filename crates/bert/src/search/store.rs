//! The index on disk. A directory holding `index.json` (the manifest: model, settings, files and
//! their rows) and, per generation, three files: `vectors-G.f32` (unit-length embeddings, row-major
//! little-endian f32, memory-mapped when searching), `passages-G.jsonl` (one `{file, start, end,
//! text}` per row) and `offsets-G.u64` (where each row's line starts). A build writes a new
//! generation beside the old one and switches by renaming the manifest, so an interrupted build
//! leaves the previous index whole; the old generation's files are removed after the switch. Each
//! generation also has a BM25 index of its passages, `bm25-G/` (see [`lexical`]).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::search::lexical::{self, Lexical};

pub const MANIFEST: &str = "index.json";
const FORMAT: &str = "bert-index";
const VERSION: u32 = 1;

/// The model an index was built with; a query must be embedded by the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// As given to `bert index` (a directory or a Hub id).
    pub name: String,
    /// A hash of the checkpoint's config, tokenizer and weight sizes.
    pub fingerprint: String,
    pub dim: usize,
    pub pooling: String,
}

/// One indexed file and its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// FNV-1a 64 of the file's bytes, hex.
    pub hash: String,
    pub first_row: usize,
    pub rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub model: ModelInfo,
    pub chunk_tokens: usize,
    pub overlap: usize,
    pub generation: u64,
    pub rows: usize,
    /// Whether the generation has a BM25 index (`bm25-G/`).
    #[serde(default)]
    pub lexical: bool,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn new(model: ModelInfo, chunk_tokens: usize, overlap: usize) -> Self {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            model,
            chunk_tokens,
            overlap,
            generation: 0,
            rows: 0,
            lexical: false,
            files: Vec::new(),
        }
    }

    /// The manifest of the index in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| corrupt(&path, e))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(corrupt(
                &path,
                format!(
                    "format {} version {} (this bert reads {FORMAT} version {VERSION})",
                    manifest.format, manifest.version
                ),
            ));
        }
        Ok(Some(manifest))
    }
}

/// A passage as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub file: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        line: 0,
        message: format!("corrupt index: {why}; rebuild it with `bert index --overwrite`"),
    }
}

fn generation_file(dir: &Path, stem: &str, generation: u64) -> PathBuf {
    let extension = match stem {
        "vectors" => "f32",
        "passages" => "jsonl",
        _ => "u64",
    };
    dir.join(format!("{stem}-{generation}.{extension}"))
}

/// An index opened for search: vectors and passages memory-mapped.
pub struct Index {
    pub dir: PathBuf,
    pub manifest: Manifest,
    vectors: Option<Mmap>,
    passages: Option<Mmap>,
    offsets: Option<Mmap>,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index> {
        let manifest = Manifest::read(dir)?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "{} is not an index (no {MANIFEST}); build one with `bert index --out {}`",
                dir.display(),
                dir.display()
            ))
        })?;
        let generation = manifest.generation;
        let map = |stem: &str, expected: Option<usize>| -> Result<Option<Mmap>> {
            let path = generation_file(dir, stem, generation);
            let file = File::open(&path).map_err(|e| corrupt(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len() as usize;
            if let Some(expected) = expected {
                if len != expected {
                    return Err(corrupt(
                        &path,
                        format!("{len} bytes where {expected} were expected"),
                    ));
                }
            }
            if len == 0 {
                return Ok(None);
            }
            // SAFETY: the index's files are only ever replaced by a new generation under new names,
            // never rewritten in place, so the mapping does not change under us.
            Ok(Some(
                unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?,
            ))
        };
        let rows = manifest.rows;
        let vectors = map("vectors", Some(rows * manifest.model.dim * 4))?;
        let offsets = map("offsets", Some(rows * 8))?;
        let passages = map("passages", None)?;
        Ok(Index {
            dir: dir.to_path_buf(),
            manifest,
            vectors,
            passages,
            offsets,
        })
    }

    pub fn rows(&self) -> usize {
        self.manifest.rows
    }

    pub fn dim(&self) -> usize {
        self.manifest.model.dim
    }

    /// Every vector, row-major.
    pub fn vectors(&self) -> &[f32] {
        let Some(bytes) = &self.vectors else {
            return &[];
        };
        const { assert!(cfg!(target_endian = "little"), "indexes are little-endian") };
        // SAFETY: a page-aligned mapping whose length `open` checked to be rows x dim x 4 bytes;
        // every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) }
    }

    /// The BM25 index of this generation.
    pub fn lexical(&self) -> Result<Lexical> {
        if !self.manifest.lexical {
            return Err(Error::InvalidInput(format!(
                "the index {} has no BM25 index; rebuild it with `bert index --overwrite`",
                self.dir.display()
            )));
        }
        Lexical::open(&lexical::directory(&self.dir, self.manifest.generation))
    }

    /// The passage of one row.
    pub fn record(&self, row: usize) -> Result<Record> {
        let path = || generation_file(&self.dir, "passages", self.manifest.generation);
        let (Some(offsets), Some(passages)) = (&self.offsets, &self.passages) else {
            return Err(corrupt(&path(), format!("no row {row}")));
        };
        let offset = |i: usize| -> Option<usize> {
            let bytes = offsets.get(i * 8..i * 8 + 8)?;
            Some(u64::from_le_bytes(bytes.try_into().ok()?) as usize)
        };
        let start = offset(row).ok_or_else(|| corrupt(&path(), format!("no row {row}")))?;
        let end = offset(row + 1).unwrap_or(passages.len());
        let line = passages
            .get(start..end)
            .ok_or_else(|| corrupt(&path(), format!("row {row} points past the end")))?;
        serde_json::from_slice(line).map_err(|e| corrupt(&path(), format!("row {row}: {e}")))
    }
}

/// Writes a new generation of an index; nothing is visible until [`Writer::finish`].
pub struct Writer {
    dir: PathBuf,
    generation: u64,
    vectors: BufWriter<File>,
    passages: BufWriter<File>,
    offsets: BufWriter<File>,
    written: u64,
    rows: usize,
    dim: usize,
}

impl Writer {
    pub fn create(dir: &Path, generation: u64, dim: usize) -> Result<Writer> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let open = |stem: &str| -> Result<BufWriter<File>> {
            let path = generation_file(dir, stem, generation);
            Ok(BufWriter::new(
                File::create(&path).map_err(|e| Error::io(&path, e))?,
            ))
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            generation,
            vectors: open("vectors")?,
            passages: open("passages")?,
            offsets: open("offsets")?,
            written: 0,
            rows: 0,
            dim,
        })
    }

    /// Appends one row.
    pub fn push(&mut self, record: &Record, vector: &[f32]) -> Result<()> {
        assert_eq!(vector.len(), self.dim, "vector width");
        let mut line = serde_json::to_vec(record).expect("a record serialises");
        line.push(b'\n');
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        let io = |stem: &str, e: std::io::Error| {
            Error::io(generation_file(&self.dir, stem, self.generation), e)
        };
        self.offsets
            .write_all(&self.written.to_le_bytes())
            .map_err(|e| io("offsets", e))?;
        self.passages
            .write_all(&line)
            .map_err(|e| io("passages", e))?;
        self.vectors
            .write_all(&bytes)
            .map_err(|e| io("vectors", e))?;
        self.written += line.len() as u64;
        self.rows += 1;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Builds this generation's BM25 index from its passages file.
    fn write_lexical(dir: &Path, generation: u64, rows: usize) -> Result<()> {
        let path = generation_file(dir, "passages", generation);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut records = Vec::with_capacity(rows);
        for (row, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| Error::io(&path, e))?;
            let record: Record = serde_json::from_str(&line).map_err(|e| corrupt(&path, e))?;
            records.push((row as u64, record.text));
        }
        let passages = records.iter().map(|(row, text)| (*row, text.as_str()));
        lexical::write(&lexical::directory(dir, generation), passages)
    }

    /// Makes the files durable, indexes the passages for BM25, switches the manifest to them and
    /// removes other generations.
    pub fn finish(self, mut manifest: Manifest) -> Result<()> {
        manifest.generation = self.generation;
        manifest.rows = self.rows;
        manifest.lexical = true;
        let dir = self.dir.clone();
        for (stem, writer) in [
            ("vectors", self.vectors),
            ("passages", self.passages),
            ("offsets", self.offsets),
        ] {
            let path = generation_file(&self.dir, stem, self.generation);
            let file = writer
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        Self::write_lexical(&dir, manifest.generation, manifest.rows)?;
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        crate::files::write::write_file(&dir.join(MANIFEST), &json)?;
        remove_other_generations(&dir, manifest.generation);
        Ok(())
    }
}

/// The generation of each generation file in `dir`, with its path.
fn generation_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let generation = ["vectors-", "passages-", "offsets-", "bm25-"]
                .iter()
                .find_map(|prefix| name.strip_prefix(prefix))
                .and_then(|rest| rest.split('.').next())
                .and_then(|g| g.parse::<u64>().ok())?;
            Some((generation, entry.path()))
        })
        .collect()
}

/// A generation number no file in `dir` uses yet.
pub fn next_generation(dir: &Path) -> u64 {
    generation_files(dir)
        .iter()
        .map(|(g, _)| g + 1)
        .max()
        .unwrap_or(1)
}

/// Deletes the files of every generation but `keep` (an old index, or an interrupted build's).
fn remove_other_generations(dir: &Path, keep: u64) {
    for (generation, path) in generation_files(dir) {
        if generation != keep {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}
