//! History propagation (the 1.18 SDKs' `propagation=`): what an activity or child workflow is
//! handed of its caller's history — the caller's own events (`OWN_HISTORY`), or those plus the
//! chunks the caller received itself (`LINEAGE`), oldest ancestor first.

use prost::Message;
use weft_proto::durabletask::{
    HistoryEvent, HistoryPropagationScope, PropagatedHistory, PropagatedHistoryChunk,
    history_event::EventType,
};

/// Most ancestors a lineage is rebuilt through (a deeper chain keeps its nearest ancestors).
pub const MAX_LINEAGE: usize = 32;

/// Who the events of a chunk belong to.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub app_id: &'a str,
    pub instance_id: &'a str,
    pub workflow_name: &'a str,
}

/// The propagated history for `scope` (a `HistoryPropagationScope` as the action carries it):
/// `None` for none (or an unknown value), else the caller's `events` as one chunk, after the
/// chunks it `inherited` for `LINEAGE`.
pub fn build<'e>(
    scope: Option<i32>,
    inherited: Option<&PropagatedHistory>,
    caller: Caller<'_>,
    events: impl IntoIterator<Item = &'e HistoryEvent>,
) -> Option<PropagatedHistory> {
    let scope = HistoryPropagationScope::try_from(scope?).ok()?;
    let own = || PropagatedHistoryChunk {
        raw_events: events.into_iter().map(Message::encode_to_vec).collect(),
        app_id: caller.app_id.to_string(),
        instance_id: caller.instance_id.to_string(),
        workflow_name: caller.workflow_name.to_string(),
        ..Default::default()
    };
    let chunks = match scope {
        HistoryPropagationScope::None => return None,
        HistoryPropagationScope::OwnHistory => vec![own()],
        HistoryPropagationScope::Lineage => {
            let mut c: Vec<PropagatedHistoryChunk> =
                inherited.map(|h| h.chunks.clone()).unwrap_or_default();
            let keep = c.len().saturating_sub(MAX_LINEAGE - 1);
            c.drain(..keep);
            c.push(own());
            c
        }
    };
    Some(PropagatedHistory {
        scope: scope as i32,
        chunks,
    })
}

/// Where a child's parent recorded its creation: the index of the `ChildWorkflowInstanceCreated`
/// event with `task_scheduled_id` for `child_id` in the parent's history, and the scope it asked
/// for. `None` if the parent asked for no propagation (or the event is gone).
pub fn child_creation(
    parent_history: &[HistoryEvent],
    task_scheduled_id: i32,
    child_id: &str,
) -> Option<(usize, i32)> {
    parent_history.iter().position(|e| {
        e.event_id == task_scheduled_id
            && matches!(&e.event_type, Some(EventType::ChildWorkflowInstanceCreated(c)) if c.instance_id == child_id)
    }).and_then(|i| match &parent_history[i].event_type {
        Some(EventType::ChildWorkflowInstanceCreated(c)) => c
            .history_propagation_scope
            .filter(|s| *s != HistoryPropagationScope::None as i32)
            .map(|s| (i, s)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::event_with_id;
    use weft_proto::durabletask::{ChildWorkflowInstanceCreatedEvent, TaskScheduledEvent};

    fn scheduled(id: i32, name: &str) -> HistoryEvent {
        event_with_id(
            id,
            0,
            EventType::TaskScheduled(TaskScheduledEvent {
                name: name.into(),
                ..Default::default()
            }),
        )
    }

    const A: Caller = Caller {
        app_id: "appa",
        instance_id: "p",
        workflow_name: "parent",
    };

    #[test]
    fn own_history_is_one_chunk_and_lineage_appends_to_what_was_inherited() {
        let evs = [scheduled(1, "x"), scheduled(2, "y")];
        assert!(build(None, None, A, &evs).is_none());
        assert!(build(Some(0), None, A, &evs).is_none());
        assert!(build(Some(7), None, A, &evs).is_none(), "unknown scope");
        let own = build(Some(1), None, A, &evs).unwrap();
        assert_eq!(own.scope, 1);
        assert_eq!(own.chunks.len(), 1);
        assert_eq!(own.chunks[0].app_id, "appa");
        assert_eq!(own.chunks[0].workflow_name, "parent");
        let back = HistoryEvent::decode(own.chunks[0].raw_events[1].as_slice()).unwrap();
        assert_eq!(back, evs[1]);

        let child = Caller {
            app_id: "appb",
            instance_id: "c",
            workflow_name: "child",
        };
        let lineage = build(Some(2), Some(&own), child, &evs[..1]).unwrap();
        let apps: Vec<&str> = lineage.chunks.iter().map(|c| c.app_id.as_str()).collect();
        assert_eq!(apps, ["appa", "appb"], "oldest ancestor first");
        // OWN_HISTORY drops what was inherited.
        assert_eq!(
            build(Some(1), Some(&lineage), child, &evs)
                .unwrap()
                .chunks
                .len(),
            1
        );
    }

    #[test]
    fn a_lineage_keeps_its_nearest_ancestors() {
        let mut h: Option<PropagatedHistory> = None;
        for i in 0..(MAX_LINEAGE + 5) {
            let id = i.to_string();
            let c = Caller {
                app_id: "a",
                instance_id: &id,
                workflow_name: "w",
            };
            h = build(Some(2), h.as_ref(), c, []);
        }
        let h = h.unwrap();
        assert_eq!(h.chunks.len(), MAX_LINEAGE);
        assert_eq!(
            h.chunks.last().unwrap().instance_id,
            (MAX_LINEAGE + 4).to_string()
        );
    }

    #[test]
    fn a_childs_creation_is_found_with_its_scope() {
        let created = |id: i32, child: &str, scope: Option<i32>| {
            event_with_id(
                id,
                0,
                EventType::ChildWorkflowInstanceCreated(ChildWorkflowInstanceCreatedEvent {
                    instance_id: child.into(),
                    history_propagation_scope: scope,
                    ..Default::default()
                }),
            )
        };
        let h = [
            scheduled(1, "x"),
            created(2, "p:0002", Some(2)),
            created(3, "p:0003", None),
        ];
        assert_eq!(child_creation(&h, 2, "p:0002"), Some((1, 2)));
        assert_eq!(
            child_creation(&h, 3, "p:0003"),
            None,
            "no propagation asked"
        );
        assert_eq!(child_creation(&h, 2, "other"), None);
        assert_eq!(child_creation(&h, 9, "p:0002"), None);
    }
}
