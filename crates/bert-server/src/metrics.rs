//! Counters for `GET /metrics`, in Prometheus' text format: requests by route and status, request
//! latency, queue depth, batch sizes and model time. Written by hand: a handful of atomics and one
//! lock do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bert::Encoding;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    queue_depth: AtomicI64,
    in_flight: AtomicI64,
    batches: AtomicU64,
    batch_inputs: AtomicU64,
    batch_tokens: AtomicU64,
    padded_tokens: AtomicU64,
    model_micros: AtomicU64,
}

impl Metrics {
    /// A request finished.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route.to_string(), status)).or_default() += 1;
        drop(requests);
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        latency
            .entry(route.to_string())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Jobs entered (positive) or left (negative) the model queue.
    pub fn queued(&self, change: i64) {
        self.queue_depth.fetch_add(change, Ordering::Relaxed);
    }

    /// Requests began (positive) or ended (negative).
    pub fn in_flight(&self, change: i64) {
        self.in_flight.fetch_add(change, Ordering::Relaxed);
    }

    /// A forward pass ran over these encodings.
    pub fn batch(&self, encodings: &[Encoding], elapsed: Duration) {
        let tokens: usize = encodings.iter().map(|e| e.ids.len()).sum();
        let longest = encodings.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_inputs
            .fetch_add(encodings.len() as u64, Ordering::Relaxed);
        self.batch_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.padded_tokens
            .fetch_add((longest * encodings.len()) as u64, Ordering::Relaxed);
        self.model_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_requests(&mut out);
        let gauges = [
            (
                "bert_queue_depth",
                "Jobs waiting for the model thread.",
                &self.queue_depth,
            ),
            (
                "bert_requests_in_flight",
                "Requests being handled.",
                &self.in_flight,
            ),
        ];
        for (name, help, value) in gauges {
            let value = value.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        }
        let counters = [
            (
                "bert_batches_total",
                "Forward passes run by the embedding and classification batcher.",
                &self.batches,
            ),
            (
                "bert_batch_inputs_total",
                "Inputs in those forward passes.",
                &self.batch_inputs,
            ),
            (
                "bert_batch_tokens_total",
                "Tokens in those forward passes, without padding.",
                &self.batch_tokens,
            ),
            (
                "bert_batch_padded_tokens_total",
                "Tokens in those forward passes, padding included.",
                &self.padded_tokens,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        }
        let seconds = self.model_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "# HELP bert_model_seconds_total Time spent in those forward passes.\n\
             # TYPE bert_model_seconds_total counter\nbert_model_seconds_total {seconds}\n"
        );
        out
    }

    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP bert_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE bert_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "bert_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        drop(requests);
        out.push_str("# HELP bert_request_duration_seconds Request latency, by route.\n");
        out.push_str("# TYPE bert_request_duration_seconds histogram\n");
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (route, h) in latency.iter() {
            let name = "bert_request_duration_seconds";
            for (count, bound) in h.counts.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
        }
    }
}
