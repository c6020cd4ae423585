//! Share links as the insights API sees them: `GET /share/<id>/info`
//! (whether the link needs its password; the project once admitted),
//! `POST /share/<id>/unlock` (a password for an unlock key), and the
//! admission of `/share/<id>/insights/…` requests, whose token comes in
//! `x-share-token` and unlock key in `x-share-key` (headers, never the URL).
//!
//! Unknown and revoked links are a `404`, expired ones a `403`, a wrong
//! token or a missing or wrong unlock key a `401`. Unlock attempts, and
//! refused tokens, are limited per address and per link (`429` past it).

use std::net::{IpAddr, SocketAddr};

use analytics_http::{ApiError, Body, json};
use analytics_meta::{ClientKind, ClientRecord, ShareRecord};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Insights, read_json};

/// A project a client may read.
#[derive(Debug, Serialize)]
pub struct ProjectEntry {
    pub id: String,
    pub name: String,
}

/// `GET /insights/projects`.
#[derive(Debug, Serialize)]
pub struct Projects {
    /// `read` or `root`.
    pub client_type: &'static str,
    pub projects: Vec<ProjectEntry>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Insights {
    /// The projects `client` may read.
    pub(crate) async fn projects(&self, client: &ClientRecord) -> Result<Projects, ApiError> {
        let projects = if client.kind == ClientKind::Root {
            self.meta.projects().await?
        } else {
            vec![client.project.clone()]
        };
        Ok(Projects {
            client_type: client.kind.as_str(),
            projects: projects
                .into_iter()
                .map(|p| ProjectEntry {
                    id: p.id,
                    name: p.name,
                })
                .collect(),
        })
    }

    /// Spends one attempt of `ip` and of the link; `false` past either budget.
    fn share_attempt(&self, id: &str, ip: IpAddr) -> bool {
        let by_ip = self.share_guard.check_key(&format!("ip:{ip}")).is_ok();
        let by_link = self.share_guard.check_key(&format!("share:{id}")).is_ok();
        by_ip && by_link
    }

    /// The link `id`, when it exists, has not expired and `token` is its own.
    async fn share_with_token(
        &self,
        id: &str,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(ShareRecord, String), ApiError> {
        let share = self.meta.share(id).await?.ok_or(ApiError::NotFound)?;
        let token = header(headers, "x-share-token").unwrap_or("");
        if !share.verify_token(token) {
            if !self.share_attempt(id, ip) {
                return Err(ApiError::TooManyRequests(
                    "too many refused share attempts; retry in a minute",
                ));
            }
            return Err(ApiError::Unauthorized("invalid share token"));
        }
        if share.expired(analytics_meta::now_ms()) {
            return Err(ApiError::Forbidden("this share link has expired"));
        }
        Ok((share, token.to_owned()))
    }

    /// Admits a request through share link `id`.
    pub(crate) async fn admit_share(
        &self,
        id: &str,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<ShareRecord, ApiError> {
        let (share, token) = self.share_with_token(id, ip, headers).await?;
        if !share.admits(&token, header(headers, "x-share-key")) {
            return Err(ApiError::Unauthorized("this share link needs its password"));
        }
        Ok(share)
    }

    pub(crate) async fn share_info<B>(
        &self,
        id: &str,
        req: &Request<B>,
        ip: IpAddr,
    ) -> Response<Body> {
        let answer = async {
            if req.method() != Method::GET {
                return Err(ApiError::MethodNotAllowed);
            }
            let (share, token) = self.share_with_token(id, ip, req.headers()).await?;
            let admitted = share.admits(&token, header(req.headers(), "x-share-key"));
            let mut body = json!({
                "id": share.id,
                "password": share.has_password(),
                "unlocked": admitted,
                "expires_at": share.expires_at,
            });
            if admitted {
                let project = self.meta.project(&share.project_id).await?;
                body["project"] = project
                    .map(|p| json!({"id": p.id, "name": p.name}))
                    .unwrap_or(Value::Null);
            }
            Ok(body)
        };
        match answer.await {
            Ok(body) => json(StatusCode::OK, &body),
            Err(error) => error.into_response(),
        }
    }

    pub(crate) async fn share_unlock<B>(
        &self,
        id: &str,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let answer = async {
            if req.method() != Method::POST {
                return Err(ApiError::MethodNotAllowed);
            }
            let (share, token) = self.share_with_token(id, peer.ip(), req.headers()).await?;
            if !self.share_attempt(id, peer.ip()) {
                return Err(ApiError::TooManyRequests(
                    "too many password attempts; retry in a minute",
                ));
            }
            let body = read_json(req).await?;
            let password = body
                .get("password")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request("password must be a string", Some("password".into()))
                })?
                .to_owned();
            if !share.has_password() {
                return Ok(json!({"key": ""}));
            }
            let key = tokio::task::spawn_blocking(move || share.unlock(&token, &password))
                .await
                .map_err(|e| ApiError::Internal(Box::new(e)))?;
            match key {
                Some(key) => Ok(json!({ "key": key })),
                None => Err(ApiError::Unauthorized("wrong password")),
            }
        };
        match answer.await {
            Ok(body) => json(StatusCode::OK, &body),
            Err(error) => error.into_response(),
        }
    }
}
