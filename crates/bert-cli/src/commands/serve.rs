//! `bert serve`: load the model, then hand it to the HTTP server until Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bert_server::{ModelOptions, Models, ServerConfig};

use crate::args::{ModelArgs, ServeArgs};

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    if !(args.request_timeout > 0.0 && args.request_timeout.is_finite()) {
        bail!("--request-timeout must be a positive number of seconds");
    }
    let model_args = ModelArgs {
        model: args.model.clone(),
        revision: args.revision.clone(),
        max_length: None,
        truncation: Default::default(),
        batch_size: 1,
        max_batch_tokens: u64::MAX, // not used: the server batches by its own --max-batch-tokens
        dtype: args.dtype,
    };
    // With only an index, the server serves search with the index's own model.
    let dir = if args.model.is_none() && args.index.is_some() {
        None
    } else {
        Some(crate::runner::model_dir(&model_args, true)?)
    };
    let options = ModelOptions {
        tasks: args.tasks.clone(),
        max_input_length: args.max_input_length,
        pooling: args.pooling,
        default_prompt_name: args.default_prompt_name.clone(),
        default_prompt: args.default_prompt.clone(),
        index: args.index.clone(),
        precision: args.dtype,
    };
    let what = match (&dir, &args.index) {
        (Some(dir), _) => dir.display().to_string(),
        (None, Some(index)) => index.display().to_string(),
        (None, None) => unreachable!("a model directory is resolved unless an index is given"),
    };
    let models =
        Models::load(dir.as_deref(), &options).with_context(|| format!("loading {what}"))?;
    for warning in models.load_warnings() {
        eprintln!("warning: {warning}");
    }
    let tasks: Vec<String> = models.tasks().iter().map(|t| t.to_string()).collect();
    eprintln!(
        "serving {what} ({}; inputs up to {} tokens)",
        tasks.join(", "),
        models.max_input_length
    );
    let config = ServerConfig {
        max_concurrent_requests: args.max_concurrent_requests as usize,
        max_batch_tokens: args.max_batch_tokens as usize,
        max_client_batch_size: args.max_client_batch_size as usize,
        payload_limit: args.payload_limit,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        api_key: args.api_key.filter(|k| !k.is_empty()),
        auto_truncate: args.auto_truncate,
        model_id: args.model.unwrap_or(what),
        shards: crate::threads::shards(),
    };
    let address = format!("{}:{}", args.host, args.port);
    bert_server::run(Arc::new(models), config, &address)?;
    Ok(ExitCode::SUCCESS)
}
