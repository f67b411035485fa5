"""Task-processing workflow (validate -> assign -> notify) behind a FastAPI app.

The shape follows the Dapr Python workflow docs example: a `WorkflowRuntime` registers the workflow
and its activities and runs inside the app's lifespan; `DaprWorkflowClient` starts instances; the
instances are queried over the Dapr HTTP workflow API with curl. The sidecar is `weft dev`.

Run:  weft dev &  then  uvicorn app:app --port 8000   (see README.md)
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Optional

import dapr.ext.workflow as wf
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("task-processing")

wfr = wf.WorkflowRuntime()

ASSIGNEES = ["alice", "bob", "carol"]


# --------------------------------------------------------------------------- activities
@wfr.activity(name="validate_task")
def validate_task(ctx: wf.WorkflowActivityContext, task: dict) -> dict:
    """Check that the task has the required fields. Activities may do non-deterministic work."""
    log.info("Validating task %s", task.get("task_id"))
    if not task.get("title"):
        return {"valid": False, "reason": "title is required"}
    return {"valid": True, "validated_at": datetime.now(timezone.utc).isoformat()}


@wfr.activity(name="assign_task")
def assign_task(ctx: wf.WorkflowActivityContext, task: dict) -> dict:
    """Pick an assignee (explicit one if given, else round-robin on the task id)."""
    assignee = task.get("assignee") or ASSIGNEES[sum(map(ord, task["task_id"])) % len(ASSIGNEES)]
    log.info("Assigning task %s to %s", task["task_id"], assignee)
    return {"task_id": task["task_id"], "assignee": assignee}


@wfr.activity(name="notify_assignee")
def notify_assignee(ctx: wf.WorkflowActivityContext, assignment: dict) -> dict:
    """Send the notification (here: a log line)."""
    message = f"Task {assignment['task_id']} assigned to {assignment['assignee']}"
    log.info("Notify: %s", message)
    return {"notified": True, "message": message}


# --------------------------------------------------------------------------- workflow
@wfr.workflow(name="task_processing_workflow")
def task_processing_workflow(ctx: wf.DaprWorkflowContext, task: dict):
    """validate -> assign -> notify. Every `yield` is a durable checkpoint."""
    ctx.set_custom_status("validating")
    validation = yield ctx.call_activity(validate_task, input=task)
    if not validation["valid"]:
        ctx.set_custom_status("rejected")
        return {"task_id": task.get("task_id"), "status": "rejected", "reason": validation["reason"]}

    ctx.set_custom_status("assigning")
    assignment = yield ctx.call_activity(assign_task, input=task)

    ctx.set_custom_status("notifying")
    notification = yield ctx.call_activity(notify_assignee, input=assignment)

    ctx.set_custom_status("done")
    return {
        "task_id": task["task_id"],
        "status": "assigned",
        "assignee": assignment["assignee"],
        "notified": notification["notified"],
    }


# --------------------------------------------------------------------------- FastAPI
@asynccontextmanager
async def lifespan(app: FastAPI):
    wfr.start()  # connects to the sidecar's gRPC port (DAPR_GRPC_ENDPOINT or 127.0.0.1:50001)
    yield
    wfr.shutdown()


app = FastAPI(title="Task processing with Dapr Workflow on Weft", lifespan=lifespan)


class TaskIn(BaseModel):
    task_id: str
    title: str = ""
    assignee: Optional[str] = None


@app.post("/tasks", status_code=202)
def start_task(task: TaskIn) -> dict:
    client = wf.DaprWorkflowClient()
    try:
        instance_id = client.schedule_new_workflow(
            workflow=task_processing_workflow,
            input=task.model_dump(),
            instance_id=f"task-{task.task_id}",
        )
    finally:
        client.close()
    return {"instance_id": instance_id}


@app.get("/tasks/{instance_id}")
def get_task(instance_id: str) -> dict:
    client = wf.DaprWorkflowClient()
    try:
        state = client.get_workflow_state(instance_id)
    finally:
        client.close()
    if state is None:
        raise HTTPException(status_code=404, detail="no such workflow instance")
    return {
        "instance_id": instance_id,
        "status": state.runtime_status.name,
        "custom_status": state.serialized_custom_status,
        "output": state.serialized_output,
    }


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}
