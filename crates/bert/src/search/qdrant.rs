//! Past one machine: an index exported to a Qdrant collection, and queries answered by it, over
//! Qdrant's REST API (`PUT /collections/{name}`, `PUT .../points`, `POST .../points/query`). The
//! points carry the index's row numbers as ids and the passages as payloads, so a Qdrant hit reads
//! like a local one.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::search::store::Index;
use crate::search::SearchHit;

/// A Qdrant server.
pub struct Qdrant {
    url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl Qdrant {
    /// `url` like `http://localhost:6333`; `api_key` is sent as Qdrant's `api-key` header.
    pub fn new(url: &str, api_key: Option<String>) -> Self {
        Qdrant {
            url: url.trim_end_matches('/').to_string(),
            api_key,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(120))
                .build(),
        }
    }

    /// A request; `None` for 404, the parsed body otherwise, an error naming the call for the rest.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.url);
        let mut request = self.agent.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.set("api-key", key);
        }
        let response = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        let failed =
            |message: String| Error::InvalidInput(format!("Qdrant {method} {url}: {message}"));
        match response {
            Ok(response) => {
                let text = response.into_string().map_err(|e| failed(e.to_string()))?;
                let value: Value =
                    serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
                Ok(Some(value))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                Err(failed(format!(
                    "status {code}: {}",
                    text.chars().take(300).collect::<String>()
                )))
            }
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// The vector size of `collection`, if it exists.
    fn vector_size(&self, collection: &str) -> Result<Option<usize>> {
        let Some(info) = self.call("GET", &format!("/collections/{collection}"), None)? else {
            return Ok(None);
        };
        let size = info["result"]["config"]["params"]["vectors"]["size"].as_u64();
        Ok(Some(size.map_or(0, |s| s as usize)))
    }

    /// Copies every row of `index` into `collection` (created with cosine distance if missing;
    /// an existing one must have the index's dimension), `batch` points per request. `progress` is
    /// told the rows sent and the total.
    pub fn export(
        &self,
        index: &Index,
        collection: &str,
        batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let dim = index.dim();
        match self.vector_size(collection)? {
            Some(size) if size != dim => {
                return Err(Error::InvalidInput(format!(
                    "the Qdrant collection {collection} holds vectors of {size} dimensions; this \
                     index's have {dim}"
                )))
            }
            Some(_) => {}
            None => {
                let create = json!({"vectors": {"size": dim, "distance": "Cosine"}});
                self.call("PUT", &format!("/collections/{collection}"), Some(&create))?;
            }
        }
        let vectors = index.vectors();
        let rows = index.rows();
        let mut first = 0;
        while first < rows {
            let last = (first + batch.max(1)).min(rows);
            let points = (first..last)
                .map(|row| {
                    let record = index.record(row)?;
                    Ok(json!({
                        "id": row,
                        "vector": &vectors[row * dim..(row + 1) * dim],
                        "payload": {"file": record.file, "start": record.start, "end": record.end, "text": record.text},
                    }))
                })
                .collect::<Result<Vec<Value>>>()?;
            let path = format!("/collections/{collection}/points?wait=true");
            self.call("PUT", &path, Some(&json!({ "points": points })))?;
            first = last;
            progress(first, rows);
        }
        Ok(())
    }

    /// The `k` points of `collection` closest to `vector`, as search hits.
    pub fn search(&self, collection: &str, vector: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        let body = json!({"query": vector, "limit": k, "with_payload": true});
        let path = format!("/collections/{collection}/points/query");
        let answer = self.call("POST", &path, Some(&body))?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "Qdrant has no collection {collection} at {}",
                self.url
            ))
        })?;
        let points = answer["result"]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        points
            .iter()
            .map(|point| {
                let payload = &point["payload"];
                let field = |name: &str| {
                    Error::InvalidInput(format!(
                        "Qdrant point {} has no `{name}` in its payload: not exported by `bert export`",
                        point["id"]
                    ))
                };
                Ok(SearchHit {
                    score: point["score"].as_f64().ok_or_else(|| field("score"))? as f32,
                    file: payload["file"].as_str().ok_or_else(|| field("file"))?.to_string(),
                    start: payload["start"].as_u64().ok_or_else(|| field("start"))? as usize,
                    end: payload["end"].as_u64().ok_or_else(|| field("end"))? as usize,
                    text: payload["text"].as_str().ok_or_else(|| field("text"))?.to_string(),
                })
            })
            .collect()
    }
}
