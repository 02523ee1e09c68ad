//! SQuAD files (v1.1 and v2.0): articles of paragraphs of questions, each with its answers as text and
//! a character position in the paragraph. An answer whose text is not at its position is skipped and
//! counted, as `transformers`' SQuAD processor does; v2's unanswerable questions have no answers.

use std::path::Path;

use serde::Deserialize;

use crate::error::{read_json, Error, Result};

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    id: serde_json::Value,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    answer_start: usize,
}

/// One question about one context.
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub context: String,
    /// Answers whose text is at their position: (text, first character, one past the last character).
    pub answers: Vec<(String, usize, usize)>,
    /// Every gold answer text (what evaluation compares with; empty for unanswerable questions).
    pub gold_texts: Vec<String>,
    pub is_impossible: bool,
}

/// A SQuAD file read whole.
#[derive(Debug, Clone)]
pub struct SquadSet {
    pub examples: Vec<QaExample>,
    /// Whether the file has unanswerable questions (SQuAD v2.0).
    pub with_negatives: bool,
    /// Answers whose text was not at `answer_start`.
    pub misplaced_answers: usize,
}

/// Reads a SQuAD JSON file.
pub fn read_squad(path: &Path) -> Result<SquadSet> {
    let file: SquadFile = read_json(path)?;
    let mut set = SquadSet {
        examples: Vec::new(),
        with_negatives: false,
        misplaced_answers: 0,
    };
    for paragraph in file.data.into_iter().flat_map(|a| a.paragraphs) {
        let chars: Vec<char> = paragraph.context.chars().collect();
        for q in paragraph.qas {
            let id = match q.id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            set.with_negatives |= q.is_impossible;
            let mut answers = Vec::new();
            for a in &q.answers {
                let end = a.answer_start + a.text.chars().count();
                let found: String = chars
                    .get(a.answer_start..end.min(chars.len()))
                    .map(|s| s.iter().collect())
                    .unwrap_or_default();
                if found == a.text {
                    answers.push((a.text.clone(), a.answer_start, end));
                } else {
                    set.misplaced_answers += 1;
                }
            }
            let gold_texts = if q.is_impossible {
                Vec::new()
            } else {
                q.answers.iter().map(|a| a.text.clone()).collect()
            };
            set.examples.push(QaExample {
                id,
                question: q.question,
                context: paragraph.context.clone(),
                answers: if q.is_impossible { Vec::new() } else { answers },
                gold_texts,
                is_impossible: q.is_impossible,
            });
        }
    }
    if set.examples.is_empty() {
        return Err(Error::data(path, 0, "the file holds no questions"));
    }
    Ok(set)
}
