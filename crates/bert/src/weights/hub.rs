//! Model ids on the Hugging Face Hub: download a checkpoint once into the standard cache and reuse it.
//!
//! The cache layout is `huggingface_hub`'s, so Python and this toolkit share downloads:
//! `$HF_HUB_CACHE` (default `$HF_HOME/hub`, `~/.cache/huggingface/hub`) holds
//! `models--{org}--{name}/{blobs/<etag>, snapshots/<commit>/<file> -> blob, refs/<revision>}`.
//! `HF_ENDPOINT` changes the server, `HF_TOKEN` authenticates, and `HF_HUB_OFFLINE=1` uses the cache only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::weights::checkpoint::shard_names;

/// Where and how to reach the Hub, from the environment.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
}

impl HubOptions {
    /// Reads `HF_ENDPOINT`, `HF_HUB_CACHE`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let user_home = var("HOME").unwrap_or_else(|| ".".into());
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&user_home).join(".cache"))
                .join("huggingface")
        });
        HubOptions {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir: var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join("hub")),
            token: var("HF_TOKEN").or_else(|| {
                // The token `huggingface-cli login` saves.
                let saved = std::fs::read_to_string(home.join("token")).ok()?;
                Some(saved.trim().to_string()).filter(|t| !t.is_empty())
            }),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }),
        }
    }
}

/// Files of a BERT checkpoint that may be fetched; only `config.json` and one weights file are required.
const OPTIONAL_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Turns `--model` into a local directory: an existing directory as is, otherwise a Hub id, downloaded
/// into the cache on first use.
pub fn resolve_model(model: &str, revision: Option<&str>) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_repo_id(model) {
        return Err(Error::Hub {
            model: model.into(),
            message: "no such directory, and not a Hub id (`name` or `org/name`)".into(),
        });
    }
    let revision = revision.unwrap_or("main");
    if revision.is_empty()
        || revision
            .split('/')
            .any(|part| part.is_empty() || part == "..")
    {
        return Err(Error::Hub {
            model: model.into(),
            message: format!("invalid revision `{revision}`"),
        });
    }
    Repo::new(model, revision, HubOptions::from_env()).snapshot()
}

fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    let valid = |p: &&str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (1..=2).contains(&parts.len()) && parts.iter().all(valid)
}

/// One repository at one revision.
struct Repo {
    id: String,
    revision: String,
    options: HubOptions,
    dir: PathBuf,
}

/// What the Hub says about a file before it is downloaded.
struct FileInfo {
    commit: String,
    etag: String,
    url: String,
    size: Option<u64>,
}

impl Repo {
    fn new(id: &str, revision: &str, options: HubOptions) -> Self {
        let dir = options
            .cache_dir
            .join(format!("models--{}", id.replace('/', "--")));
        Repo {
            id: id.into(),
            revision: revision.into(),
            options,
            dir,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Hub {
            model: self.id.clone(),
            message: message.into(),
        }
    }

    /// The snapshot directory, downloading what is missing unless offline.
    fn snapshot(&self) -> Result<PathBuf> {
        if self.options.offline {
            return self.cached_snapshot().ok_or_else(|| {
                self.error(format!(
                    "revision `{}` is not in the cache at {} and HF_HUB_OFFLINE is set",
                    self.revision,
                    self.dir.display()
                ))
            });
        }
        match self.download() {
            Ok(dir) => Ok(dir),
            // Unreachable or failing Hub: fall back to what is cached, as huggingface_hub does.
            Err(Fetch::Unavailable(message)) => {
                self.cached_snapshot().ok_or_else(|| self.error(message))
            }
            Err(Fetch::Failed(e)) => Err(e),
        }
    }

    fn cached_snapshot(&self) -> Option<PathBuf> {
        let commit = if is_commit_hash(&self.revision) {
            self.revision.clone()
        } else {
            std::fs::read_to_string(self.dir.join("refs").join(&self.revision))
                .ok()?
                .trim()
                .to_string()
        };
        let snapshot = self.dir.join("snapshots").join(commit);
        snapshot.join("config.json").exists().then_some(snapshot)
    }

    fn download(&self) -> Result<PathBuf, Fetch> {
        let config = self
            .fetch("config.json")?
            .ok_or_else(|| self.error("the repository has no config.json"))?;
        let snapshot = config.parent().map(Path::to_path_buf).unwrap_or_default();
        for file in OPTIONAL_FILES {
            self.fetch(file)?;
        }
        if self.fetch("model.safetensors")?.is_none() {
            if let Some(index) = self.fetch("model.safetensors.index.json")? {
                for shard in shard_names(&index)? {
                    if shard.contains('/') || shard.contains("..") {
                        let message = format!("unsafe shard name `{shard}` in the index");
                        return Err(self.error(message).into());
                    }
                    self.fetch(&shard)?.ok_or_else(|| {
                        self.error(format!("shard `{shard}` is listed but missing"))
                    })?;
                }
            } else if self.fetch("pytorch_model.bin")?.is_none() {
                let message = "the repository has no model.safetensors or pytorch_model.bin";
                return Err(self.error(message).into());
            }
        }
        Ok(snapshot)
    }

    fn url(&self, file: &str) -> String {
        let revision = self.revision.replace('/', "%2F");
        format!(
            "{}/{}/resolve/{revision}/{file}",
            self.options.endpoint, self.id
        )
    }

    /// A request; the token goes only to the Hub itself, not to a storage host it redirects to.
    /// Compression is refused so that sizes can be checked against the Hub's headers.
    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let request = agent
            .request(method, url)
            .set("User-Agent", "bert-rs")
            .set("Accept-Encoding", "identity");
        match &self.options.token {
            Some(token) if url.starts_with(&self.options.endpoint) => {
                request.set("Authorization", &format!("Bearer {token}"))
            }
            _ => request,
        }
    }

    /// Turns an HTTP error status into what it means for the user (the Hub says in `X-Error-Code`).
    fn status_error(&self, code: u16, response: &ureq::Response, url: &str) -> Fetch {
        let error_code = response.header("x-error-code").unwrap_or_default();
        match (code, error_code) {
            (_, "RepoNotFound") | (401, _) => self
                .error("no such repository on the Hub, or it is private (then set HF_TOKEN)")
                .into(),
            (_, "RevisionNotFound") => self
                .error(format!("no revision `{}`", self.revision))
                .into(),
            (_, "GatedRepo") | (403, _) => self
                .error("the repository is gated: accept its terms on the Hub and set HF_TOKEN")
                .into(),
            (500.., _) => Fetch::Unavailable(format!("HTTP {code} from {url}")),
            _ => self.error(format!("HTTP {code} for {url}")).into(),
        }
    }

    /// Asks the Hub for the file's commit and etag; `None` when the repository has no such file.
    fn info(&self, file: &str) -> Result<Option<FileInfo>, Fetch> {
        let agent = agent().redirects(0).build();
        let url = self.url(file);
        let response = match self.request(&agent, "HEAD", &url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, r))
                if r.header("x-error-code")
                    .is_none_or(|c| c == "EntryNotFound") =>
            {
                return Ok(None)
            }
            Err(ureq::Error::Status(code, r)) => return Err(self.status_error(code, &r, &url)),
            Err(e) => {
                let message = format!("cannot reach {}: {e}", self.options.endpoint);
                return Err(Fetch::Unavailable(message));
            }
        };
        let header = |name: &str| response.header(name).map(str::to_string);
        let commit = header("x-repo-commit")
            .ok_or_else(|| self.error(format!("{url}: no X-Repo-Commit header")))?;
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .ok_or_else(|| self.error(format!("{url}: no ETag header")))?;
        let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
        let location = header("location").filter(|_| (300..400).contains(&response.status()));
        let url = match location {
            Some(l) if l.starts_with('/') => format!("{}{l}", self.options.endpoint),
            Some(l) => l,
            None => url,
        };
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse().ok());
        Ok(Some(FileInfo {
            commit,
            etag,
            url,
            size,
        }))
    }

    /// Makes `snapshots/<commit>/<file>` exist, downloading the blob if the cache lacks it.
    fn fetch(&self, file: &str) -> Result<Option<PathBuf>, Fetch> {
        let Some(info) = self.info(file)? else {
            return Ok(None);
        };
        let snapshot = self.dir.join("snapshots").join(&info.commit);
        let target = snapshot.join(file);
        if !is_commit_hash(&self.revision) {
            write_file(
                &self.dir.join("refs").join(&self.revision),
                info.commit.as_bytes(),
            )?;
        }
        if target.exists() {
            return Ok(Some(target));
        }
        let blob = self.dir.join("blobs").join(&info.etag);
        if !blob.exists() {
            self.download_blob(file, &info, &blob)?;
        }
        link(&blob, &target)?;
        Ok(Some(target))
    }

    fn download_blob(&self, file: &str, info: &FileInfo, blob: &Path) -> Result<()> {
        let agent = agent().build();
        let response = self
            .request(&agent, "GET", &info.url)
            .call()
            .map_err(|e| self.error(format!("downloading {file}: {e}")))?;
        let partial = blob.with_extension("incomplete");
        create_parent(&partial)?;
        let mut out = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        let mut reader = response.into_reader();
        let mut progress = Progress::new(file, info.size);
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| self.error(format!("downloading {file}: {e}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n])
                .map_err(|e| Error::io(&partial, e))?;
            progress.advance(n as u64);
        }
        progress.finish();
        if let Some(size) = info.size {
            let written = std::fs::metadata(&partial)
                .map_err(|e| Error::io(&partial, e))?
                .len();
            if written != size {
                return Err(self.error(format!("{file}: received {written} of {size} bytes")));
            }
        }
        std::fs::rename(&partial, blob).map_err(|e| Error::io(blob, e))
    }
}

/// Why a download did not complete: the Hub could not be reached (the cache may do), or a real error.
enum Fetch {
    Unavailable(String),
    Failed(Error),
}

impl From<Error> for Fetch {
    fn from(e: Error) -> Self {
        Fetch::Failed(e)
    }
}

/// A download progress line on stderr, for files large enough to wait for.
struct Progress {
    file: String,
    total: Option<u64>,
    done: u64,
    shown: u64,
}

impl Progress {
    fn new(file: &str, total: Option<u64>) -> Self {
        Progress {
            file: file.into(),
            total,
            done: 0,
            shown: 0,
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.done - self.shown >= 8 << 20 {
            self.shown = self.done;
            match self.total {
                Some(t) => eprint!(
                    "\rdownloading {}: {:.0}% of {:.1} MB",
                    self.file,
                    100.0 * self.done as f64 / t as f64,
                    t as f64 / 1e6
                ),
                None => eprint!(
                    "\rdownloading {}: {:.1} MB",
                    self.file,
                    self.done as f64 / 1e6
                ),
            }
        }
    }

    fn finish(&self) {
        if self.shown > 0 {
            eprintln!(
                "\rdownloaded {}: {:.1} MB          ",
                self.file,
                self.done as f64 / 1e6
            );
        }
    }
}

/// HTTP settings: give up on an unreachable server instead of hanging.
fn agent() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(10))
        .timeout_read(std::time::Duration::from_secs(60))
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e)),
        None => Ok(()),
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    create_parent(path)?;
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))
}

/// Points `target` at `blob` with a relative symlink (a copy where links are not possible).
fn link(blob: &Path, target: &Path) -> Result<()> {
    create_parent(target)?;
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file...> -> ../../blobs/<etag>, one more `..` per folder in the file name.
        let depth = target
            .strip_prefix(
                blob.parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("")),
            )
            .map(|rel| rel.components().count() - 1)
            .unwrap_or(2);
        let mut relative = PathBuf::new();
        for _ in 0..depth {
            relative.push("..");
        }
        relative.push("blobs");
        relative.push(blob.file_name().unwrap_or_default());
        if std::os::unix::fs::symlink(&relative, target).is_ok() {
            return Ok(());
        }
    }
    std::fs::copy(blob, target)
        .map(|_| ())
        .map_err(|e| Error::io(target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("bert-base-uncased"));
        assert!(is_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("../x"));
        assert!(!is_repo_id("./models/x"));
        assert!(!is_repo_id(""));
    }
}
