//! Validation of user-supplied identifiers and the IDs the engine derives itself, and the one
//! check every other string a client or worker sends must pass before it reaches a store.

use weft_proto::durabletask::WorkflowResponse;
use weft_proto::durabletask::workflow_action::WorkflowActionType as A;

/// Longest instance ID accepted, as in Dapr.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// Longest name (workflow, activity, event, timer), version or other short string accepted, in
/// bytes. PostgreSQL indexes names and IDs, and a B-tree entry must stay under ~2.7 KB.
pub const MAX_NAME_LEN: usize = 1024;

/// Longest instance ID accepted where an existing or SDK-derived ID is named (lookups, child
/// and detached workflows, event and terminate targets), in bytes.
pub const MAX_REF_ID_LEN: usize = 1024;

/// Why an instance ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("instance ID must not be empty")]
    Empty,
    #[error("instance ID '{0}' is longer than {MAX_INSTANCE_ID_LEN} characters")]
    TooLong(String),
    #[error("instance ID '{0}' is invalid: only letters, digits, '_' and '-' are allowed")]
    Invalid(String),
}

/// Dapr's rule: at most 64 characters, each a (Unicode) letter or digit, `_` or `-`.
pub fn validate_instance_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.chars().count() > MAX_INSTANCE_ID_LEN {
        return Err(IdError::TooLong(truncate(id)));
    }
    if !id
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(IdError::Invalid(truncate(id)));
    }
    Ok(())
}

/// Child workflow IDs come from the SDKs (`<parent>:0001`), so they may contain `:`, and
/// derived IDs may exceed 64 characters; they are only checked for sanity, not Dapr's rule.
pub fn validate_child_instance_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_REF_ID_LEN || id.chars().any(char::is_control) {
        return Err(IdError::Invalid(truncate(id)));
    }
    Ok(())
}

/// Why a string was refused; says what it was without echoing it (it may hold a NUL byte or be
/// megabytes long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{what} is {len} bytes; the limit is {max} bytes")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    #[error("{0} contains a control character")]
    Control(&'static str),
}

/// What both stores hold in a text column: no NUL byte (PostgreSQL refuses it) and at most
/// `max` bytes. Empty is allowed; see [`check_name`].
pub fn check_text(what: &'static str, s: &str, max: usize) -> Result<(), TextError> {
    if s.len() > max {
        return Err(TextError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if s.contains('\0') {
        return Err(TextError::Nul(what));
    }
    Ok(())
}

/// A non-empty name of at most [`MAX_NAME_LEN`] bytes without a NUL byte.
pub fn check_name(what: &'static str, s: &str) -> Result<(), TextError> {
    if s.is_empty() {
        return Err(TextError::Empty(what));
    }
    check_text(what, s, MAX_NAME_LEN)
}

/// An optional short string (version, timer name): absent, or at most [`MAX_NAME_LEN`] bytes
/// without a NUL byte.
pub fn check_opt(what: &'static str, s: Option<&str>) -> Result<(), TextError> {
    s.map_or(Ok(()), |s| check_text(what, s, MAX_NAME_LEN))
}

/// An instance ID that names an existing (or SDK-derived) instance: non-empty, at most
/// [`MAX_REF_ID_LEN`] bytes, no control characters. Looser than [`validate_instance_id`] so
/// that child IDs (`parent:0001`) can be looked up.
pub fn check_instance_ref(what: &'static str, id: &str) -> Result<(), TextError> {
    if id.is_empty() {
        return Err(TextError::Empty(what));
    }
    check_text(what, id, MAX_REF_ID_LEN)?;
    if id.chars().any(char::is_control) {
        return Err(TextError::Control(what));
    }
    Ok(())
}

/// Checks every string of a worker's answer that the engine stores or indexes: names, versions,
/// IDs and targets of its actions. Payloads (inputs, results, custom status) are bytes to the
/// stores and only size-limited elsewhere. On failure, the ID of the offending action (-1 for
/// the response itself) and why.
pub fn check_response_strings(resp: &WorkflowResponse) -> Result<(), (i32, TextError)> {
    if let Some(v) = &resp.version {
        check_opt("version name", v.name.as_deref()).map_err(|e| (-1, e))?;
        for p in &v.patches {
            check_name("patch name", p).map_err(|e| (-1, e))?;
        }
    }
    for a in &resp.actions {
        let at = |e| (a.id, e);
        match &a.workflow_action_type {
            Some(A::ScheduleTask(t)) => {
                check_name("activity name", &t.name).map_err(at)?;
                check_opt("activity version", t.version.as_deref()).map_err(at)?;
                check_text("task execution ID", &t.task_execution_id, MAX_NAME_LEN).map_err(at)?;
            }
            Some(A::CreateChildWorkflow(c)) => {
                check_name("child workflow name", &c.name).map_err(at)?;
                check_opt("child workflow version", c.version.as_deref()).map_err(at)?;
                if !c.instance_id.is_empty() {
                    check_instance_ref("child workflow instance ID", &c.instance_id).map_err(at)?;
                }
            }
            Some(A::CreateDetachedWorkflow(d)) => {
                check_name("detached workflow name", &d.name).map_err(at)?;
                check_opt("detached workflow version", d.version.as_deref()).map_err(at)?;
                check_instance_ref("detached workflow instance ID", &d.instance_id).map_err(at)?;
                check_opt("detached workflow execution ID", d.execution_id.as_deref())
                    .map_err(at)?;
            }
            Some(A::SendEvent(s)) => {
                check_name("event name", &s.name).map_err(at)?;
                let target = s.instance.as_ref().map_or("", |i| i.instance_id.as_str());
                check_instance_ref("event target instance ID", target).map_err(at)?;
            }
            Some(A::TerminateWorkflow(t)) => {
                check_instance_ref("terminate target instance ID", &t.instance_id).map_err(at)?;
            }
            Some(A::CreateTimer(t)) => {
                check_opt("timer name", t.name.as_deref()).map_err(at)?;
            }
            Some(A::CompleteWorkflow(c)) => {
                if let Some(f) = &c.failure_details {
                    check_text("failure error type", &f.error_type, MAX_NAME_LEN).map_err(at)?;
                }
            }
            Some(A::WorkflowVersionNotAvailable(_)) | None => {}
        }
    }
    Ok(())
}

/// daprd's ID for a child the SDK left unnamed: `<parent>:<last 4 hex digits of 0x10000+id>`.
pub fn default_child_id(parent: &str, action_id: i32) -> String {
    let n = 0x10000u32.wrapping_add(action_id as u32);
    format!("{parent}:{:04x}", n & 0xffff)
}

/// A printable prefix of a refused ID for error messages (control characters escaped).
fn truncate(id: &str) -> String {
    id.chars().take(80).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dapr_ids() {
        for id in ["abc", "order-42", "a_b", "Ünïcode", &"x".repeat(64)] {
            assert_eq!(validate_instance_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(validate_instance_id(""), Err(IdError::Empty));
        assert!(matches!(
            validate_instance_id(&"x".repeat(65)),
            Err(IdError::TooLong(_))
        ));
        for id in ["a b", "a/b", "a:b", "a.b", "\u{0}"] {
            assert!(
                matches!(validate_instance_id(id), Err(IdError::Invalid(_))),
                "{id}"
            );
        }
    }

    #[test]
    fn text_checks_refuse_nul_and_oversize_without_echoing() {
        assert_eq!(check_name("workflow name", "ok"), Ok(()));
        assert_eq!(
            check_name("workflow name", ""),
            Err(TextError::Empty("workflow name"))
        );
        assert_eq!(
            check_name("event name", "a\0b"),
            Err(TextError::Nul("event name"))
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let err = check_name("workflow name", &long).unwrap_err();
        assert!(!err.to_string().contains(&long[..10]), "{err}");
        assert_eq!(check_name("n", &"é".repeat(MAX_NAME_LEN / 2)), Ok(()));
        assert_eq!(check_opt("version", None), Ok(()));
        assert!(check_opt("version", Some("\0")).is_err());
        assert_eq!(check_instance_ref("id", "p:0001"), Ok(()));
        assert_eq!(
            check_instance_ref("id", "a b"),
            Ok(()),
            "looked up, not created"
        );
        assert!(check_instance_ref("id", "a\u{1}").is_err());
        assert!(check_instance_ref("id", "\0").is_err());
        assert!(check_instance_ref("id", &"x".repeat(MAX_REF_ID_LEN + 1)).is_err());
        assert_eq!(
            validate_instance_id("a\0").unwrap_err().to_string(),
            "instance ID 'a\\0' is invalid: only letters, digits, '_' and '-' are allowed"
        );
    }

    #[test]
    fn response_strings_name_the_offending_action() {
        use weft_proto::durabletask::{
            CreateChildWorkflowAction, ScheduleTaskAction, WorkflowAction,
        };
        let act = |id, t| WorkflowAction {
            id,
            workflow_action_type: Some(t),
            router: None,
        };
        let mut resp = WorkflowResponse {
            actions: vec![
                act(
                    0,
                    A::ScheduleTask(ScheduleTaskAction {
                        name: "fine".into(),
                        ..Default::default()
                    }),
                ),
                act(
                    1,
                    A::CreateChildWorkflow(CreateChildWorkflowAction {
                        name: "c".repeat(5000),
                        ..Default::default()
                    }),
                ),
            ],
            ..Default::default()
        };
        let (id, e) = check_response_strings(&resp).unwrap_err();
        assert_eq!(id, 1);
        assert!(matches!(e, TextError::TooLong { len: 5000, .. }));
        resp.actions.pop();
        assert_eq!(check_response_strings(&resp), Ok(()));
    }

    #[test]
    fn child_ids_follow_daprd() {
        assert_eq!(default_child_id("p", 1), "p:0001");
        assert_eq!(default_child_id("p", 0x1234), "p:1234");
        assert!(validate_child_instance_id("p:0001").is_ok());
        assert!(validate_child_instance_id("").is_err());
    }
}
