//! The model's own thread. Handlers never run the model on the async runtime: they tokenize, queue a
//! job here and await the reply. Embedding and classification jobs waiting together are merged, sorted
//! by length and cut into forward passes of at most `max_batch_tokens` padded tokens that waste little
//! on padding; with several shards the passes run at once, each on one thread (whole passes per core
//! scale better than every op split across cores, as the CLI's batches do). The other tasks run one
//! request at a time. A job whose client has gone (timed out, disconnected) is dropped unrun, and a
//! panic fails only the jobs of its batch.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bert::train::shards::Shards;
use bert::Encoding;
use tokio::sync::oneshot;

use crate::commands::{panicked, Command, Reply};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::{Models, Task};

/// What a batchable job computes per encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Pooled sentence embeddings, not normalised.
    Embeddings,
    /// Sequence-classification logits.
    Logits,
}

enum Job {
    /// Rows of encodings, merged with other jobs of the same kind into shared forward passes.
    Rows {
        kind: Rows,
        encodings: Vec<Encoding>,
        reply: Reply<Vec<Vec<f32>>>,
    },
    /// A command that runs alone.
    Alone(Command),
}

impl Job {
    fn abandoned(&self) -> bool {
        match self {
            Job::Rows { reply, .. } => reply.is_closed(),
            // A command checks its own client before it runs.
            Job::Alone(_) => false,
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Job::Rows { encodings, .. } => encodings.iter().map(|e| e.ids.len()).sum(),
            Job::Alone(_) => 0,
        }
    }
}

/// The handle requests use to reach the model thread.
pub struct Worker {
    queue: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Starts the model thread; it ends when the last `Worker` handle is dropped and the queue is
    /// drained.
    pub fn start(
        models: Arc<Models>,
        max_batch_tokens: usize,
        shards: usize,
        metrics: Arc<Metrics>,
    ) -> (Worker, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel();
        let thread_metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("bert-model".into())
            .spawn(move || {
                let shards = Shards::new(shards).unwrap_or_else(|_| {
                    Shards::new(1).expect("one shard needs no thread of its own")
                });
                let limits = (max_batch_tokens.max(1), &shards);
                run(&models, &jobs, limits, &thread_metrics)
            })
            .expect("spawning the model thread");
        (Worker { queue, metrics }, handle)
    }

    /// One row per encoding, computed in batches shared with other requests.
    pub async fn rows(
        &self,
        kind: Rows,
        encodings: Vec<Encoding>,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Rows {
            kind,
            encodings,
            reply,
        })?;
        receive(answer).await
    }

    /// [`Worker::rows`] with the encodings queued as jobs of at most `part` each (a request that
    /// asked for its batch to be split), answered in order.
    pub async fn rows_in_parts(
        &self,
        kind: Rows,
        encodings: Vec<Encoding>,
        part: usize,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        if encodings.len() <= part {
            return self.rows(kind, encodings).await;
        }
        let mut answers = Vec::new();
        let mut encodings = encodings.into_iter().peekable();
        while encodings.peek().is_some() {
            let (reply, answer) = oneshot::channel();
            let encodings = encodings.by_ref().take(part).collect();
            self.submit(Job::Rows {
                kind,
                encodings,
                reply,
            })?;
            answers.push(answer);
        }
        let mut rows = Vec::new();
        for answer in answers {
            rows.extend(receive(answer).await?);
        }
        Ok(rows)
    }

    /// Sends the command `command` makes with its reply channel to the model thread, and awaits
    /// the answer: `worker.ask(|reply| Command::Ping { reply })`.
    pub async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Alone(command(reply)))?;
        receive(answer).await
    }

    fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.metrics.queued(1);
        self.queue.send(job).map_err(|_| {
            self.metrics.queued(-1);
            ApiError::unhealthy("the model thread has stopped")
        })
    }
}

async fn receive<T>(answer: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    answer
        .await
        .unwrap_or_else(|_| Err(ApiError::backend("the model thread dropped the request")))
}

/// The model thread's loop: take what is queued, run the oldest job with what it can share a batch
/// with, repeat.
fn run(models: &Models, jobs: &mpsc::Receiver<Job>, limits: Limits, metrics: &Metrics) {
    let max_batch_tokens = limits.0;
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        pending.extend(jobs.try_iter());
        let Some(first) = pending.pop_front() else {
            continue;
        };
        metrics.queued(-1);
        match first {
            Job::Alone(command) => command.run(models),
            Job::Rows { .. } if first.abandoned() => {}
            Job::Rows { kind, .. } => {
                let mut group = vec![first];
                take_companions(&mut pending, kind, max_batch_tokens, &mut group, metrics);
                run_rows(models, kind, group, limits, metrics);
            }
        }
    }
}

/// Moves queued jobs of the same kind into `group` while their tokens fit the budget.
fn take_companions(
    pending: &mut VecDeque<Job>,
    kind: Rows,
    max_batch_tokens: usize,
    group: &mut Vec<Job>,
    metrics: &Metrics,
) {
    let mut tokens: usize = group.iter().map(Job::tokens).sum();
    let mut i = 0;
    while i < pending.len() {
        let fits = matches!(&pending[i], Job::Rows { kind: k, .. } if *k == kind)
            && tokens + pending[i].tokens() <= max_batch_tokens;
        if fits {
            if let Some(job) = pending.remove(i) {
                metrics.queued(-1);
                tokens += job.tokens();
                if !job.abandoned() {
                    group.push(job);
                }
            }
        } else {
            i += 1;
        }
    }
}

/// A forward pass's rows, or why it failed.
type RowsResult = Result<Vec<Vec<f32>>, ApiError>;

/// The token budget of one forward pass, and the shards passes run in.
type Limits<'a> = (usize, &'a Shards);

/// Runs the encodings of `group` in forward passes and answers each job with its rows.
fn run_rows(models: &Models, kind: Rows, group: Vec<Job>, limits: Limits, metrics: &Metrics) {
    let (max_batch_tokens, shards) = limits;
    let mut replies = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    for (j, job) in group.into_iter().enumerate() {
        if let Job::Rows {
            encodings, reply, ..
        } = job
        {
            items.extend(encodings.into_iter().enumerate().map(|(i, e)| (j, i, e)));
            replies.push(reply);
        }
    }
    let mut results: Vec<Vec<Option<Vec<f32>>>> = vec![Vec::new(); replies.len()];
    for &(j, _, _) in &items {
        results[j].push(None);
    }
    items.sort_by_key(|(_, _, e)| e.ids.len());
    // At least one pass per shard, so that every shard has work.
    let per_pass = items.len().div_ceil(shards.count()).max(1);
    let passes = passes(&items, max_batch_tokens, per_pass, |(_, _, e)| e.ids.len());
    let mut failure = None;
    for (pass, rows) in run_passes(models, kind, &passes, shards, metrics) {
        match rows {
            Ok(rows) => {
                for ((j, i, _), row) in pass.iter().zip(rows) {
                    results[*j][*i] = Some(row);
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    for (reply, rows) in replies.into_iter().zip(results) {
        let answer = match rows.into_iter().collect::<Option<Vec<_>>>() {
            Some(rows) => Ok(rows),
            None => Err(failure.clone().unwrap_or_else(panicked)),
        };
        let _ = reply.send(answer);
    }
}

/// Each pass with its rows: one pass at a time on every thread, or, with several passes and shards,
/// the passes spread over the shards, each on one thread.
fn run_passes<'p>(
    models: &Models,
    kind: Rows,
    passes: &[&'p [Item]],
    shards: &Shards,
    metrics: &Metrics,
) -> Vec<(&'p [Item], RowsResult)> {
    let one_pass = |pass: &[Item]| {
        let encodings: Vec<Encoding> = pass.iter().map(|(_, _, e)| e.clone()).collect();
        let started = Instant::now();
        let rows = catch_unwind(AssertUnwindSafe(|| forward(models, kind, &encodings)))
            .unwrap_or_else(|_| Err(panicked()));
        metrics.batch(&encodings, started.elapsed());
        rows
    };
    let count = shards.count();
    if count == 1 || passes.len() < 2 {
        return passes.iter().map(|&pass| (pass, one_pass(pass))).collect();
    }
    let done = shards.run(|shard| {
        let mine = passes.iter().skip(shard).step_by(count);
        Ok::<_, ()>(mine.map(|&pass| (pass, one_pass(pass))).collect::<Vec<_>>())
    });
    done.map(|d| d.into_iter().flatten().collect())
        .unwrap_or_default()
}

/// A pass is grown past this many padded tokens only while it wastes little on padding.
const FULL_PASS_TOKENS: usize = 128;

/// Consecutive groups of at most `most` of `items` (sorted by length, `len` giving an item's tokens)
/// whose padded size fits `budget` and, once past [`FULL_PASS_TOKENS`], is at most an eighth padding:
/// a long input does not pad many short ones. An item longer than the budget makes a group alone.
pub fn passes<T>(items: &[T], budget: usize, most: usize, len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    cut(items, budget, most, true, len)
}

/// [`passes`] and [`groups_by_tokens`]: consecutive groups of at most `most` items within `budget`
/// padded tokens, and, when `spare_padding`, at most an eighth padding past [`FULL_PASS_TOKENS`].
fn cut<T>(
    items: &[T],
    budget: usize,
    most: usize,
    spare_padding: bool,
    len: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        let mut longest = len(&items[start]);
        let mut tokens = longest;
        while end < items.len() {
            let next = len(&items[end]);
            let padded = longest.max(next) * (end + 1 - start);
            let wasteful = spare_padding
                && longest * (end - start) >= FULL_PASS_TOKENS
                && (padded - tokens - next) * 8 > padded;
            if padded > budget || end - start >= most || wasteful {
                break;
            }
            longest = longest.max(next);
            tokens += next;
            end += 1;
        }
        groups.push(&items[start..end]);
        start = end;
    }
    groups
}

/// An encoding and where its row goes: (job, position in the job).
type Item = (usize, usize, Encoding);

/// Consecutive groups of `items` whose padded size (count x longest, `len` giving an item's tokens)
/// fits `budget`; an item longer than the budget makes a group alone.
pub fn groups_by_tokens<T>(items: &[T], budget: usize, len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    cut(items, budget, usize::MAX, false, len)
}

/// One forward pass.
fn forward(models: &Models, kind: Rows, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>, ApiError> {
    match kind {
        Rows::Embeddings => {
            let embedder = models
                .embedder
                .as_ref()
                .ok_or_else(|| models.missing(Task::Embed))?;
            Ok(embedder.pooled(encodings, false)?)
        }
        Rows::Logits => {
            let classifier = models
                .classifier
                .as_ref()
                .ok_or_else(|| models.missing(Task::Classify))?;
            Ok(classifier.logits(encodings)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(len: usize) -> Item {
        let encoding = Encoding {
            ids: vec![0; len],
            ..Default::default()
        };
        (0, 0, encoding)
    }

    #[test]
    fn passes_stop_growing_when_padding_would_be_wasted() {
        let lengths = |ls: &[usize]| -> Vec<Item> { ls.iter().map(|&l| item(l)).collect() };
        let tokens = |(_, _, e): &Item| e.ids.len();
        let sizes = |items: &[Item]| -> Vec<usize> {
            passes(items, 16_384, 100, tokens)
                .iter()
                .map(|p| p.len())
                .collect()
        };
        // Equal lengths fill one pass up to the budget.
        assert_eq!(sizes(&lengths(&[32; 40])), vec![40]);
        // 20 x 30 = 600 tokens; a 60-token input would make half of 21 x 60 padding.
        let mut mixed = vec![30; 20];
        mixed.push(60);
        assert_eq!(sizes(&lengths(&mixed)), vec![20, 1]);
        // Below 128 padded tokens a pass keeps growing, padding or not.
        assert_eq!(sizes(&lengths(&[5, 5, 60])), vec![3]);
        assert_eq!(
            passes(&lengths(&[10, 10, 10]), 20, 100, tokens).len(),
            2,
            "the budget holds"
        );
        assert_eq!(
            passes(&lengths(&[10; 9]), 1000, 4, tokens).len(),
            3,
            "so does the count"
        );
    }

    #[test]
    fn groups_fill_the_token_budget_and_keep_long_items_alone() {
        let items: Vec<Item> = [2, 2, 3, 4, 10].into_iter().map(item).collect();
        let tokens = |(_, _, e): &Item| e.ids.len();
        let sizes: Vec<usize> = groups_by_tokens(&items, 8, tokens)
            .iter()
            .map(|p| p.len())
            .collect();
        // 2+2 -> 2x2=4; adding 3 -> 3x3=9 > 8; 3+4 -> 2x4=8; 10 alone.
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(groups_by_tokens(&items, 1000, tokens).len(), 1);
        assert!(groups_by_tokens(&[], 8, tokens).is_empty());
    }
}
