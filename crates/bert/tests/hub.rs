//! The Hub download path against a local HTTP server that serves fixture files in the Hub's URL layout
//! (`/{repo}/resolve/{revision}/{file}`, large files redirected elsewhere as the Hub does): first use
//! downloads into the standard cache, later uses download nothing, offline mode reads the cache only,
//! and tokens are sent.

#[path = "integration/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use bert::model::BertModel;
use bert::weights::hub::resolve_model;
use bert::weights::pretrained::Pretrained;
use candle_core::Device;
use common::fixture;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
struct Log {
    requests: Vec<String>,
    authorization: Vec<String>,
}

/// Serves `tiny-base` as `test-org/tiny`; returns the endpoint and the request log.
fn serve() -> (String, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                if let Some(value) = header
                    .strip_prefix("authorization: ")
                    .or(header.strip_prefix("Authorization: "))
                {
                    shared
                        .lock()
                        .unwrap()
                        .authorization
                        .push(value.trim().to_string());
                }
                header.clear();
            }
            let parts: Vec<&str> = request.split_whitespace().collect();
            let (method, path) = (parts[0], parts[1]);
            shared
                .lock()
                .unwrap()
                .requests
                .push(format!("{method} {path}"));
            let response = respond(method, path);
            stream.write_all(&response).unwrap();
        }
    });
    (endpoint, log)
}

fn respond(method: &str, path: &str) -> Vec<u8> {
    let not_found =
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    // `/test-org/{repo}/resolve/{revision}/{file}`, or `/cdn/{repo}/{file}` after a redirect.
    let (repo, file, redirected) = if let Some(rest) = path.strip_prefix("/cdn/") {
        match rest.split_once('/') {
            Some((repo, file)) => (repo, file, true),
            None => return not_found,
        }
    } else if let Some(rest) = path.strip_prefix("/test-org/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        match parts.as_slice() {
            [repo, "resolve", _revision, file] => (*repo, *file, false),
            _ => return not_found,
        }
    } else {
        return not_found;
    };
    let fixture_dir = match repo {
        "tiny" => "tiny-base",
        "sharded" => "tiny-pretraining",
        "torch" => "tiny-nsp",
        _ => return not_found,
    };
    let Ok(body) = std::fs::read(fixture(fixture_dir).join(file)) else {
        return not_found;
    };
    let etag = format!(
        "{:016x}",
        body.iter()
            .fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64)
                .wrapping_mul(0x100000001b3))
    );
    let redirect = file.ends_with(".safetensors") && !redirected;
    let mut head = if redirect {
        format!("HTTP/1.1 302 Found\r\nLocation: /cdn/{repo}/{file}\r\nX-Linked-Etag: \"{etag}\"\r\nX-Linked-Size: {}\r\nContent-Length: 0\r\n", body.len())
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nETag: \"{etag}\"\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    head.push_str(&format!(
        "X-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n"
    ));
    let mut response = head.into_bytes();
    if method == "GET" && !redirect {
        response.extend_from_slice(&body);
    }
    response
}

fn gets(log: &Arc<Mutex<Log>>) -> usize {
    log.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.starts_with("GET"))
        .count()
}

#[test]
fn hub_ids_download_once_into_the_cache() {
    let (endpoint, log) = serve();
    let home = std::env::temp_dir().join(format!("bert-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_TOKEN", "secret");
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_HUB_OFFLINE");

    let dir = resolve_model("test-org/tiny", None).unwrap();
    let repo = home.join("hub/models--test-org--tiny");
    assert_eq!(dir, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(std::fs::symlink_metadata(dir.join("model.safetensors"))
        .unwrap()
        .file_type()
        .is_symlink());
    let model = Pretrained::load(&dir, &Device::Cpu, |p, c| {
        BertModel::load(&p.pp("bert"), c, true)
    })
    .unwrap();
    assert!(model.report.newly_initialized.is_empty());
    assert!(
        log.lock()
            .unwrap()
            .requests
            .iter()
            .any(|r| r == "GET /cdn/tiny/model.safetensors"),
        "redirect followed"
    );
    assert!(log
        .lock()
        .unwrap()
        .authorization
        .iter()
        .all(|a| a == "Bearer secret"));
    let first = gets(&log);
    assert!(first >= 3, "{first} downloads");

    // Second use: metadata only, nothing downloaded again.
    assert_eq!(resolve_model("test-org/tiny", None).unwrap(), dir);
    assert_eq!(gets(&log), first);

    // A revision gets its own ref.
    resolve_model("test-org/tiny", Some("v1")).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/v1")).unwrap(),
        COMMIT
    );

    // Offline: the cache alone, no requests.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let before = log.lock().unwrap().requests.len();
    assert_eq!(resolve_model("test-org/tiny", None).unwrap(), dir);
    assert_eq!(log.lock().unwrap().requests.len(), before);
    let err = resolve_model("test-org/absent", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("test-org/absent"),
        "{err}"
    );
    std::env::remove_var("HF_HUB_OFFLINE");

    // A commit hash as the revision, offline.
    std::env::set_var("HF_HUB_OFFLINE", "True");
    assert_eq!(resolve_model("test-org/tiny", Some(COMMIT)).unwrap(), dir);
    std::env::remove_var("HF_HUB_OFFLINE");

    // An unreachable Hub: the cached snapshot is used, as huggingface_hub does.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    std::env::set_var("HF_ENDPOINT", &dead);
    assert_eq!(resolve_model("test-org/tiny", None).unwrap(), dir);
    let err = resolve_model("test-org/never-cached", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach"), "{err}");
    std::env::set_var("HF_ENDPOINT", &endpoint);

    // HF_HUB_CACHE moves the cache.
    let cache = home.join("elsewhere");
    std::env::set_var("HF_HUB_CACHE", &cache);
    let moved = resolve_model("test-org/tiny", None).unwrap();
    assert_eq!(
        moved,
        cache.join("models--test-org--tiny/snapshots").join(COMMIT)
    );
    std::env::remove_var("HF_HUB_CACHE");

    // Sharded safetensors and a PyTorch checkpoint download too, and load.
    let sharded = resolve_model("test-org/sharded", None).unwrap();
    assert!(sharded.join("model-00003-of-00003.safetensors").exists());
    Pretrained::load(
        &sharded,
        &Device::Cpu,
        bert::model::BertForPreTraining::load,
    )
    .unwrap();
    let torch = resolve_model("test-org/torch", None).unwrap();
    assert!(torch.join("pytorch_model.bin").exists());
    Pretrained::load(
        &torch,
        &Device::Cpu,
        bert::model::BertForNextSentencePrediction::load,
    )
    .unwrap();

    // A repository the server does not have.
    let err = resolve_model("test-org/absent", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no config.json"), "{err}");
    // Neither a directory nor a Hub id.
    let err = resolve_model("./no/such/dir", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such directory"), "{err}");
}
