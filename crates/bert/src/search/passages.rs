//! Passages: a document cut into overlapping windows of tokens, each kept as the byte range of the
//! document it covers, so that a search hit points into the file it came from.

use crate::error::Result;
use crate::tokenizer::{Encoding, Tokenizer};

/// One window of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// Byte offsets into the document.
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The window's tokens, as the model takes them.
    pub encoding: Encoding,
}

/// Cuts `text` with `windows` (a tokenizer from [`Tokenizer::with_windows`]: window length and
/// overlap in tokens, `[CLS]` and `[SEP]` included). A text with no tokens has no passages.
pub fn split(windows: &Tokenizer, text: &str) -> Result<Vec<Passage>> {
    let byte_at = char_starts(text);
    let encodings = windows.encode_windows(text)?;
    Ok(encodings
        .into_iter()
        .filter_map(|e| {
            let mut spans = e
                .offsets
                .iter()
                .zip(&e.special_tokens_mask)
                .filter(|(_, &special)| special == 0)
                .map(|(span, _)| *span);
            let first = spans.next()?;
            let last = spans.next_back().unwrap_or(first);
            let (start, end) = (byte_at[first.0], byte_at[last.1]);
            Some(Passage {
                start,
                end,
                text: text[start..end].to_string(),
                encoding: e,
            })
        })
        .collect())
}

/// The byte offset of each character, and of the end.
fn char_starts(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(length: usize, overlap: usize) -> Tokenizer {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny-base"
        ));
        Tokenizer::from_dir(dir)
            .unwrap()
            .with_windows(length, overlap)
            .unwrap()
    }

    #[test]
    fn passages_overlap_cover_the_text_and_point_at_its_bytes() {
        let text = "Él vió the sea — and the sea saw him; ".repeat(12);
        let passages = split(&windows(16, 4), &text).unwrap();
        assert!(passages.len() > 3);
        assert_eq!(passages[0].start, 0);
        assert_eq!(passages.last().unwrap().end, text.trim_end().len());
        for pair in passages.windows(2) {
            assert!(pair[1].start < pair[0].end, "neighbours overlap");
            assert!(pair[1].start > pair[0].start);
        }
        for p in &passages {
            assert_eq!(p.text, text[p.start..p.end]);
        }
    }

    #[test]
    fn a_short_text_is_one_passage_and_an_empty_one_none() {
        let passages = split(&windows(64, 8), "  the sea  ").unwrap();
        assert_eq!(passages.len(), 1);
        assert_eq!((passages[0].start, passages[0].end), (2, 9));
        assert!(split(&windows(64, 8), " \n ").unwrap().is_empty());
    }
}
