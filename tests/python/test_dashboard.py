"""The web dashboard (/ui/) in a real headless Chromium (Debian's `chromium`, driven by Playwright
for Python with the system browser) against `weft dev` with real Python SDK workers: the list,
the timeline (one bar per activity attempt), terminate from the list, raise an event from an
instance's page, the cluster page, and the API token. Screenshots of every page at desktop and
phone widths go to target/dashboard-screenshots/ (or $WEFT_SCREENSHOT_DIR).

Never runs `playwright install`: the browser is the system one (scripts/test.sh installs it).
"""

from __future__ import annotations

import json

import httpx
import pytest

from browser import chromium, new_page, shoot
from weft_harness import wait_until

TOKEN = "d4shb0ard-t0ken"


@pytest.fixture(scope="module")
def browser():
    with chromium() as ctx:
        yield ctx


@pytest.fixture
def page(browser):
    with new_page(browser) as pg:
        yield pg


@pytest.fixture
def dash(weft_factory):
    """A private `weft dev` with an in-process SDK worker (dapr-ext-workflow) and a client."""
    import dapr.ext.workflow as wf
    from wf_defs import SharedState, register_all

    w = weft_factory()
    rt = wf.WorkflowRuntime(host=w.grpc_host, port=str(w.grpc_port), worker_ready_timeout=30)
    register_all(rt, SharedState())
    rt.start()
    c = wf.DaprWorkflowClient(host=w.grpc_host, port=str(w.grpc_port))
    yield w, c
    c.close()
    rt.shutdown()


def row_status(pg, iid: str) -> str:
    return pg.locator(f'tr[data-id="{iid}"] .badge').inner_text().strip()


def test_list_timeline_cluster_and_screenshots(dash, page):
    w, c = dash
    from dapr.ext.workflow import WorkflowStatus as S

    base = "dash-list"
    ids = {
        "chain": c.schedule_new_workflow("chain", input=1, instance_id=f"{base}-chain"),
        "retry": c.schedule_new_workflow("retry_ok", input=2, instance_id=f"{base}-retry"),
        "parent": c.schedule_new_workflow("parent", input=2, instance_id=f"{base}-parent"),
        "can": c.schedule_new_workflow("counter_can", input=3, instance_id=f"{base}-can"),
        "fail": c.schedule_new_workflow("activity_fails_uncaught", input="boom", instance_id=f"{base}-fail"),
        "timer": c.schedule_new_workflow("wait_event_when_any", input={"name": "ev", "seconds": 1},
                                         instance_id=f"{base}-timer"),
    }
    waiting = c.schedule_new_workflow("custom_status", input=None, instance_id=f"{base}-waiting")
    for key, iid in ids.items():
        st = c.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        assert st is not None, key
        want = S.FAILED if key == "fail" else S.COMPLETED
        assert st.runtime_status == want, (key, st.runtime_status, st.serialized_output)
    c.wait_for_workflow_start(waiting, timeout_in_seconds=30)

    # The list shows the instances that ran, with their status, and counts by status.
    page.goto(f"{w.http_url}/ui/")
    for iid in [*ids.values(), waiting]:
        page.locator(f'tr[data-id="{iid}"]').wait_for()
    assert row_status(page, ids["chain"]) == "COMPLETED"
    assert row_status(page, ids["fail"]) == "FAILED"
    assert row_status(page, waiting) == "RUNNING"
    completed = int(page.locator('[data-count="COMPLETED"] strong').inner_text())
    assert completed >= len(ids) - 1, completed  # children of `parent` are COMPLETED instances too
    shoot(page, "instances")

    # Filters: ID prefix and status.
    page.goto(f"{w.http_url}/ui/?prefix={base}-c&status=COMPLETED")
    page.locator(f'tr[data-id="{ids["chain"]}"]').wait_for()
    wait_until(lambda: page.locator("tbody tr[data-id]").count() == 2, 10, what="two rows for prefix dash-list-c")
    assert page.locator(f'tr[data-id="{ids["can"]}"]').count() == 1

    # The retried activity shows each attempt as its own bar: 2 failures, then success.
    page.goto(f"{w.http_url}/ui/instances/{ids['retry']}")
    bars = page.locator('.bar.activity[data-name="flaky"]')
    bars.first.wait_for()
    assert bars.count() == 3
    assert page.locator('.bar.activity.failed[data-name="flaky"]').count() == 2
    # Each bar is reachable with the keyboard and says what it is.
    assert "flaky · attempt 2" in bars.nth(1).get_attribute("aria-label")
    bars.nth(1).focus()
    assert page.evaluate("document.activeElement.dataset.attempt") == "2"
    assert page.locator(".bar.timer").count() >= 2  # the retry delays
    assert page.locator("#inst-status .badge").inner_text() == "COMPLETED"
    shoot(page, "instance-retry")

    # One bar per activity of a plain chain; raw events are the history.
    page.goto(f"{w.http_url}/ui/instances/{ids['chain']}")
    page.locator(".bar.activity").first.wait_for()
    assert page.locator(".bar.activity").count() == 3
    raw = json.loads(page.locator("#raw-events").text_content())
    assert [e["type"] for e in raw].count("TaskScheduled") == 3

    # Children are links to their own pages.
    page.goto(f"{w.http_url}/ui/instances/{ids['parent']}")
    page.locator(".bar.child").first.wait_for()
    assert page.locator(".bar.child").count() == 3
    child_link = page.locator(".tlabel a").first
    child_link.click()
    page.wait_for_url("**/ui/instances/*")
    page.locator(".bar.activity").first.wait_for()
    assert "child" in page.locator(".facts").inner_text()

    # Continue-as-new: one section per execution of this instance's history.
    page.goto(f"{w.http_url}/ui/instances/{ids['can']}")
    page.locator(".tsection").first.wait_for()
    note = page.locator("[data-generation]")
    assert note.get_attribute("data-generation") == "2", note.inner_text()  # 3 -> 4 -> 5
    assert page.locator(".bar.activity").count() == 0  # the last execution returns at once
    shoot(page, "instance-continued")

    # Failure details with the stack trace.
    page.goto(f"{w.http_url}/ui/instances/{ids['fail']}")
    page.locator(".failure").wait_for()
    assert "boom" in page.locator(".failure").inner_text()
    shoot(page, "instance-failed")

    # A timer bar and an external-event wait.
    page.goto(f"{w.http_url}/ui/instances/{ids['timer']}")
    page.locator(".bar.timer").first.wait_for()

    # The cluster page of a single `weft dev`: its one sidecar owns every bucket.
    page.goto(f"{w.http_url}/ui/cluster")
    total = page.locator("[data-total]").first
    total.wait_for()
    assert total.inner_text().strip() == "4096 / 4096"
    assert page.locator("#sidecars tbody tr[data-host]").count() == 1
    assert page.locator("#placement tbody tr[data-node]").count() == 1  # weft dev's embedded node
    shoot(page, "cluster")
    c.raise_workflow_event(waiting, "go", data="x")


def test_terminate_from_the_list_changes_its_status(dash, page):
    w, c = dash
    from dapr.ext.workflow import WorkflowStatus as S

    iid = c.schedule_new_workflow("wait_event", input="never", instance_id="dash-term-1")
    other = c.schedule_new_workflow("wait_event", input="never", instance_id="dash-term-2")
    c.wait_for_workflow_start(iid, timeout_in_seconds=30)
    c.wait_for_workflow_start(other, timeout_in_seconds=30)
    page.goto(f"{w.http_url}/ui/?prefix=dash-term-")
    page.locator(f'tr[data-id="{iid}"]').wait_for()
    wait_until(lambda: row_status(page, iid) == "RUNNING", 15, what="RUNNING in the list")
    page.get_by_label(f"Select {iid}").check()
    page.locator('[data-bulk="terminate"]').click()
    dialog = page.get_by_role("dialog")
    assert "1 instance" in dialog.inner_text()
    dialog.get_by_role("button", name="Terminate 1 instance").click()
    page.locator("#bulk-result[data-succeeded='1']").wait_for()
    assert "1 of 1 succeeded" in page.locator("#bulk-result").inner_text()
    # The list refreshes itself: the row turns TERMINATED without a reload, the other stays.
    wait_until(lambda: row_status(page, iid) == "TERMINATED", 20, what="TERMINATED in the list")
    assert row_status(page, other) == "RUNNING"
    assert c.get_workflow_state(iid).runtime_status == S.TERMINATED

    # The other one too, then purge every instance the filter matches (both), in bulk.
    c.terminate_workflow(other)
    wait_until(lambda: row_status(page, other) == "TERMINATED", 20, what="the second one TERMINATED")
    page.get_by_label("Act on").select_option("matching")
    page.locator('[data-bulk="purge"]').click()
    page.get_by_role("dialog").get_by_role("button", name="Purge 2 instances").click()
    page.locator("#bulk-result[data-succeeded='2']").wait_for()
    wait_until(lambda: page.locator("td.empty").count() == 1, 20, what="an empty list after the purge")
    assert c.get_workflow_state(iid) is None and c.get_workflow_state(other) is None


def test_raise_event_from_the_instance_page_lets_it_finish(dash, page):
    w, c = dash
    from dapr.ext.workflow import WorkflowStatus as S

    iid = c.schedule_new_workflow("wait_event", input="approval", instance_id="dash-raise-1")
    c.wait_for_workflow_start(iid, timeout_in_seconds=30)
    page.goto(f"{w.http_url}/ui/instances/{iid}")
    page.locator("#inst-status .badge").wait_for()
    assert page.locator("#inst-status .badge").inner_text() == "RUNNING"
    shoot(page, "instance-running")
    page.get_by_label("Event name").fill("approval")
    page.get_by_label("Payload (JSON, optional)").fill('{"ok": true, "by": "dashboard"}')
    page.get_by_role("button", name="Raise event").click()
    # The page polls a live instance: COMPLETED appears without a reload.
    page.locator('#inst-status .badge[data-status="COMPLETED"]').wait_for(timeout=30_000)
    assert page.locator(".mark.event").count() == 1
    st = c.wait_for_workflow_completion(iid, timeout_in_seconds=30)
    assert st.runtime_status == S.COMPLETED
    assert json.loads(st.serialized_output) == {"got": {"ok": True, "by": "dashboard"}}


def test_suspend_resume_and_purge_from_the_instance_page(dash, page):
    w, c = dash
    from dapr.ext.workflow import WorkflowStatus as S

    iid = c.schedule_new_workflow("wait_event", input="go", instance_id="dash-suspend-1")
    c.wait_for_workflow_start(iid, timeout_in_seconds=30)
    page.goto(f"{w.http_url}/ui/instances/{iid}")
    page.locator('[data-action="suspend"]').click()
    page.locator('#inst-status .badge[data-status="SUSPENDED"]').wait_for()
    page.locator('[data-action="resume"]').click()
    page.locator('#inst-status .badge[data-status="RUNNING"]').wait_for()
    page.locator('[data-action="terminate"]').click()
    page.get_by_role("dialog").get_by_role("button", name="Terminate").click()
    page.locator('#inst-status .badge[data-status="TERMINATED"]').wait_for()
    assert c.get_workflow_state(iid).runtime_status == S.TERMINATED
    page.locator('[data-action="purge"]').click()
    page.get_by_role("dialog").get_by_role("button", name="Purge").click()
    page.wait_for_url(f"{w.http_url}/ui/")
    assert c.get_workflow_state(iid) is None


def test_with_the_api_token_the_dashboard_refuses_a_browser_without_it(weft_factory, page):
    w = weft_factory(env={"DAPR_API_TOKEN": TOKEN})
    with httpx.Client(base_url=w.http_url, timeout=10) as h:
        for path in ("/ui/", "/ui/cluster", "/ui/instances/x", "/ui/assets/app.js", "/ui/api/summary",
                     "/ui/api/http/weft/v1/instances"):
            assert h.get(path).status_code == 401, path
        assert h.get("/ui/?token=wrong").status_code == 401
        assert h.get("/ui/", headers={"dapr-api-token": TOKEN}).status_code == 200
        r = h.get("/ui/cluster?token=" + TOKEN, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/cluster", r.headers
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        jar = {"cookie": cookie.split(";")[0]}
        assert h.get("/ui/api/summary", headers=jar).status_code == 200
        # A change with the cookie alone (what another site's form could send) is refused.
        assert h.post("/ui/api/bulk", headers=jar, json={"op": "terminate", "ids": ["x"]}).status_code == 401
        r = h.post("/ui/api/bulk", headers={**jar, "x-weft-ui": "1"}, json={"op": "terminate", "ids": ["x"]})
        assert r.status_code == 200 and r.json()["succeeded"] == 0, r.text

    resp = page.goto(f"{w.http_url}/ui/")
    assert resp.status == 401
    assert "token" in page.locator("body").inner_text()
    page.goto(f"{w.http_url}/ui/?token={TOKEN}")
    assert page.url == f"{w.http_url}/ui/"
    page.locator("table.list").wait_for()
    page.locator("td.empty").wait_for()  # the page's API calls went through with the cookie


def test_rerun_from_an_event_on_the_instance_page(dash, page):
    w, c = dash
    from dapr.ext.workflow import WorkflowStatus as S

    iid = c.schedule_new_workflow("rerunnable", input=10, instance_id="dash-rerun-src")
    assert c.wait_for_workflow_completion(iid, timeout_in_seconds=30).runtime_status == S.COMPLETED
    page.goto(f"{w.http_url}/ui/instances/{iid}")
    page.locator(".bar.activity").first.wait_for()
    assert page.locator("#ev-name").is_hidden()  # a finished instance takes no events
    option = page.locator("#rr-event option", has_text="add_one")
    page.locator("#rr-event").select_option(option.get_attribute("value"))
    page.get_by_label("New instance ID").fill("dash-rerun-new")
    page.get_by_label("New input").fill("41")
    page.get_by_role("button", name="Rerun").click()
    page.get_by_role("dialog").get_by_role("button", name="Rerun").click()
    page.wait_for_url(f"{w.http_url}/ui/instances/dash-rerun-new")
    page.locator('#inst-status .badge[data-status="COMPLETED"]').wait_for(timeout=30_000)
    st = c.wait_for_workflow_completion("dash-rerun-new", timeout_in_seconds=30)
    assert json.loads(st.serialized_output) == ["step1", 42, "step3"]
