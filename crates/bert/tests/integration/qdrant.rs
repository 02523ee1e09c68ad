//! Export to and search in Qdrant, against a local HTTP server that answers as Qdrant's REST API does
//! (no Qdrant server can be installed from the registries here): the requests' wire format is checked
//! (collection creation with the index's size and cosine distance, upserts of every row with its
//! passage as payload), and answers are read back as search hits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bert::pipelines::{EmbedOptions, Embedder};
use bert::search::qdrant::Qdrant;
use bert::search::{self, Existing, Index, IndexOptions};
use serde_json::{json, Value};

/// (method, path, body, api-key header) of each request.
type Log = Arc<Mutex<Vec<(String, String, Value, Option<String>)>>>;

/// A fake Qdrant: the collection exists once created; queries answer two points.
fn serve() -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let shared = log.clone();
    std::thread::spawn(move || {
        let mut created: Option<Value> = None;
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let parts: Vec<String> = line.split_whitespace().map(String::from).collect();
            let (mut length, mut key) = (0, None);
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "api-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (method, path) = (parts[0].clone(), parts[1].clone());
            shared
                .lock()
                .unwrap()
                .push((method.clone(), path.clone(), body.clone(), key));
            let (status, answer) = match (method.as_str(), path.as_str()) {
                ("GET", p) if p.starts_with("/collections/") => match &created {
                    Some(config) => (
                        "200 OK",
                        json!({"result": {"config": {"params": config}}, "status": "ok"}),
                    ),
                    None => (
                        "404 Not Found",
                        json!({"status": {"error": "Not found: Collection"}}),
                    ),
                },
                ("PUT", p) if !p.contains("/points") => {
                    created = Some(body.clone());
                    ("200 OK", json!({"result": true, "status": "ok"}))
                }
                ("PUT", _) => (
                    "200 OK",
                    json!({"result": {"operation_id": 1, "status": "completed"}}),
                ),
                ("POST", _) => (
                    "200 OK",
                    json!({"result": {"points": [
                    {"id": 1, "version": 0, "score": 0.9, "payload": {"file": "/a.md", "start": 0, "end": 5, "text": "hello"}},
                    {"id": 0, "version": 0, "score": 0.5, "payload": {"file": "/b.md", "start": 3, "end": 9, "text": "world!"}},
                ]}, "status": "ok"}),
                ),
                _ => (
                    "400 Bad Request",
                    json!({"status": {"error": "unexpected"}}),
                ),
            };
            let text = answer.to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (url, log)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn index(name: &str) -> Index {
    let root = std::env::temp_dir().join(format!("bert-qdrant-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(
        root.join("docs/a.md"),
        "the sea was calm and the boat drifted home over the waves",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/b.txt"),
        "wolves howled in the dark forest at night",
    )
    .unwrap();
    let dir = fixture("tiny-base");
    let embedder = Embedder::load(&dir, &EmbedOptions::default()).unwrap();
    let model = search::model_info("tiny", &dir, &embedder).unwrap();
    let options = IndexOptions {
        chunk_tokens: 12,
        overlap: 2,
        existing: Existing::Refuse,
        batch_size: 8,
    };
    search::build(
        &embedder,
        model,
        &[root.join("docs")],
        &root.join("index"),
        &options,
        &mut |_, _| {},
    )
    .unwrap();
    Index::open(&root.join("index")).unwrap()
}

#[test]
fn export_creates_the_collection_and_upserts_every_row_with_its_passage() {
    let (url, log) = serve();
    let index = index("export");
    let qdrant = Qdrant::new(&url, Some("secret".into()));
    let mut sent = Vec::new();
    qdrant
        .export(&index, "notes", 3, &mut |done, total| {
            sent.push((done, total))
        })
        .unwrap();
    assert_eq!(sent.last(), Some(&(index.rows(), index.rows())));

    let log = log.lock().unwrap();
    assert_eq!(
        (log[0].0.as_str(), log[0].1.as_str()),
        ("GET", "/collections/notes")
    );
    assert_eq!(
        (log[1].0.as_str(), log[1].1.as_str()),
        ("PUT", "/collections/notes")
    );
    assert_eq!(
        log[1].2,
        json!({"vectors": {"size": 32, "distance": "Cosine"}})
    );
    let upserts: Vec<&Value> = log[2..]
        .iter()
        .map(|r| {
            assert_eq!(
                (r.0.as_str(), r.1.as_str()),
                ("PUT", "/collections/notes/points?wait=true")
            );
            &r.2
        })
        .collect();
    assert_eq!(upserts.len(), index.rows().div_ceil(3), "batches of 3");
    let points: Vec<&Value> = upserts
        .iter()
        .flat_map(|u| u["points"].as_array().unwrap())
        .collect();
    assert_eq!(points.len(), index.rows());
    for (row, point) in points.iter().enumerate() {
        assert_eq!(point["id"], row);
        let vector: Vec<f32> = serde_json::from_value(point["vector"].clone()).unwrap();
        assert_eq!(vector, index.vectors()[row * 32..(row + 1) * 32]);
        let record = index.record(row).unwrap();
        assert_eq!(point["payload"]["text"], record.text.as_str());
        assert_eq!(point["payload"]["start"], record.start);
        assert_eq!(point["payload"]["file"], record.file.as_str());
    }
    assert!(
        log.iter().all(|r| r.3.as_deref() == Some("secret")),
        "the api-key header on every call"
    );
}

#[test]
fn search_reads_qdrant_points_as_hits_and_a_wrong_size_is_refused() {
    let (url, log) = serve();
    let qdrant = Qdrant::new(&url, None);
    let hits = qdrant.search("notes", &[0.5; 32], 2).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        (hits[0].file.as_str(), hits[0].text.as_str(), hits[0].score),
        ("/a.md", "hello", 0.9)
    );
    assert_eq!((hits[1].start, hits[1].end), (3, 9));
    let query = log.lock().unwrap()[0].2.clone();
    assert_eq!(query["limit"], 2);
    assert_eq!(query["with_payload"], true);
    assert_eq!(query["query"].as_array().unwrap().len(), 32);

    // A collection of another size is not written to.
    let index = index("size");
    let other = Qdrant::new(&url, None);
    let small = json!({"vectors": {"size": 8, "distance": "Cosine"}});
    ureq::put(&format!("{url}/collections/small"))
        .send_string(&small.to_string())
        .unwrap();
    let err = other
        .export(&index, "small", 10, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("8 dimensions"), "{err}");
    let dead = Qdrant::new("http://127.0.0.1:9", None);
    let err = dead.search("notes", &[0.0; 32], 1).unwrap_err();
    assert!(err.to_string().contains("Qdrant POST"), "{err}");
}
