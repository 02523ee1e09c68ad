//! Load benchmark for `bert serve`, on loopback only: starts the server, sends one-text `/embed`
//! requests from 1, 8 and 64 concurrent clients, and prints throughput, p50/p99 latency, the
//! server's peak RSS and how it batched (inputs per forward pass, the share of padding, the time its
//! model spent, summed over shards) for each; then rounds that alternate the largest client count
//! with the same texts through `bert embed` in one process, for the ratio (the median round); then a
//! long run that samples the server's RSS to show whether memory stays flat.
//! Bounded in requests and in seconds per phase.
//!
//! ```sh
//! cargo build --release -p bert-cli -p bert-server --example load
//! target/release/examples/load --bert target/release/bert --model DIR --texts FILE \
//!     [--requests 2000] [--clients 1,8,64] [--rounds 3] [--flat 100000] [--seconds 300]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    bert: String,
    model: String,
    texts: Vec<String>,
    requests: usize,
    clients: Vec<usize>,
    flat: usize,
    seconds: u64,
    rounds: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let required = |flag: &str| value(flag).unwrap_or_else(|| panic!("{flag} is required"));
    let number =
        |flag: &str, default: usize| value(flag).map_or(default, |v| v.parse().expect(flag));
    let texts_path = required("--texts");
    let texts: Vec<String> = std::fs::read_to_string(&texts_path)
        .unwrap_or_else(|e| panic!("{texts_path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert!(!texts.is_empty(), "{texts_path} has no lines");
    Options {
        bert: value("--bert").unwrap_or_else(|| "target/release/bert".into()),
        model: required("--model"),
        texts,
        requests: number("--requests", 2000),
        clients: value("--clients")
            .unwrap_or_else(|| "1,8,64".into())
            .split(',')
            .map(|c| c.parse().expect("--clients"))
            .collect(),
        flat: number("--flat", 100_000),
        seconds: number("--seconds", 300) as u64,
        rounds: number("--rounds", 3).max(1),
    }
}

/// `VmRSS` or `VmHWM` of a process, in MiB.
fn memory(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn start_server(options: &Options) -> (Child, String) {
    let mut child = Command::new(&options.bert)
        .args(["serve", "--model", &options.model, "--port", "0"])
        .args(["--max-concurrent-requests", "4096", "--auto-truncate"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bert serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("bert serve exited").unwrap();
        eprintln!("server: {line}");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<f64>,
}

/// Sends up to `total` requests from `clients` threads (stopping at `limit`), calling `progress`
/// with the number done after each.
fn phase(
    url: &str,
    texts: &[String],
    clients: usize,
    total: usize,
    limit: Duration,
    progress: &(dyn Fn(usize) + Sync),
) -> Phase {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(total));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let agent = ureq::AgentBuilder::new().build();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || started.elapsed() > limit {
                        break;
                    }
                    let body = serde_json::json!({"inputs": texts[i % texts.len()]}).to_string();
                    let sent = Instant::now();
                    // Reading the whole answer lets the agent reuse its connection.
                    let ok = agent
                        .post(&format!("{url}/embed"))
                        .send_string(&body)
                        .is_ok_and(|answer| answer.into_string().is_ok());
                    mine.push(sent.elapsed().as_secs_f64());
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(f64::total_cmp);
    Phase {
        requests: latencies.len(),
        errors: errors.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// The server's counters of forward passes: (passes, inputs, tokens, padded tokens, model seconds).
fn counters(url: &str) -> [f64; 5] {
    let text = ureq::get(&format!("{url}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    [
        value("bert_batches_total"),
        value("bert_batch_inputs_total"),
        value("bert_batch_tokens_total"),
        value("bert_batch_padded_tokens_total"),
        value("bert_model_seconds_total"),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Texts per second through `bert embed` in one process (batch 32), on the first `n` texts.
fn in_process(options: &Options, n: usize) -> f64 {
    let input: String = (0..n)
        .map(|i| options.texts[i % options.texts.len()].replace('\n', " ") + "\n")
        .collect();
    let started = Instant::now();
    let mut child = Command::new(&options.bert)
        .args(["embed", "--model", &options.model, "--batch-size", "32"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting bert embed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "bert embed failed");
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let options = options();
    let (mut server, url) = start_server(&options);
    let pid = server.id();
    let limit = Duration::from_secs(options.seconds);
    println!(
        "| clients | requests | errors | req/s | p50 ms | p99 ms | server RSS MiB (peak) | inputs per pass | padding | model busy |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &clients in &options.clients {
        let before = counters(&url);
        let result = phase(
            &url,
            &options.texts,
            clients,
            options.requests,
            limit,
            &|_| {},
        );
        let rate = result.requests as f64 / result.seconds;
        let after = counters(&url);
        let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        println!(
            "| {clients} | {} | {} | {rate:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0}% | {:.0}% |",
            result.requests,
            result.errors,
            percentile(&result.latencies, 0.5) * 1e3,
            percentile(&result.latencies, 0.99) * 1e3,
            memory(pid, "VmHWM:"),
            delta[1] / delta[0].max(1.0),
            100.0 * (1.0 - delta[2] / delta[3].max(1.0)),
            100.0 * delta[4] / result.seconds,
        );
    }
    // The ratio, from rounds that alternate the server (at the largest client count) and one process,
    // so that both meet the same drift of a shared machine; the median round counts.
    let clients = options.clients.last().copied().unwrap_or(64);
    println!(
        "\nThe server at {clients} clients against `bert embed` in one process (batch 32), alternating:\n\n\
         | round | server texts/s | bert embed texts/s | ratio |\n| --- | --- | --- | --- |"
    );
    let mut ratios = Vec::new();
    for round in 1..=options.rounds {
        let served = phase(
            &url,
            &options.texts,
            clients,
            options.requests,
            limit,
            &|_| {},
        );
        let served = served.requests as f64 / served.seconds;
        let direct = in_process(&options, options.requests);
        println!(
            "| {round} | {served:.1} | {direct:.1} | {:.2}x |",
            served / direct
        );
        ratios.push(served / direct);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\nMedian ratio over {} rounds: {:.2}x",
        ratios.len(),
        ratios[ratios.len() / 2]
    );

    if options.flat > 0 {
        println!("\nRSS over {} requests from 64 clients:\n\n| requests | server RSS MiB |\n| --- | --- |", options.flat);
        println!("| 0 | {:.0} |", memory(pid, "VmRSS:"));
        let step = (options.flat / 10).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let report = |done: usize| {
            if done.is_multiple_of(step) && !stop.load(Ordering::Relaxed) {
                println!("| {done} | {:.0} |", memory(pid, "VmRSS:"));
            }
        };
        let result = phase(&url, &options.texts, 64, options.flat, limit * 4, &report);
        stop.store(true, Ordering::Relaxed);
        println!(
            "\n{} requests ({} errors) in {:.0} s; peak RSS {:.0} MiB",
            result.requests,
            result.errors,
            result.seconds,
            memory(pid, "VmHWM:")
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
}
