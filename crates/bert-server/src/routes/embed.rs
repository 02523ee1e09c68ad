//! Sentence vectors as text-embeddings-inference serves them: `POST /embed` (pooled, optionally
//! normalised and cut to `dimensions`), `POST /embed_all` (every token's vector), `POST /similarity`
//! (cosine of a source sentence with others) and `POST /embed_sparse` (SPLADE over the masked-LM
//! head). All read `truncate`, `truncation_direction` and `prompt_name` alike; `/embed` also chunks
//! long texts (`"long_text": "chunk"`) and splits big batches (`"split_batch": true`).

use axum::extract::State;
use axum::Json;
use bert::pooling::normalize;
use bert::Encoding;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::Command;
use crate::error::ApiError;
use crate::input::{
    average_windows, check_batch, check_count, encode_all, encode_windows, kind, texts,
    with_prompt, Direction, JsonBody, LongText,
};
use crate::models::{Models, Task};
use crate::routes::off_runtime;
use crate::worker::Rows;
use crate::AppState;

/// Masked-LM logits rows in one SPLADE pass (each row is a vocabulary of floats).
const SPARSE_TOKENS: usize = 2048;

/// How one request's texts become encodings and vectors.
pub struct EmbedInput {
    pub texts: Vec<String>,
    /// The request field the texts came from, for errors.
    pub field: &'static str,
    pub truncate: bool,
    pub direction: Direction,
    pub prompt_name: Option<String>,
    pub long_text: LongText,
    pub split_batch: bool,
}

impl EmbedInput {
    /// `texts` under `field` with the server's defaults for everything else.
    pub fn new(state: &AppState, texts: Vec<String>, field: &'static str) -> Self {
        EmbedInput {
            texts,
            field,
            truncate: state.config.auto_truncate,
            direction: Direction::Right,
            prompt_name: None,
            long_text: LongText::Truncate,
            split_batch: false,
        }
    }
}

#[derive(Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    inputs: Value,
    /// Unit length (default true, as text-embeddings-inference).
    normalize: Option<bool>,
    /// Cut inputs longer than the model takes instead of refusing them.
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Direction,
    /// A prompt of `config_sentence_transformers.json` to put before each input.
    prompt_name: Option<String>,
    /// Keep the first N dimensions (Matryoshka), then normalise.
    dimensions: Option<usize>,
    #[serde(default)]
    long_text: LongText,
    #[serde(default)]
    split_batch: bool,
}

pub async fn embed(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<EmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let input = EmbedInput {
        texts: texts(&request.inputs, "inputs")?,
        field: "inputs",
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        direction: request.truncation_direction,
        prompt_name: request.prompt_name,
        long_text: request.long_text,
        split_batch: request.split_batch,
    };
    let (mut vectors, _) = embeddings(&state, input).await?;
    if let Some(d) = request.dimensions {
        keep_dimensions(&mut vectors, d)?;
    }
    if request.normalize.unwrap_or(true) {
        vectors.iter_mut().for_each(|v| normalize(v));
    }
    Ok(Json(vectors))
}

/// Cuts each vector to its first `d` values (refusing 0 and more than there are).
pub fn keep_dimensions(vectors: &mut [Vec<f32>], d: usize) -> Result<(), ApiError> {
    let size = vectors.first().map_or(0, Vec::len);
    if d == 0 || d > size {
        return Err(ApiError::validation(format!(
            "`dimensions` must be between 1 and the model's {size}, not {d}"
        )));
    }
    vectors.iter_mut().for_each(|v| v.truncate(d));
    Ok(())
}

/// Pooled, unnormalised vectors of the input's texts and the number of tokens they took (SPLADE
/// vectors, as dense vocabulary-sized rows, on a `--pooling splade` server).
pub async fn embeddings(
    state: &AppState,
    input: EmbedInput,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let max = state.config.max_client_batch_size;
    check_batch(input.texts.len(), input.field, max, input.split_batch)?;
    if state.models.splade {
        let (sparse, tokens) = sparse_vectors(state, input).await?;
        let vocab = state.models.config.vocab_size;
        return Ok((sparse.iter().map(|v| densify(v, vocab)).collect(), tokens));
    }
    if state.models.embedder.is_none() {
        return Err(state.models.missing(Task::Embed));
    }
    let chunk = input.long_text == LongText::Chunk;
    let (encodings, windows) = off_runtime(state, move |models| encode(models, input)).await?;
    let tokens = encodings.iter().map(|e| e.ids.len()).sum();
    let part = if chunk { usize::MAX } else { max };
    let vectors = state
        .worker
        .rows_in_parts(Rows::Embeddings, encodings, part)
        .await?;
    Ok((average_windows(vectors, &windows), tokens))
}

/// The encodings of the input's texts (prompted), and how many windows each text took.
fn encode(models: &Models, input: EmbedInput) -> Result<(Vec<Encoding>, Vec<usize>), ApiError> {
    let embedder = (models.embedder.as_ref()).ok_or_else(|| models.missing(Task::Embed))?;
    let prompt = models.prompt(input.prompt_name.as_deref())?;
    let texts = with_prompt(input.texts, prompt);
    let tokenizer = &embedder.pipeline().tokenizer;
    if input.long_text == LongText::Chunk {
        let chunker = models.chunker.as_ref().unwrap_or(tokenizer);
        return encode_windows(texts.iter().map(String::as_str), input.field, chunker);
    }
    let side = input.direction.into();
    let encodings = encode_all(
        &texts,
        input.field,
        input.truncate,
        models.max_input_length,
        |t| tokenizer.encode_from(t, side),
    )?;
    let windows = vec![1; encodings.len()];
    Ok((encodings, windows))
}

/// The texts, truncation and prompt fields every embedding route reads.
#[derive(Deserialize, Default)]
pub struct TextOptions {
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Direction,
    prompt_name: Option<String>,
}

impl TextOptions {
    fn input(self, state: &AppState, texts: Vec<String>, field: &'static str) -> EmbedInput {
        EmbedInput {
            truncate: self.truncate.unwrap_or(state.config.auto_truncate),
            direction: self.truncation_direction,
            prompt_name: self.prompt_name,
            ..EmbedInput::new(state, texts, field)
        }
    }
}

#[derive(Deserialize)]
pub struct EmbedAllRequest {
    #[serde(default)]
    inputs: Value,
    #[serde(flatten)]
    options: TextOptions,
}

/// `POST /embed_all`: per input, every token's final hidden state (special tokens included).
pub async fn embed_all(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<EmbedAllRequest>,
) -> Result<Json<Vec<Vec<Vec<f32>>>>, ApiError> {
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let input = request.options.input(&state, texts, "inputs");
    if state.models.embedder.is_none() {
        return Err(state.models.missing(Task::Embed));
    }
    let (encodings, _) = off_runtime(&state, move |models| encode(models, input)).await?;
    let budget = state.config.max_batch_tokens;
    let states = state
        .worker
        .ask(|reply| Command::TokenStates {
            encodings,
            budget,
            reply,
        })
        .await?;
    Ok(Json(states))
}

#[derive(Deserialize)]
pub struct SimilarityRequest {
    #[serde(default)]
    inputs: Value,
    /// `truncate`, `truncation_direction`, `prompt_name`.
    #[serde(default)]
    parameters: Option<TextOptions>,
}

/// `POST /similarity`: the cosine similarity of `inputs.source_sentence` with each of
/// `inputs.sentences`, in their order.
pub async fn similarity(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SimilarityRequest>,
) -> Result<Json<Vec<f32>>, ApiError> {
    let Value::Object(inputs) = &request.inputs else {
        return Err(ApiError::validation(format!(
            "`inputs` must be an object {{\"source_sentence\": text, \"sentences\": [text, ...]}}, \
             not {}",
            kind(&request.inputs)
        )));
    };
    let source = match inputs.get("source_sentence") {
        Some(Value::String(s)) => s.clone(),
        other => {
            return Err(ApiError::validation(format!(
                "`inputs.source_sentence` must be a string, not {}",
                other.map_or("missing", kind)
            )))
        }
    };
    let sentences = texts(
        inputs.get("sentences").unwrap_or(&Value::Null),
        "inputs.sentences",
    )?;
    check_count(
        sentences.len() + 1,
        "inputs.sentences",
        state.config.max_client_batch_size,
    )?;
    if sentences.is_empty() {
        return Err(ApiError::empty("`inputs.sentences` is empty"));
    }
    let all = std::iter::once(source).chain(sentences).collect();
    let options = request.parameters.unwrap_or_default();
    let (vectors, _) = embeddings(&state, options.input(&state, all, "inputs.sentences")).await?;
    let (source, others) = vectors.split_first().expect("one vector per text");
    Ok(Json(others.iter().map(|v| cosine(source, v)).collect()))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

/// One vocabulary entry of a SPLADE vector.
#[derive(Serialize)]
pub struct SparseValue {
    index: u32,
    value: f32,
}

/// `POST /embed_sparse`: per input, the non-zero entries of its SPLADE vector, by token id.
pub async fn embed_sparse(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<EmbedAllRequest>,
) -> Result<Json<Vec<Vec<SparseValue>>>, ApiError> {
    let texts = texts(&request.inputs, "inputs")?;
    let input = request.options.input(&state, texts, "inputs");
    check_count(
        input.texts.len(),
        "inputs",
        state.config.max_client_batch_size,
    )?;
    let (vectors, _) = sparse_vectors(&state, input).await?;
    Ok(Json(
        vectors
            .into_iter()
            .map(|v| {
                (v.into_iter())
                    .map(|(index, value)| SparseValue { index, value })
                    .collect()
            })
            .collect(),
    ))
}

/// SPLADE vectors of the input's texts from the masked-LM head, and the tokens they took.
async fn sparse_vectors(
    state: &AppState,
    input: EmbedInput,
) -> Result<(Vec<Vec<(u32, f32)>>, usize), ApiError> {
    if state.models.filler.is_none() {
        return Err(no_masked_lm(&state.models));
    }
    let encodings = off_runtime(state, move |models| {
        let filler = models.filler.as_ref().ok_or_else(|| no_masked_lm(models))?;
        let prompt = models.prompt(input.prompt_name.as_deref())?;
        let texts = with_prompt(input.texts, prompt);
        let side = input.direction.into();
        let limit = models.max_input_length;
        let tokenizer = &filler.pipeline().tokenizer;
        encode_all(&texts, input.field, input.truncate, limit, |t| {
            tokenizer.encode_from(t, side)
        })
    })
    .await?;
    let tokens = encodings.iter().map(|e| e.ids.len()).sum();
    let budget = SPARSE_TOKENS.min(state.config.max_batch_tokens);
    let vectors = state
        .worker
        .ask(|reply| Command::Sparse {
            encodings,
            budget,
            reply,
        })
        .await?;
    Ok((vectors, tokens))
}

fn no_masked_lm(models: &Models) -> ApiError {
    ApiError::unsupported(format!(
        "/embed_sparse needs a masked-LM head (a *ForMaskedLM checkpoint, served with --pooling \
         splade or --task fill-mask); this server serves {}",
        models.routes().join(", ")
    ))
}

/// A sparse vector written out in full.
fn densify(sparse: &[(u32, f32)], size: usize) -> Vec<f32> {
    let mut dense = vec![0.0; size];
    for &(i, w) in sparse {
        dense[i as usize] = w;
    }
    dense
}
