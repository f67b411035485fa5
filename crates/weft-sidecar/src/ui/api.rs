//! The dashboard's JSON endpoints that Weft's HTTP API lacks: counts by status, a list with an
//! ID-prefix and created-time filter, one instance with its history, rerun, and bulk actions.

use super::UiState;
use crate::error::EngineError;
use crate::history_json::event_json;
use crate::http::instance_json;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use weft_core::RuntimeStatus;
use weft_core::time::rfc3339;
use weft_proto::durabletask::RerunWorkflowFromEventRequest;
use weft_store::ListFilter;

/// Rows read at most for one answer: counting or filtering by prefix scans pages of the list,
/// and a dashboard must not turn one click into a scan of a huge store.
const SCAN_LIMIT: usize = 50_000;
const PAGE: usize = 1000;
/// Instances one bulk request may act on.
const BULK_LIMIT: usize = 1000;

/// An error in the HTTP API's JSON shape.
fn fail(op: &'static str, e: EngineError) -> Response {
    let body = json!({"errorCode": e.dapr_code(op), "message": e.to_string()});
    (e.http_status(), Json(body)).into_response()
}

fn invalid(msg: impl Into<String>) -> Response {
    fail("ERR_BAD_REQUEST", EngineError::InvalidArgument(msg.into()))
}

/// A malformed filter: the message for a 400 answer.
type BadFilter = String;

fn statuses(s: Option<&str>) -> Result<Vec<RuntimeStatus>, BadFilter> {
    s.into_iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| RuntimeStatus::parse(s).ok_or_else(|| format!("unknown status '{s}'")))
        .collect()
}

fn time(what: &str, v: Option<&str>) -> Result<Option<weft_core::Micros>, BadFilter> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ts: prost_types::Timestamp = v
        .parse()
        .map_err(|_| format!("{what} '{v}' is not an RFC 3339 time"))?;
    Ok(Some(weft_core::time::to_micros(&ts)))
}

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    status: Option<String>,
    name: Option<String>,
    /// RFC 3339 bounds on the creation time (inclusive).
    from: Option<String>,
    to: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

impl ListQuery {
    fn filter(&self, limit: usize) -> Result<ListFilter, BadFilter> {
        Ok(ListFilter {
            statuses: statuses(self.status.as_deref())?,
            name: self.name.clone().filter(|n| !n.is_empty()),
            created_from: time("from", self.from.as_deref())?,
            created_to: time("to", self.to.as_deref())?,
            after: self.after.clone().filter(|a| !a.is_empty()),
            limit,
            ..Default::default()
        })
    }
}

/// A string that sorts just before every ID starting with `prefix` (the list is ordered by ID
/// and its cursor is exclusive), so a prefix scan starts near its first match.
fn before_prefix(prefix: &str) -> Option<String> {
    let mut s = prefix.to_string();
    let last = s.pop()?;
    if last.is_ascii() && last != '\0' {
        s.push(char::from(last as u8 - 1));
        s.push('\u{7f}');
    }
    (!s.is_empty()).then_some(s)
}

/// `GET /ui/api/instances`: one page of the list, filtered by status, name, created range and
/// ID prefix; `next` is the cursor of the following page.
pub(super) async fn instances(
    State(st): State<UiState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return invalid("malformed query string");
    };
    let want = q.limit.unwrap_or(50).clamp(1, 500);
    let prefix = q.prefix.clone().filter(|p| !p.is_empty());
    let mut filter = match q.filter(if prefix.is_some() { PAGE } else { want }) {
        Ok(f) => f,
        Err(msg) => return invalid(msg),
    };
    if let Some(p) = &prefix {
        let start = before_prefix(p);
        if filter
            .after
            .as_ref()
            .is_none_or(|a| Some(a) < start.as_ref())
        {
            filter.after = start;
        }
    }
    let (items, next) = match &prefix {
        None => match st.router.engine().list(filter).await {
            Ok(page) => (page.items, page.next),
            Err(e) => return fail("ERR_LIST_WORKFLOWS", e),
        },
        Some(p) => match scan_prefix(&st, filter, p, want).await {
            Ok(found) => found,
            Err(e) => return fail("ERR_LIST_WORKFLOWS", e),
        },
    };
    let waiting = st.router.engine().waiting_for_slot();
    let items: Vec<Value> = items
        .iter()
        .map(|m| {
            let mut v = instance_json(m);
            v["appID"] = json!(m.app_id);
            if waiting.contains(&m.instance_id) {
                v["waitingForSlot"] = Value::Bool(true);
            }
            v
        })
        .collect();
    Json(json!({"instances": items, "next": next})).into_response()
}

/// Up to `want` instances whose ID starts with `prefix`, from `filter.after` on (which starts
/// just before the first possible match), and the cursor of the next page.
async fn scan_prefix(
    st: &UiState,
    mut filter: ListFilter,
    prefix: &str,
    want: usize,
) -> Result<(Vec<weft_core::InstanceMeta>, Option<String>), EngineError> {
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let page = st.router.engine().list(filter.clone()).await?;
        scanned += page.items.len();
        for m in page.items {
            if m.instance_id.starts_with(prefix) {
                items.push(m);
                if items.len() == want {
                    let next = items.last().map(|m| m.instance_id.clone());
                    return Ok((items, next));
                }
            } else if m.instance_id.as_str() > prefix {
                // Every match sorts together, right after the prefix itself: this is past them.
                return Ok((items, None));
            }
        }
        match page.next {
            Some(n) if scanned < SCAN_LIMIT => filter.after = Some(n),
            _ => return Ok((items, None)),
        }
    }
}

/// `GET /ui/api/summary`: instances per status (over the same filters as the list, without the
/// prefix), scanning at most [`SCAN_LIMIT`] rows (`capped` says the counts stop there).
pub(super) async fn summary(
    State(st): State<UiState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return invalid("malformed query string");
    };
    let mut filter = match q.filter(PAGE) {
        Ok(f) => f,
        Err(msg) => return invalid(msg),
    };
    filter.after = None;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    let mut capped = false;
    loop {
        let page = match st.router.engine().list(filter.clone()).await {
            Ok(p) => p,
            Err(e) => return fail("ERR_LIST_WORKFLOWS", e),
        };
        total += page.items.len();
        for m in &page.items {
            *counts.entry(m.status.as_str()).or_default() += 1;
        }
        match page.next {
            Some(_) if total >= SCAN_LIMIT => {
                capped = true;
                break;
            }
            Some(n) => filter.after = Some(n),
            None => break,
        }
    }
    Json(json!({"counts": counts, "total": total, "capped": capped})).into_response()
}

/// `GET /ui/api/instances/{id}`: the instance (from its owner) with its history and the
/// details the HTTP API's view leaves out.
pub(super) async fn instance(State(st): State<UiState>, Path(id): Path<String>) -> Response {
    let meta = match st.router.get_instance(&id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(&id),
        Err(e) => return fail("ERR_GET_WORKFLOW", e),
    };
    let events: Vec<Value> = match st.router.engine().history(&id).await {
        Ok(h) => h.unwrap_or_default().iter().map(event_json).collect(),
        Err(e) => return fail("ERR_GET_HISTORY", e),
    };
    let mut v = instance_json(&meta);
    v["appID"] = json!(meta.app_id);
    v["generation"] = json!(meta.generation);
    v["parentInstanceID"] = json!(meta.parent_instance_id);
    v["startedAt"] = json!(meta.started_at.map(rfc3339));
    v["completedAt"] = json!(meta.completed_at.map(rfc3339));
    v["waitingForSlot"] = json!(st.router.engine().waiting_for_slot().contains(&id));
    Json(json!({"instance": v, "events": events, "now": rfc3339(now_micros())})).into_response()
}

fn now_micros() -> weft_core::Micros {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn not_found(id: &str) -> Response {
    fail(
        "ERR_INSTANCE_ID_NOT_FOUND",
        EngineError::NotFound(format!(
            "unable to find workflow with the provided instance ID: {id}"
        )),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RerunBody {
    event_id: u32,
    new_instance_id: Option<String>,
    /// Replaces the input when `overwrite_input` is set.
    input: Option<String>,
    #[serde(default)]
    overwrite_input: bool,
}

/// `POST /ui/api/instances/{id}/rerun`: a new instance replaying `id` up to an event.
pub(super) async fn rerun(
    State(st): State<UiState>,
    Path(id): Path<String>,
    body: Result<Json<RerunBody>, JsonRejection>,
) -> Response {
    let b = match body {
        Ok(Json(b)) => b,
        Err(e) => return invalid(e.body_text()),
    };
    let req = RerunWorkflowFromEventRequest {
        source_instance_id: id,
        event_id: b.event_id,
        new_instance_id: b.new_instance_id.filter(|s| !s.is_empty()),
        input: b.overwrite_input.then(|| b.input.unwrap_or_default()),
        overwrite_input: b.overwrite_input,
        ..Default::default()
    };
    match st.router.rerun_from_event(req, None).await {
        Ok(new_id) => Json(json!({"newInstanceID": new_id})).into_response(),
        Err(e) => fail("ERR_RERUN_WORKFLOW", e),
    }
}

#[derive(Deserialize)]
pub(super) struct BulkBody {
    op: String,
    ids: Vec<String>,
    reason: Option<String>,
}

/// `POST /ui/api/bulk`: one operation on many instances; answers how many succeeded and why
/// each other one failed.
pub(super) async fn bulk(
    State(st): State<UiState>,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Response {
    let b = match body {
        Ok(Json(b)) => b,
        Err(e) => return invalid(e.body_text()),
    };
    if b.ids.len() > BULK_LIMIT {
        return invalid(format!("at most {BULK_LIMIT} instances per request"));
    }
    if !["terminate", "purge", "suspend", "resume"].contains(&b.op.as_str()) {
        return invalid(format!("unknown bulk operation '{}'", b.op));
    }
    let r = &st.router;
    let mut ok = 0;
    let mut failed = Vec::new();
    for id in &b.ids {
        let res = match b.op.as_str() {
            "terminate" => r.terminate(id, None, true, None).await.map(drop),
            "purge" => r.purge(id, true, false, None).await.map(drop),
            "suspend" => r.suspend(id, b.reason.clone(), None).await.map(drop),
            _ => r.resume(id, b.reason.clone(), None).await.map(drop),
        };
        match res {
            Ok(()) => ok += 1,
            Err(e) => failed.push(json!({"instanceID": id, "message": e.to_string()})),
        }
    }
    Json(json!({"op": b.op, "succeeded": ok, "failed": failed})).into_response()
}

#[cfg(test)]
mod tests {
    use super::before_prefix;

    #[test]
    fn the_prefix_cursor_sorts_before_every_match_and_after_most_others() {
        let c = before_prefix("order-7").unwrap();
        assert!(c.as_str() < "order-7" && c.as_str() < "order-7x");
        assert!(c.as_str() > "order-6zzz");
        assert_eq!(before_prefix("a"), Some("`\u{7f}".to_string()));
        assert_eq!(before_prefix(""), None);
    }
}
