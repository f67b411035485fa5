//! Output of the `weft workflow` commands: readable aligned text for people, and the server's JSON
//! for scripts.
//!
//! Human rendering reads the JSON leniently (a missing field prints as blank, unknown fields are
//! still shown) so that a newer server adding fields never breaks the CLI.

use serde_json::{Map, Value};

/// Dapr's GET response keeps payloads under `properties` with these keys (protocol.md §5).
const PROP_INPUT: &str = "dapr.workflow.input";
const PROP_OUTPUT: &str = "dapr.workflow.output";
const PROP_CUSTOM_STATUS: &str = "dapr.workflow.custom_status";
const PROP_ERROR_TYPE: &str = "dapr.workflow.failure.error_type";
const PROP_ERROR_MESSAGE: &str = "dapr.workflow.failure.error_message";
const PROP_STACK_TRACE: &str = "dapr.workflow.failure.stack_trace";

/// History detail values longer than this are cut in the table; `--output json` has them whole.
const MAX_DETAIL_CHARS: usize = 60;

/// Stable machine output: the JSON document, pretty-printed, with a trailing newline.
pub fn json(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("a serde_json::Value always serializes");
    s.push('\n');
    s
}

fn str_field<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One instance (Dapr GET shape) as `Label: value` lines with the values aligned.
pub fn instance(v: &Value) -> String {
    let props = v.get("properties").and_then(Value::as_object);
    let prop = |key: &str| props.and_then(|p| p.get(key)).map(scalar_text);

    let mut rows: Vec<(String, String)> = vec![
        ("Instance ID".into(), str_field(v, "instanceID").into()),
        ("Workflow".into(), str_field(v, "workflowName").into()),
        ("Status".into(), str_field(v, "runtimeStatus").into()),
        ("Created".into(), str_field(v, "createdAt").into()),
        ("Last updated".into(), str_field(v, "lastUpdatedAt").into()),
    ];
    let known = [
        ("Input", PROP_INPUT),
        ("Output", PROP_OUTPUT),
        ("Custom status", PROP_CUSTOM_STATUS),
        ("Failure type", PROP_ERROR_TYPE),
        ("Failure message", PROP_ERROR_MESSAGE),
    ];
    for (label, key) in known {
        if let Some(value) = prop(key) {
            rows.push((label.into(), value));
        }
    }
    // Properties this CLI does not know about are still worth seeing.
    if let Some(props) = props {
        for (key, value) in props {
            let is_known = known.iter().any(|(_, k)| k == key) || key == PROP_STACK_TRACE;
            if !is_known {
                rows.push((key.clone(), scalar_text(value)));
            }
        }
    }
    for w in v
        .get("waitingOn")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        rows.push((
            "Waiting on".into(),
            format!(
                "app {}: {} '{}' ({})",
                str_field(w, "app"),
                str_field(w, "kind"),
                str_field(w, "name"),
                str_field(w, "id")
            ),
        ));
    }
    let mut out = aligned_pairs(&rows);
    if let Some(trace) = prop(PROP_STACK_TRACE).filter(|t| !t.trim().is_empty()) {
        out.push_str("Stack trace:\n");
        for line in trace.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The work of another app an instance's history scheduled and has no answer for yet: cross-app
/// activities (`TaskScheduled` with a target app, no `TaskCompleted`/`TaskFailed`) and child
/// workflows (`ChildWorkflowInstanceCreated` with a target app, no completion or failure).
pub fn waiting_on(history: &Value) -> Vec<Value> {
    let events = history
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let answered: std::collections::HashSet<i64> = events
        .iter()
        .filter(|e| {
            matches!(
                str_field(e, "type"),
                "TaskCompleted"
                    | "TaskFailed"
                    | "ChildWorkflowInstanceCompleted"
                    | "ChildWorkflowInstanceFailed"
            )
        })
        .filter_map(|e| e.get("taskScheduledId").and_then(Value::as_i64))
        .collect();
    let mut out = Vec::new();
    for e in events {
        let target = e
            .get("router")
            .and_then(|r| r.get("targetAppID"))
            .and_then(Value::as_str);
        let (Some(app), Some(id)) = (target, e.get("eventId").and_then(Value::as_i64)) else {
            continue;
        };
        let (kind, what) = match str_field(e, "type") {
            "TaskScheduled" => ("activity", format!("task {id}")),
            "ChildWorkflowInstanceCreated" => ("workflow", str_field(e, "instanceId").to_string()),
            _ => continue,
        };
        if !answered.contains(&id) {
            out.push(serde_json::json!({
                "app": app, "kind": kind, "name": str_field(e, "name"), "id": what,
            }));
        }
    }
    out
}

/// `Label:` column padded to the longest label. Multi-line values continue under the value column.
fn aligned_pairs(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let head = format!("{label}:");
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{head:<width$}  {first}").trim_end());
        out.push('\n');
        for line in lines {
            out.push_str(format!("{:width$}  {line}", "").trim_end());
            out.push('\n');
        }
    }
    out
}

/// The instances of `list` as a table, one row per instance.
pub fn instance_table(instances: &[Value]) -> String {
    if instances.is_empty() {
        return "No workflow instances found.\n".into();
    }
    let rows = instances
        .iter()
        .map(|v| {
            [
                "instanceID",
                "workflowName",
                "runtimeStatus",
                "createdAt",
                "lastUpdatedAt",
            ]
            .iter()
            .map(|k| {
                let text = one_line(str_field(v, k));
                // Work of this instance waits for a concurrency slot (a configured limit).
                if *k == "runtimeStatus" && v.get("waitingForSlot") == Some(&Value::Bool(true)) {
                    format!("{text} (waiting for slot)")
                } else {
                    text
                }
            })
            .collect()
        })
        .collect::<Vec<Vec<String>>>();
    table(
        &[
            "INSTANCE ID",
            "WORKFLOW",
            "STATUS",
            "CREATED",
            "LAST UPDATED",
        ],
        &rows,
    )
}

/// The `history` response as a table: event id, time, type, then the type-specific fields.
pub fn history_table(v: &Value) -> String {
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        return "No history events.\n".into();
    }
    let rows = events
        .iter()
        .map(|e| {
            let id = e.get("eventId").map(scalar_text).unwrap_or_default();
            let details = e.as_object().map(event_details).unwrap_or_default();
            vec![
                id,
                one_line(str_field(e, "timestamp")),
                one_line(str_field(e, "type")),
                details,
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "TIMESTAMP", "TYPE", "DETAILS"], &rows)
}

/// `key=value` for every field but the ones that already have a column, in key order.
fn event_details(obj: &Map<String, Value>) -> String {
    obj.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "eventId" | "timestamp" | "type"))
        .map(|(k, v)| {
            format!(
                "{k}={}",
                truncate(&one_line(&scalar_text(v)), MAX_DETAIL_CHARS)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Strings print without JSON quotes (payloads are already JSON text); everything else as
/// compact JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Table cells must stay on one line or the columns fall apart.
fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r', '\t']) {
        s.replace("\r\n", "\\n")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', " ")
    } else {
        s.to_string()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&mut headers.iter().copied());
    for row in rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_shows_aligned_fields_and_payloads() {
        let v = json!({
            "instanceID": "order-42",
            "workflowName": "order_wf",
            "createdAt": "2026-08-01T10:00:00.123456Z",
            "lastUpdatedAt": "2026-08-01T10:00:02.000001Z",
            "runtimeStatus": "COMPLETED",
            "properties": {
                "dapr.workflow.input": "{\"id\": 42}",
                "dapr.workflow.output": "\"ok\"",
                "dapr.workflow.custom_status": "step3",
                "x.extra": "1"
            }
        });
        assert_eq!(
            instance(&v),
            "Instance ID:    order-42\n\
             Workflow:       order_wf\n\
             Status:         COMPLETED\n\
             Created:        2026-08-01T10:00:00.123456Z\n\
             Last updated:   2026-08-01T10:00:02.000001Z\n\
             Input:          {\"id\": 42}\n\
             Output:         \"ok\"\n\
             Custom status:  step3\n\
             x.extra:        1\n"
        );
    }

    #[test]
    fn instance_shows_failure_and_indented_stack_trace() {
        let v = json!({
            "instanceID": "a", "workflowName": "w", "runtimeStatus": "FAILED",
            "properties": {
                "dapr.workflow.failure.error_type": "Error",
                "dapr.workflow.failure.error_message": "boom",
                "dapr.workflow.failure.stack_trace": "at f\nat g"
            }
        });
        let out = instance(&v);
        assert!(out.contains("Failure type:     Error\n"), "{out}");
        assert!(out.contains("Failure message:  boom\n"), "{out}");
        assert!(out.ends_with("Stack trace:\n    at f\n    at g\n"), "{out}");
        // Absent timestamps print as an empty value, not as "null".
        assert!(out.contains("Created:\n"), "{out}");
    }

    #[test]
    fn instance_table_aligns_columns() {
        let rows = vec![
            json!({"instanceID": "a", "workflowName": "wf_long_name", "runtimeStatus": "RUNNING",
                   "createdAt": "t1", "lastUpdatedAt": "t2"}),
            json!({"instanceID": "bbbbbbbbbbbbb", "workflowName": "w", "runtimeStatus": "PENDING",
                   "createdAt": "t3", "lastUpdatedAt": "t4"}),
        ];
        assert_eq!(
            instance_table(&rows),
            "INSTANCE ID    WORKFLOW      STATUS   CREATED  LAST UPDATED\n\
             a              wf_long_name  RUNNING  t1       t2\n\
             bbbbbbbbbbbbb  w             PENDING  t3       t4\n"
        );
        assert_eq!(instance_table(&[]), "No workflow instances found.\n");
    }

    #[test]
    fn history_table_lists_type_specific_details() {
        let v = json!({"instanceID": "a", "events": [
            {"eventId": -1, "timestamp": "t0", "type": "WorkflowStarted"},
            {"eventId": 0, "timestamp": "t1", "type": "TaskScheduled", "name": "act", "input": "{\"n\":1}"},
            {"eventId": 1, "timestamp": "t2", "type": "TaskFailed",
             "failure": {"errorType": "Error", "errorMessage": "x\ny"}},
        ]});
        assert_eq!(
            history_table(&v),
            "ID  TIMESTAMP  TYPE             DETAILS\n\
             -1  t0         WorkflowStarted\n\
             0   t1         TaskScheduled    input={\"n\":1} name=act\n\
             1   t2         TaskFailed       failure={\"errorMessage\":\"x\\ny\",\"errorType\":\"Error\"}\n"
        );
        assert_eq!(
            history_table(&json!({"events": []})),
            "No history events.\n"
        );
    }

    #[test]
    fn long_and_multiline_cells_stay_on_one_line() {
        let long = "x".repeat(100);
        let v = json!({"events": [{"eventId": 0, "timestamp": "t", "type": "T", "input": long}]});
        let out = history_table(&v);
        let row = out.lines().nth(1).unwrap();
        assert!(
            row.ends_with(&format!("input={}…", "x".repeat(59))),
            "{row}"
        );
        assert_eq!(one_line("a\nb\tc"), "a\\nb c");
    }

    #[test]
    fn json_output_is_the_document_and_parses_back() {
        let v = json!({"instanceID": "a", "properties": {"k": "v"}});
        let s = json(&v);
        assert!(s.ends_with('\n'));
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
