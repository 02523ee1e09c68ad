//! BM25 over the same passages, with tantivy, for lexical and hybrid search. Each index generation
//! gets its own tantivy directory (`bm25-G/`), built from the generation's passages before the
//! manifest switches to it; a row's number is kept in a fast field, so a BM25 hit is a row like a
//! vector hit.

use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, FAST, TEXT};
use tantivy::{doc, Index, IndexReader, ReloadPolicy, TantivyDocument};

use crate::error::{Error, Result};
use crate::search::exact::Hit;

/// Memory for tantivy's indexing buffer.
const WRITER_HEAP: usize = 64 << 20;

/// The tantivy directory of a generation.
pub fn directory(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("bm25-{generation}"))
}

fn failed(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::data(path, 0, format!("BM25 index: {e}"))
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let text = builder.add_text_field("text", TEXT);
    let row = builder.add_u64_field("row", FAST);
    (builder.build(), text, row)
}

/// Indexes `passages` (row, text) into a new tantivy directory at `path`.
pub fn write<'a>(path: &Path, passages: impl Iterator<Item = (u64, &'a str)>) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    let (schema, text, row) = schema();
    let index = Index::create_in_dir(path, schema).map_err(|e| failed(path, e))?;
    let mut writer = index
        .writer::<TantivyDocument>(WRITER_HEAP)
        .map_err(|e| failed(path, e))?;
    for (number, passage) in passages {
        writer
            .add_document(doc!(text => passage, row => number))
            .map_err(|e| failed(path, e))?;
    }
    writer.commit().map_err(|e| failed(path, e))?;
    writer.wait_merging_threads().map_err(|e| failed(path, e))?;
    Ok(())
}

/// A generation's BM25 index, opened for search.
pub struct Lexical {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    text: Field,
}

impl Lexical {
    pub fn open(path: &Path) -> Result<Lexical> {
        let index = Index::open_in_dir(path).map_err(|e| failed(path, e))?;
        let text = index
            .schema()
            .get_field("text")
            .map_err(|e| failed(path, e))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| failed(path, e))?;
        Ok(Lexical {
            path: path.to_path_buf(),
            index,
            reader,
            text,
        })
    }

    /// The `k` rows with the highest BM25 score for `query` (any text: operators it cannot parse
    /// are read as words), best first.
    pub fn top_k(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        let (query, _) = parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| failed(&self.path, e))?;
        top.into_iter()
            .map(|(score, address)| {
                let rows = searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64("row")
                    .map_err(|e| failed(&self.path, e))?;
                let row = rows
                    .first(address.doc_id)
                    .ok_or_else(|| failed(&self.path, "a passage without its row"))?;
                Ok(Hit {
                    row: row as usize,
                    score,
                })
            })
            .collect()
    }
}

/// Reciprocal rank fusion of ranked lists (Cormack et al. 2009): each row scores the sum of
/// 1 / (60 + rank) over the lists it appears in. Best first, `k` of them.
pub fn fuse(lists: &[Vec<Hit>], k: usize) -> Vec<Hit> {
    const K: f32 = 60.0;
    let mut scores: std::collections::HashMap<usize, f32> = std::collections::HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            *scores.entry(hit.row).or_default() += 1.0 / (K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<Hit> = scores
        .into_iter()
        .map(|(row, score)| Hit { row, score })
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
    fused.truncate(k);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_finds_passages_by_their_words() {
        let dir = std::env::temp_dir().join(format!("bert-bm25-{}", std::process::id()));
        let passages = [
            "the sea was calm",
            "wolves in the forest",
            "the city never sleeps, the city",
        ];
        write(
            &dir,
            passages
                .iter()
                .enumerate()
                .map(|(i, p)| (i as u64 * 10, *p)),
        )
        .unwrap();
        let lexical = Lexical::open(&dir).unwrap();
        let hits = lexical.top_k("city", 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].row, 20, "rows are the stored numbers");
        let both = lexical.top_k("forest OR sea", 5).unwrap();
        assert_eq!(both.len(), 2);
        // Unbalanced quotes and operators are read as words, not refused.
        assert!(lexical.top_k("\"sea AND (", 5).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fusion_rewards_rows_both_lists_rank_high() {
        let hit = |row| Hit { row, score: 0.0 };
        let fused = fuse(
            &[vec![hit(1), hit(2), hit(3)], vec![hit(3), hit(1), hit(9)]],
            3,
        );
        let rows: Vec<usize> = fused.iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![1, 3, 2]);
    }
}
