//! The web playground in a real browser: a headless Chromium (Debian's `chromium` package, installed
//! by `scripts/setup.sh`; `$CHROMIUM` names another) loads `GET /` from servers on loopback, types
//! into the forms, clicks submit, and reads what the page rendered: the similarity heatmap, score
//! bars, entities marked in the text, the answer marked in its context, fill-mask candidates, an
//! intent, generated text, the attention canvas. It
//! checks the page at phone width (no sideways scrolling), that every control has a label and that
//! the tabs answer the arrow keys, and saves screenshots under the test's temporary directory
//! (`docs/images/playground-*.png` are copies).
//!
//! Without a browser the test fails saying how to get one; `BERT_SKIP_BROWSER=1` skips it out loud.

mod browser;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bert_server::{ServerConfig, Task};
use browser::{chromium, Browser};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// Serves each fixture (with its tasks) on a free loopback port; the addresses, in order.
fn serve(checkpoints: &[(&str, &[Task])]) -> Vec<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut addresses = Vec::new();
    for (name, tasks) in checkpoints {
        let (state, _thread) = bert_server::start(models(name, tasks), ServerConfig::default());
        let router = bert_server::router(state);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        addresses.push(listener.local_addr().unwrap());
        runtime.spawn(bert_server::serve(listener, router, std::future::pending()));
    }
    // The runtime serves on its own threads for the rest of the test process.
    std::mem::forget(runtime);
    addresses
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Submits the form of `task` by clicking its button, and waits for its answer.
fn submit(page: &mut Browser, task: &str) {
    page.click(&format!("{task}-submit"));
    let done = format!(
        "['done', 'error'].includes(document.getElementById('{task}-result').dataset.state)"
    );
    page.wait_for(&done, WAIT, &format!("the {task} answer"));
    let state = page.eval(&format!(
        "document.getElementById('{task}-result').dataset.state"
    ));
    let error = page.eval(&format!(
        "document.getElementById('{task}-error').textContent"
    ));
    assert_eq!(state, "done", "{task}: {error}");
}

fn open(page: &mut Browser, address: SocketAddr, tab: &str) {
    page.navigate(&format!("http://{address}/#{tab}"));
    // Until the new page has a body, the expression reads the old page or none.
    let ready = format!("location.host === '{address}' && document.body?.dataset.ready === '1'");
    page.wait_for(&ready, WAIT, "the page to load /info");
}

#[test]
fn the_playground_works_in_a_real_browser() {
    let Some(executable) = chromium() else {
        if std::env::var_os("BERT_SKIP_BROWSER").is_some() {
            eprintln!("SKIPPED: no Chromium (BERT_SKIP_BROWSER is set)");
            return;
        }
        panic!(
            "no Chromium found: install Debian's `chromium` package (scripts/setup.sh does), set \
             $CHROMIUM to a Chrome or Chromium, or set BERT_SKIP_BROWSER=1 to skip this test"
        );
    };
    let addresses = serve(&[
        ("tiny-classify", &[Task::Embed, Task::Classify]),
        ("tiny-ner", &[]),
        ("tiny-qa", &[]),
        ("tiny-mlm", &[]),
        ("tiny-intent-slots", &[]),
        ("tiny-seq2seq", &[]),
    ]);
    let (classify, ner, qa) = (addresses[0], addresses[1], addresses[2]);
    let (mlm, nlu, seq2seq) = (addresses[3], addresses[4], addresses[5]);
    let shots = screenshots();
    let mut page = Browser::start(&executable);
    page.viewport(1100, 900, false);

    // Embed: three sentences give a 3 x 3 similarity heatmap with ones on the diagonal.
    open(&mut page, classify, "embed");
    let tabs = page.eval("[...document.querySelectorAll('[role=tab]')].map(t => t.id)");
    assert_eq!(tabs, json!(["tab-embed", "tab-classify", "tab-attention"]));
    page.type_into(
        "embed-input",
        "the sea is calm\na good movie\nthe sea is calm tonight",
    );
    submit(&mut page, "embed");
    let cells = page.eval("[...document.querySelectorAll('#embed-result table.heatmap td')].map(c => c.textContent.trim())");
    let cells: Vec<String> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells.len(), 9, "{cells:?}");
    for i in 0..3 {
        assert_eq!(cells[i * 4], "1.00", "the diagonal: {cells:?}");
    }
    let curl = page.eval("document.getElementById('embed-curl').textContent");
    let curl = curl.as_str().unwrap();
    assert!(
        curl.starts_with(&format!("curl http://{classify}/embed")),
        "{curl}"
    );
    assert!(
        curl.contains("a good movie"),
        "the curl line carries the request: {curl}"
    );
    page.screenshot(&shots.join("playground-embed.png"));

    // Classify: one score bar per label, the widths the scores.
    page.click("tab-classify");
    page.type_into("classify-input", "I loved this movie!");
    submit(&mut page, "classify");
    let bars = page.eval("document.querySelectorAll('#classify-result .score-bar').length");
    assert_eq!(bars, json!(3), "three labels");
    page.screenshot(&shots.join("playground-classify.png"));

    // Keyboard: the arrow key moves between tabs, Enter opens one.
    page.eval("document.getElementById('tab-classify').focus()");
    page.press("ArrowRight", "ArrowRight", 39);
    assert_eq!(page.eval("document.activeElement.id"), "tab-attention");
    page.press("Enter", "Enter", 13);
    let selected = page.eval("document.querySelector('[role=tab][aria-selected=true]').id");
    assert_eq!(selected, "tab-attention");

    // Attention: a layer x head view drawn on a canvas, with a thumbnail per head.
    page.type_into("attention-input", "the cat sat on the mat");
    submit(&mut page, "attention");
    let heads = page.eval("document.querySelectorAll('#attention-heads button').length");
    assert_eq!(heads, json!(4), "tiny-classify has four heads");
    let drawn = page.eval("document.getElementById('attention-canvas').width > 0");
    assert_eq!(drawn, json!(true));
    page.screenshot(&shots.join("playground-attention.png"));

    // Every control is labelled for screen readers.
    let unlabelled = page.eval(
        "[...document.querySelectorAll('input, select, textarea, button')].filter(c => \
         !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && \
         !c.getAttribute('aria-labelledby') && !(c.tagName === 'BUTTON' && c.textContent.trim()))\
         .map(c => c.id || c.outerHTML.slice(0, 60))",
    );
    assert_eq!(unlabelled, json!([]), "controls without a label");

    // NER: the entities marked in the text.
    open(&mut page, ner, "ner");
    page.type_into("ner-input", "George Washington lived in Virginia");
    submit(&mut page, "ner");
    let marks = page.eval("document.querySelectorAll('#ner-result mark.entity').length");
    assert!(marks.as_u64().unwrap() > 0, "entities are marked: {marks}");
    page.screenshot(&shots.join("playground-ner.png"));

    // Fill-mask: a score bar per candidate.
    open(&mut page, mlm, "fill-mask");
    page.type_into("fill-mask-input", "the capital of france is [MASK].");
    submit(&mut page, "fill-mask");
    let bars = page.eval("document.querySelectorAll('#fill-mask-result .score-bar').length");
    assert_eq!(bars, json!(5), "top_k 5");

    // NLU: the intent shown, slots marked.
    open(&mut page, nlu, "nlu");
    page.type_into("nlu-input", "show me flights from boston to denver");
    submit(&mut page, "nlu");
    let shown = page.eval("document.getElementById('nlu-result').textContent");
    assert!(
        shown.as_str().is_some_and(|t| t.contains("boston")),
        "{shown}"
    );

    // Generate: each input beside its output.
    open(&mut page, seq2seq, "generate");
    page.type_into("generate-input", "the sea is calm");
    page.type_into("generate-max", "4");
    submit(&mut page, "generate");
    let shown = page.eval("document.getElementById('generate-result').textContent");
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("the sea is calm")),
        "{shown}"
    );

    // QA at phone width: the answer marked in its context, and no sideways scrolling.
    page.viewport(360, 740, true);
    open(&mut page, qa, "qa");
    page.type_into("qa-question", "Where did he live?");
    page.type_into("qa-context", "George Washington lived in Virginia.");
    submit(&mut page, "qa");
    let answer = page.eval("document.querySelector('#qa-result mark.answer').textContent");
    let shown = page.eval("document.getElementById('qa-answer').textContent");
    assert!(answer.as_str().is_some_and(|a| !a.is_empty()), "{answer}");
    assert_eq!(answer, shown, "the marked span is the answer");
    let width = page.eval("document.documentElement.scrollWidth");
    assert!(
        width.as_u64().unwrap() <= 360,
        "the page scrolls sideways at phone width: {width}"
    );
    page.screenshot(&shots.join("playground-qa-phone.png"));
    eprintln!("screenshots in {}", shots.display());
}
