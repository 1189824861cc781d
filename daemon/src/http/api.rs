//! The `/api/v1` routes: workloads and their mode, baselines export and import.
//!
//! Reads come from the engine's published snapshot and from the store; changes go to the
//! engine as [`Command`]s (it owns the state) and need the bearer token of
//! `--api-token-file`. Keys contain `/`: the routes take the rest of the path, percent-decoded.
//!
//! Bodies are the wire types of [`habit_profiles::api`], shared with habitctl. A refused
//! command answers the status of its [`CommandError`] variant (see [`command_status`]), with
//! `{"error": "…"}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use habit_profiles::api::{ErrorBody, HeldAction, HeldDecision, ModeRequest};
use habit_profiles::error::ProfileError;
use habit_profiles::store::ProfileStore;
use habit_profiles::workload::WorkloadKey;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::learning::{Command, CommandError, Views};

/// What the API handlers need.
pub struct Api {
    pub views: Views,
    pub store: Arc<ProfileStore>,
    pub commands: mpsc::Sender<Command>,
    /// The bearer token state-changing calls must present; `None` refuses them all.
    pub token: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

/// The HTTP status of a refused command: the workload or item does not exist (404), the
/// workload is not in a state that allows it (409), the baseline it would produce is invalid
/// (422), the store failed (500).
pub fn command_status(error: &CommandError) -> StatusCode {
    match error {
        CommandError::UnknownWorkload(_) | CommandError::NoHeldItem { .. } => StatusCode::NOT_FOUND,
        CommandError::NotLearning(_) => StatusCode::CONFLICT,
        CommandError::InvalidBaseline { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        CommandError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error and its causes, as one line: `what: why: why`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The workload key of a request path (already percent-decoded by the router), or 400 when it
/// could name another file (`../`, absolute, control characters: [`WorkloadKey::parse`]).
fn workload_key(raw: &str) -> Result<WorkloadKey, Box<Response>> {
    WorkloadKey::parse(raw).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))
}

/// Checks `Authorization: Bearer <token>`. A refusal is logged with the route, never with
/// what was presented (a wrong token is often a right one for something else).
fn authorize(api: &Api, headers: &HeaderMap, route: &str) -> Result<(), Box<Response>> {
    let Some(expected) = &api.token else {
        tracing::warn!(
            message = "Refused a state-changing API call: no --api-token-file configured.",
            route
        );
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "state-changing calls are disabled: start habitd with --api-token-file",
        )));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_token(presented, expected) {
        Ok(())
    } else {
        tracing::warn!(
            message = "Refused a state-changing API call: missing or wrong bearer token.",
            route
        );
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token from --api-token-file>)",
        )))
    }
}

/// Whether `presented` is the token, in time that does not depend on where they differ
/// (`subtle`, so the optimiser cannot turn it into an early exit); only the length can show.
fn same_token(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

pub async fn list_workloads(State(api): State<Arc<Api>>) -> Response {
    let views = match api.views.read() {
        Ok(v) => v.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Json(views).into_response()
}

/// `POST /api/v1/workloads/{key}/mode` with `{"mode": "learn" | "detect" | "relearn"}`, and
/// `POST /api/v1/workloads/{key}/held` with `{"action": "approve" | "discard", "dimension":
/// …, "item": …}`.
pub async fn post_workload(
    State(api): State<Arc<Api>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(key) = rest.strip_suffix("/mode") {
        set_mode(&api, key, &headers, &body).await
    } else if let Some(key) = rest.strip_suffix("/held") {
        decide_held(&api, key, &headers, &body).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            "expected /api/v1/workloads/{key}/mode or /api/v1/workloads/{key}/held",
        )
    }
}

/// `GET /api/v1/workloads/{key}/held`: the items a rule flagged during learning.
pub async fn get_workload(State(api): State<Arc<Api>>, Path(rest): Path<String>) -> Response {
    let Some(key) = rest.strip_suffix("/held") else {
        return error(
            StatusCode::NOT_FOUND,
            "expected /api/v1/workloads/{key}/held",
        );
    };
    let key = match workload_key(key) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::ListHeld { key, reply };
    match ask(&api, command, answer).await {
        Ok(items) => Json(items).into_response(),
        Err(r) => r,
    }
}

/// Sends a command to the engine and waits for its answer.
async fn ask<T>(
    api: &Api,
    command: Command,
    answer: oneshot::Receiver<Result<T, CommandError>>,
) -> Result<T, Response> {
    let gone = || error(StatusCode::SERVICE_UNAVAILABLE, "habitd is shutting down");
    if api.commands.send(command).await.is_err() {
        return Err(gone());
    }
    match answer.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(command_status(&e), with_causes(&e))),
        Err(_) => Err(gone()),
    }
}

async fn set_mode(api: &Api, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(r) = authorize(api, headers, "POST /api/v1/workloads/{key}/mode") {
        return *r;
    }
    let mode = match serde_json::from_slice::<ModeRequest>(body) {
        Ok(b) => b.mode,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"mode\": \"learn\"|\"detect\"|\"relearn\"}}: {e}"),
            );
        }
    };
    let key = match workload_key(key) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::SetMode { key, mode, reply };
    match ask(api, command, answer).await {
        Ok(view) => Json(view).into_response(),
        Err(r) => r,
    }
}

async fn decide_held(api: &Api, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(r) = authorize(api, headers, "POST /api/v1/workloads/{key}/held") {
        return *r;
    }
    let decision = match serde_json::from_slice::<HeldDecision>(body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"action\": \"approve\"|\"discard\", \"dimension\": …, \
                     \"item\": …}}: {e}"
                ),
            );
        }
    };
    let key = match workload_key(key) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::DecideHeld {
        key,
        dimension: decision.dimension,
        item: decision.item,
        approve: matches!(decision.action, HeldAction::Approve),
        reply,
    };
    match ask(api, command, answer).await {
        Ok(view) => Json(view).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/baselines/{key}`: the baseline file.
pub async fn get_baseline(State(api): State<Arc<Api>>, Path(key): Path<String>) -> Response {
    let parsed = match workload_key(&key) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match api.store.baselines().get_json(&parsed) {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no baseline for {key}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `PUT /api/v1/baselines/{key}`: validates and imports a baseline file; nothing changes on
/// error.
pub async fn put_baseline(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&api, &headers, "PUT /api/v1/baselines/{key}") {
        return *r;
    }
    let key = match workload_key(&key) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::Import {
        key: key.clone(),
        file: body.to_vec(),
        reply,
    };
    if api.commands.send(command).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "habitd is shutting down");
    }
    match answer.await {
        Ok(Ok(baseline)) => Json(json!({
            "imported": key,
            "items": baseline.items_total(),
            "partial": baseline.partial,
        }))
        .into_response(),
        Ok(Err(e)) => {
            let status = match e {
                ProfileError::Store { .. } | ProfileError::Encode { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, format!("baseline rejected, store unchanged: {e}"))
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "habitd is shutting down"),
    }
}

#[cfg(test)]
mod token_tests {
    use super::same_token;

    #[test]
    fn only_the_exact_token_is_the_same() {
        assert!(same_token("s3cret-token", "s3cret-token"));
        for wrong in [
            "",
            "s3cret-tokeN",
            "s3cret-toke",
            "s3cret-token ",
            "S3cret-token",
        ] {
            assert!(!same_token(wrong, "s3cret-token"), "{wrong:?}");
        }
    }
}
