//! A thin JSON client over `kube::Client` for the few calls namespace backup and restore make:
//! paginated LIST, GET, server-side apply (with the HTTP status, which says created or
//! updated), DELETE, and discovery of resource types.
//!
//! Objects stay `serde_json::Value`: backup and restore handle every type, including custom
//! resources, the same way, and nothing is lost to a typed model. Limits: only what the
//! kubeconfig's current context offers (client certificates, tokens, exec plugins as kube-rs
//! supports them). Each request is retried a few times, visibly, on transport errors and busy
//! answers (429/503/504, honouring a short Retry-After); the kube client itself never retries.

use std::path::Path;
use std::time::Duration;

use kube::client::Body;
use kube::core::params::{DeleteParams, GetParams, ListParams, Patch, PatchParams};
use kube::core::Request;
use serde_json::Value;

use super::error::NamespaceError;

/// The field manager clusterkit applies with.
pub const FIELD_MANAGER: &str = "clusterkit";

/// A connection to one API server.
#[derive(Clone)]
pub struct ApiClient {
    /// kube-rs does TLS, auth and connection pooling; it is cheap to clone.
    client: kube::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClient")
    }
}

/// One page of a LIST.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The token for the next page, if there is one.
    pub continue_token: Option<String>,
}

/// What a server-side apply did.
#[derive(Debug)]
pub struct Applied {
    /// The server created the object (HTTP 201) rather than updating it (200).
    pub created: bool,
    /// The object as the server returned it.
    pub object: Value,
}

/// A resource type the server offers (one group/version/resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name, as in URLs (`configmaps`).
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
}

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `configmaps` or `deployments.apps`: how types are named in tables, filters and manifests.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The collection URL: in `namespace` for namespaced types, across all namespaces when
    /// `namespace` is `None`.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/namespaces/{}/{}", self.prefix(), ns, self.resource),
            _ => format!("{}/{}", self.prefix(), self.resource),
        }
    }
}

impl ApiClient {
    /// A client from a kubeconfig file (its current context).
    pub async fn from_kubeconfig(path: &Path) -> Result<ApiClient, NamespaceError> {
        let bad = |message: String| NamespaceError::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let client = clusterkit_core::kube_client::from_kubeconfig(path, None)
            .await
            .map_err(|e| bad(clusterkit_core::error_chain(&e)))?;
        Ok(ApiClient { client })
    }

    /// Wraps an existing kube client.
    pub fn new(client: kube::Client) -> ApiClient {
        ApiClient { client }
    }

    /// The server's `gitVersion` (e.g. `v1.20.2`).
    pub async fn server_version(&self) -> Result<String, NamespaceError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| NamespaceError::Api {
                method: "GET",
                path: "/version".into(),
                status: None,
                message: e.to_string(),
            })?;
        Ok(info.git_version)
    }

    /// Sends one request and returns the status and JSON body; API errors become
    /// [`NamespaceError::Api`] with the server's message.
    async fn send(
        &self,
        method: &'static str,
        path: &str,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<(u16, Value), NamespaceError> {
        let api_err = |status: Option<u16>, message: String| NamespaceError::Api {
            method,
            path: path.to_string(),
            status,
            message,
        };
        let request = request.map_err(|e| api_err(None, e.to_string()))?;
        // Retried here, visibly and with a bound (the client itself never retries): a
        // connection the server closed while idle fails the request before the server saw it,
        // and an API server that sheds load answers 429 (priority and fairness) or 503 with a
        // Retry-After. Every request made here is idempotent (GET, LIST, apply, DELETE).
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let last = attempt >= SEND_ATTEMPTS;
            match self
                .client
                .send(clone_request(&request).map(Body::from))
                .await
            {
                Ok(r) if !last && retry_status(r.status().as_u16()) => {
                    let wait = retry_after(r.headers())
                        .unwrap_or(Duration::from_millis(200 * attempt as u64));
                    tracing::info!(
                        path,
                        status = r.status().as_u16(),
                        wait_ms = wait.as_millis() as u64,
                        "API server busy, retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => break r,
                Err(e) if !last => {
                    tracing::debug!(path, error = %clusterkit_core::error_chain(&e), "retrying after a transport error");
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                }
                Err(e) => return Err(api_err(None, clusterkit_core::error_chain(&e))),
            }
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| api_err(Some(status), format!("reading the answer: {e}")))?;
        if status >= 400 {
            // A metav1.Status; its message says what is wrong (object contents are not echoed).
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
            return Err(api_err(Some(status), format!("{status}: {message}")));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| api_err(Some(status), format!("answer is not JSON: {e}")))?;
        Ok((status, value))
    }

    /// One page of `collection_path`.
    pub async fn list_page(
        &self,
        collection_path: &str,
        selector: Option<&str>,
        limit: u32,
        continue_token: Option<&str>,
    ) -> Result<ListPage, NamespaceError> {
        let mut params = ListParams::default().limit(limit);
        if let Some(s) = selector {
            params = params.labels(s);
        }
        if let Some(token) = continue_token {
            params = params.continue_token(token);
        }
        let request = Request::new(collection_path).list(&params);
        let (_, mut value) = self.send("LIST", collection_path, request).await?;
        let items = match value.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(NamespaceError::Api {
                    method: "LIST",
                    path: collection_path.to_string(),
                    status: None,
                    message: "`items` is not a list".into(),
                })
            }
        };
        let continue_token = value
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(ListPage {
            items,
            continue_token,
        })
    }

    /// GETs an object; `None` when it does not exist.
    pub async fn get(
        &self,
        collection_path: &str,
        name: &str,
    ) -> Result<Option<Value>, NamespaceError> {
        let path = format!("{collection_path}/{name}");
        let request = Request::new(collection_path).get(name, &GetParams::default());
        match self.send("GET", &path, request).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GETs any path (discovery documents, `/version`).
    pub async fn get_path(&self, path: &str) -> Result<Value, NamespaceError> {
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(kube::core::request::Error::BuildRequest);
        self.send("GET", path, request).await.map(|(_, v)| v)
    }

    /// Server-side apply of `object` (which names itself) with field manager `clusterkit`,
    /// taking over conflicting fields (`force`), optionally as a server-side dry run.
    pub async fn apply(
        &self,
        collection_path: &str,
        name: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Applied, NamespaceError> {
        self.apply_as(FIELD_MANAGER, collection_path, name, object, dry_run)
            .await
    }

    /// [`ApiClient::apply`] with another field manager (tests play other users with it).
    pub async fn apply_as(
        &self,
        field_manager: &str,
        collection_path: &str,
        name: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Applied, NamespaceError> {
        let path = format!("{collection_path}/{name}");
        let mut params = PatchParams::apply(field_manager).force();
        if dry_run {
            params = params.dry_run();
        }
        let request = Request::new(collection_path).patch(name, &params, &Patch::Apply(object));
        let (status, object) = self.send("APPLY", &path, request).await?;
        Ok(Applied {
            created: status == 201,
            object,
        })
    }

    /// Deletes an object (background propagation); `false` if it did not exist.
    pub async fn delete(&self, collection_path: &str, name: &str) -> Result<bool, NamespaceError> {
        let path = format!("{collection_path}/{name}");
        let request = Request::new(collection_path).delete(name, &DeleteParams::background());
        match self.send("DELETE", &path, request).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every resource type the server serves at each group's preferred version. Groups whose
    /// discovery fails (an aggregated API that is down) are returned in the second list with
    /// the reason instead of failing the whole discovery.
    pub async fn discover(&self) -> Result<(Vec<ResourceType>, Vec<String>), NamespaceError> {
        let mut types = Vec::new();
        let mut failed = Vec::new();
        let core = self.get_path("/api").await?;
        let mut group_versions: Vec<(String, String)> = core
            .get("versions")
            .and_then(Value::as_array)
            .and_then(|v| v.first())
            .and_then(Value::as_str)
            .map(|v| vec![(String::new(), v.to_string())])
            .unwrap_or_default();
        let groups = self.get_path("/apis").await?;
        for g in groups
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
            let version = g
                .pointer("/preferredVersion/version")
                .and_then(Value::as_str)
                .or_else(|| g.pointer("/versions/0/version").and_then(Value::as_str));
            if let (false, Some(v)) = (name.is_empty(), version) {
                group_versions.push((name.to_string(), v.to_string()));
            }
        }
        for (group, version) in group_versions {
            let path = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let list = match self.get_path(&path).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "discovery failed for a group; skipping it");
                    failed.push(format!("{path}: {e}"));
                    continue;
                }
            };
            for r in list
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let resource = r.get("name").and_then(Value::as_str).unwrap_or_default();
                // Subresources (pods/log, deployments/scale) are not objects of their own.
                if resource.is_empty() || resource.contains('/') {
                    continue;
                }
                let verbs: Vec<&str> = r
                    .get("verbs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                // Backup needs LIST; restore needs create/patch. Types without both (reviews,
                // component statuses, metrics) are not state one can restore.
                if !verbs.contains(&"list")
                    || !verbs.contains(&"create")
                    || !verbs.contains(&"patch")
                {
                    continue;
                }
                types.push(ResourceType {
                    group: group.clone(),
                    version: version.clone(),
                    resource: resource.to_string(),
                    kind: r
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    namespaced: r
                        .get("namespaced")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
        }
        Ok((types, failed))
    }
}

fn clone_request(r: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut out = http::Request::new(r.body().clone());
    *out.method_mut() = r.method().clone();
    *out.uri_mut() = r.uri().clone();
    *out.headers_mut() = r.headers().clone();
    *out.version_mut() = r.version();
    out
}

/// Attempts per request (the first and the retries).
const SEND_ATTEMPTS: u32 = 4;

/// The longest Retry-After honoured; a server asking for more gets this (the request then
/// fails after [`SEND_ATTEMPTS`] with the server's message, rather than the command hanging).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Statuses that mean "busy, try again": too many requests, unavailable, gateway timeout.
fn retry_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

/// The server's Retry-After in seconds, capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}
