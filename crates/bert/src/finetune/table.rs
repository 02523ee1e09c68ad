//! Labelled data files as tables: CSV or TSV with a header row (quoted and multi-line fields, an unnamed
//! index column allowed) or JSON Lines (one object per line). Every row keeps its line number, so an error
//! names the file and line; every missing column names the columns the file has.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{read_to_string, Error, Result};

/// One row: its first line in the file and its cells by column name.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub cells: Map<String, Value>,
}

/// A data file read whole (fine-tuning sets fit in memory).
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    /// Column names in file order (for JSON Lines: in order of first appearance).
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// The formats, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Delimited(u8),
    JsonLines,
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Ok(Format::Delimited(b',')),
        "tsv" | "tab" => Ok(Format::Delimited(b'\t')),
        "jsonl" | "ndjson" | "json" => Ok(Format::JsonLines),
        _ => Err(Error::data(
            path,
            0,
            "unknown data format: name the file .csv, .tsv or .jsonl",
        )),
    }
}

impl Table {
    /// Reads a CSV, TSV or JSON Lines file; an empty file (no rows) is an error.
    pub fn read(path: &Path) -> Result<Table> {
        let table = match format_of(path)? {
            Format::Delimited(delimiter) => read_delimited(path, delimiter)?,
            Format::JsonLines => read_json_lines(path)?,
        };
        if table.rows.is_empty() {
            return Err(Error::data(path, 0, "the file holds no rows"));
        }
        Ok(table)
    }

    /// Checks that `column` (given by `flag`) exists, naming the columns the file has if not.
    pub fn require(&self, column: &str, flag: &str) -> Result<()> {
        if self.columns.iter().any(|c| c == column) {
            return Ok(());
        }
        Err(Error::data(
            &self.path,
            0,
            format!(
                "no column `{column}` ({flag}); the file has: {}",
                self.columns
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// An error about `row`.
    pub fn error(&self, row: &Row, message: impl Into<String>) -> Error {
        Error::data(&self.path, row.line, message)
    }

    /// The text in `column` of `row`: a string cell, or a number written as text.
    pub fn text<'a>(&self, row: &'a Row, column: &str) -> Result<std::borrow::Cow<'a, str>> {
        match row.cells.get(column) {
            Some(Value::String(s)) => Ok(s.as_str().into()),
            Some(Value::Number(n)) => Ok(n.to_string().into()),
            Some(Value::Bool(b)) => Ok(b.to_string().into()),
            Some(Value::Null) | None => Err(self.error(row, format!("`{column}` is missing"))),
            Some(other) => {
                Err(self.error(row, format!("`{column}` should be text, found {other}")))
            }
        }
    }
}

fn read_delimited(path: &Path, delimiter: u8) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let cells = columns
            .iter()
            .zip(record.iter())
            .map(|(c, v)| (c.clone(), Value::String(v.to_string())))
            .collect();
        rows.push(Row { line, cells });
    }
    Ok(Table {
        path: path.to_path_buf(),
        columns,
        rows,
    })
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line() as usize);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        csv::ErrorKind::Io(err) => err.to_string(),
        _ => e.to_string(),
    };
    Error::data(path, line, message)
}

fn read_json_lines(path: &Path) -> Result<Table> {
    let text = read_to_string(path)?;
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for object in json_objects(path, &text) {
        let (line, cells) = object?;
        for key in cells.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        rows.push(Row { line, cells });
    }
    Ok(Table {
        path: path.to_path_buf(),
        columns,
        rows,
    })
}

/// The objects of a JSON Lines text with their line numbers, blank lines skipped; a line that is not
/// a JSON object is an error naming `path` and the line.
pub(crate) fn json_objects<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, Map<String, Value>)>> + 'a {
    (text.lines().enumerate())
        .filter(|(_, line)| !line.trim().is_empty())
        .map(
            move |(index, line)| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(object)) => Ok((index + 1, object)),
                Ok(_) => Err(Error::data(path, index + 1, "expected a JSON object")),
                Err(e) => Err(Error::data(path, index + 1, format!("invalid JSON: {e}"))),
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bert-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn csv_with_quotes_multiline_fields_and_an_index_column() {
        let path = write(
            "a.csv",
            ",text,label\n0,\"hello, \"\"world\"\"\",pos\n1,\"two\nlines\",neg\n",
        );
        let table = Table::read(&path).unwrap();
        assert_eq!(table.columns, ["", "text", "label"]);
        assert_eq!(table.rows.len(), 2);
        assert_eq!(
            table.text(&table.rows[0], "text").unwrap(),
            "hello, \"world\""
        );
        assert_eq!(table.text(&table.rows[1], "text").unwrap(), "two\nlines");
        assert_eq!(table.rows[1].line, 3);
    }

    #[test]
    fn errors_name_the_file_line_and_columns() {
        let path = write("b.tsv", "text\tlabel\na\tpos\nb\n");
        let err = Table::read(&path).unwrap_err().to_string();
        assert!(err.contains("b.tsv:3") && err.contains("1 fields"), "{err}");

        let path = write("c.jsonl", "{\"text\": \"a\", \"label\": 1}\n\nnot json\n");
        let err = Table::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("c.jsonl:3") && err.contains("invalid JSON"),
            "{err}"
        );

        let path = write("d.jsonl", "{\"sentence\": \"a\", \"label\": 1}\n");
        let table = Table::read(&path).unwrap();
        assert_eq!(table.text(&table.rows[0], "label").unwrap(), "1");
        let err = table
            .require("text", "--text-column")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`text`") && err.contains("`sentence`, `label`"),
            "{err}"
        );

        let err = Table::read(&write("e.csv", "text,label\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no rows"), "{err}");
        let err = Table::read(&write("f.txt", "x")).unwrap_err().to_string();
        assert!(err.contains(".csv, .tsv or .jsonl"), "{err}");
    }
}
