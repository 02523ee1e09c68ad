//! Inputs of the inference commands: the texts given as arguments, or stdin read line by line (plain
//! text or JSON objects). A line that cannot be used (invalid UTF-8, bad JSON, empty) becomes a
//! per-line error, and the lines after it are still read.

use std::io::BufRead;

use anyhow::Context;
use serde::Deserialize;

use crate::args::InputArgs;

/// One usable input.
#[derive(Debug, Clone)]
pub struct Item {
    /// 1-based line number on stdin (or argument position).
    pub line: usize,
    pub text: String,
    pub pair: Option<String>,
}

/// An input line that could not be used, and why.
#[derive(Debug, Clone)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

pub type Input = Result<Item, LineError>;

/// A `--jsonl` input line; other fields (a label, an id) are allowed and ignored. Question answering
/// reads `question` and `context` under the same names.
#[derive(Deserialize)]
struct JsonInput {
    #[serde(alias = "question")]
    text: String,
    #[serde(alias = "context")]
    text_pair: Option<String>,
}

/// Iterates the inputs in order; `allow_empty` keeps empty texts instead of reporting them.
pub fn read(
    args: &InputArgs,
    allow_empty: bool,
) -> Box<dyn Iterator<Item = anyhow::Result<Input>>> {
    let jsonl = args.jsonl;
    let check = move |line: usize, bytes: Vec<u8>| -> Input {
        let item = parse_line(line, bytes, jsonl)?;
        if !allow_empty && item.text.trim().is_empty() {
            return Err(LineError {
                line,
                message: "empty input".into(),
            });
        }
        Ok(item)
    };
    if !args.texts.is_empty() {
        let texts = args.texts.clone();
        return Box::new(
            texts
                .into_iter()
                .enumerate()
                .map(move |(i, t)| Ok(check(i + 1, t.into_bytes()))),
        );
    }
    let mut reader = std::io::BufReader::new(std::io::stdin());
    let mut line = 0;
    Box::new(std::iter::from_fn(move || {
        let mut bytes = Vec::new();
        match reader
            .read_until(b'\n', &mut bytes)
            .context("reading stdin")
        {
            Ok(0) => None,
            Ok(_) => {
                line += 1;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                Some(Ok(check(line, bytes)))
            }
            Err(e) => Some(Err(e)),
        }
    }))
}

fn parse_line(line: usize, bytes: Vec<u8>, jsonl: bool) -> Input {
    let error = |message: String| LineError { line, message };
    let text = String::from_utf8(bytes).map_err(|e| {
        error(format!(
            "invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if !jsonl {
        return Ok(Item {
            line,
            text,
            pair: None,
        });
    }
    let parsed: JsonInput =
        serde_json::from_str(&text).map_err(|e| error(format!("invalid JSON input: {e}")))?;
    Ok(Item {
        line,
        text: parsed.text,
        pair: parsed.text_pair,
    })
}
