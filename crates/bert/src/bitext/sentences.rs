//! The sentences of a file to align: one per line, blank lines skipped, each with its line number
//! (counted from 1) so that a pair names the lines it came from. A line that is not UTF-8 is an
//! error naming it, as is a file without a sentence.

use std::path::Path;

use crate::error::{Error, Result};

/// A sentence and the line of the file it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub line: usize,
    pub text: String,
}

/// The non-blank lines of `path`, trimmed of the line ending (`\n` or `\r\n`).
pub fn read(path: &Path) -> Result<Vec<Sentence>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut sentences = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|e| {
            let at = e.valid_up_to();
            Error::data(
                path,
                index + 1,
                format!("not UTF-8 (invalid byte at column {})", at + 1),
            )
        })?;
        if !text.trim().is_empty() {
            sentences.push(Sentence {
                line: index + 1,
                text: text.to_string(),
            });
        }
    }
    if sentences.is_empty() {
        return Err(Error::data(
            path,
            0,
            "no sentences: the file is empty or blank",
        ));
    }
    Ok(sentences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_line_numbers_skips_blank_lines_and_names_bad_ones() {
        let dir = std::env::temp_dir().join(format!("bert-sentences-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "In the beginning\r\n\n  \nAu commencement\n").unwrap();
        let read_back = read(&good).unwrap();
        assert_eq!(
            read_back,
            [
                Sentence {
                    line: 1,
                    text: "In the beginning".into()
                },
                Sentence {
                    line: 4,
                    text: "Au commencement".into()
                },
            ]
        );
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"fine\nnot \xff fine\n").unwrap();
        let message = read(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.txt:2"), "{message}");
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let message = read(&empty).unwrap_err().to_string();
        assert!(message.contains("no sentences"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
