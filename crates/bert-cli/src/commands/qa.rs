//! `bert qa`: questions about a context (or question/context pairs as JSON Lines) in, the best answers
//! out, one JSON line per question in input order; a bad line gets its own error line.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pipelines::{Answer, QaOptions, QuestionAnswerer};
use serde::Serialize;

use crate::args::{InputArgs, QaArgs};
use crate::input;
use crate::output::Output;
use crate::runner::{model_dir, pipeline_options};

#[derive(Serialize)]
struct AnswerLine<'a> {
    question: &'a str,
    answer: &'a str,
    score: f32,
    start: usize,
    end: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    answers: Option<&'a [Answer]>,
}

pub fn run(args: QaArgs) -> Result<ExitCode> {
    if args.context.is_none() && !args.jsonl {
        bail!("give --context (or --jsonl lines with a context each)");
    }
    let dir = model_dir(&args.model, false)?;
    let options = QaOptions {
        top_k: args.top_k as usize,
        max_answer_len: args.max_answer_len as usize,
        handle_impossible_answer: args.handle_impossible_answer,
        max_seq_len: args.max_seq_len,
        doc_stride: args.doc_stride,
    };
    let qa = QuestionAnswerer::load(&dir, &pipeline_options(&args.model), options)
        .with_context(|| format!("loading {}", dir.display()))?;
    let inputs = InputArgs {
        texts: args.questions.clone(),
        jsonl: args.jsonl,
    };
    let mut out = Output::new();
    for item in input::read(&inputs, false) {
        let item = match item? {
            Ok(item) => item,
            Err(e) => {
                out.line_error(e.line, &e.message)?;
                continue;
            }
        };
        let Some(context) = item.pair.as_deref().or(args.context.as_deref()) else {
            out.line_error(
                item.line,
                "no context: give `context` in the line or --context",
            )?;
            continue;
        };
        let answers = qa
            .encode(&item.text, context)
            .and_then(|windows| qa.answer(context, &windows));
        match answers {
            Ok(answers) => {
                let best = answers.first();
                let line = AnswerLine {
                    question: &item.text,
                    answer: best.map_or("", |a| a.answer.as_str()),
                    score: best.map_or(0.0, |a| a.score),
                    start: best.map_or(0, |a| a.start),
                    end: best.map_or(0, |a| a.end),
                    answers: (args.top_k > 1).then_some(answers.as_slice()),
                };
                out.write_line(&serde_json::to_string(&line)?)?;
            }
            Err(e) => out.line_error(item.line, &e.to_string())?,
        }
    }
    out.flush()?;
    Ok(if out.failed_lines() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
