//! Reading a pretraining corpus as a stream of documents: plain text, one sentence per line, a blank line
//! between documents (the format of Google's `create_pretraining_data.py`). Inputs are files, directories
//! (every file below, in name order) or glob patterns; nothing is held in memory beyond one document.
//! Lines that are not UTF-8 are skipped and counted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The files of a corpus, in a fixed order.
#[derive(Debug, Clone)]
pub struct Corpus {
    files: Vec<PathBuf>,
    /// Lines skipped by each pass over the corpus (a pass per epoch, and one for held-out documents).
    skipped_per_pass: Arc<Mutex<Vec<Arc<AtomicUsize>>>>,
}

/// One document: its sentences, in order.
pub type Document = Vec<String>;

impl Corpus {
    /// Expands files, directories and glob patterns (`*`, `?` in the last path component).
    pub fn new(inputs: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for input in inputs {
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if input.is_dir() {
                collect_dir(input, &mut files)?;
            } else if input.is_file() {
                files.push(input.clone());
            } else if name.contains(['*', '?']) {
                let parent = input
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let before = files.len();
                for entry in read_dir_sorted(parent)? {
                    let entry_name = entry
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if entry.is_file() && wildcard_match(&name, &entry_name) {
                        files.push(entry);
                    }
                }
                if files.len() == before {
                    return Err(Error::InvalidInput(format!(
                        "no file matches {}",
                        input.display()
                    )));
                }
            } else {
                return Err(Error::io(
                    input,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
        }
        if files.is_empty() {
            return Err(Error::InvalidInput("no corpus files given".into()));
        }
        Ok(Corpus {
            files,
            skipped_per_pass: Arc::default(),
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Lines of the corpus that are not UTF-8 and were skipped (the most any one pass has met).
    pub fn skipped_lines(&self) -> usize {
        let passes = self
            .skipped_per_pass
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        passes
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Streams the documents of every file in order. A file's end also ends its last document.
    pub fn documents(&self) -> impl Iterator<Item = Result<Document>> + '_ {
        let skipped = Arc::new(AtomicUsize::new(0));
        self.skipped_per_pass
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(skipped.clone());
        self.files
            .iter()
            .flat_map(move |file| FileDocuments::open(file, skipped.clone()))
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in read_dir_sorted(dir)? {
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            collect_dir(&entry, files)?;
        } else if entry.is_file() {
            files.push(entry);
        }
    }
    Ok(())
}

/// `*` matches any run of characters, `?` any one character.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The documents of one file.
struct FileDocuments {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    skipped: Arc<AtomicUsize>,
    error: Option<Error>,
}

impl FileDocuments {
    fn open(path: &Path, skipped: Arc<AtomicUsize>) -> Self {
        let (reader, error) = match File::open(path) {
            Ok(f) => (Some(BufReader::new(f)), None),
            Err(e) => (None, Some(Error::io(path, e))),
        };
        FileDocuments {
            path: path.to_path_buf(),
            reader,
            skipped,
            error,
        }
    }
}

impl Iterator for FileDocuments {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let reader = self.reader.as_mut()?;
        let mut document = Vec::new();
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) => {
                    self.reader = None;
                    return (!document.is_empty()).then_some(Ok(document));
                }
                Ok(_) => {}
                Err(e) => {
                    self.reader = None;
                    return Some(Err(Error::io(&self.path, e)));
                }
            }
            let Ok(line) = std::str::from_utf8(&bytes) else {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let line = line.trim();
            if line.is_empty() {
                if !document.is_empty() {
                    return Some(Ok(document));
                }
            } else {
                document.push(line.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_on_blank_lines_and_files() {
        let dir = std::env::temp_dir().join(format!("bert-corpus-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "one.\ntwo.\n\n\nthree.\n").unwrap();
        std::fs::write(dir.join("sub/b.txt"), b"four.\n\xff\xfe\nfive.\n").unwrap();
        let corpus = Corpus::new(std::slice::from_ref(&dir)).unwrap();
        let docs: Vec<Document> = corpus.documents().collect::<Result<_>>().unwrap();
        assert_eq!(
            docs,
            vec![vec!["one.", "two."], vec!["three."], vec!["four.", "five."]]
        );
        assert_eq!(corpus.skipped_lines(), 1);
        let globbed = Corpus::new(&[dir.join("*.txt")]).unwrap();
        assert_eq!(globbed.files(), [dir.join("a.txt")]);
        assert!(Corpus::new(&[dir.join("*.md")]).is_err());
        assert!(wildcard_match("wiki_??.txt", "wiki_01.txt"));
        assert!(!wildcard_match("wiki_?.txt", "wiki_01.txt"));
    }
}
