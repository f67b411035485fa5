"""PostgreSQL outages under load (issue #3 acceptance 3): `weft dev --database-url` keeps running
while its database is crash-restarted mid-run; health reports not-ready during the outage; every
workflow completes exactly once with the right output. (SIGKILL of the sidecar on PostgreSQL is
`test_durability.py` run with WEFT_TEST_BACKEND=postgres.)"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

import pg
from test_durability import _client, workers  # noqa: F401  (pytest fixture)
from weft_harness import event_types, in_ci, wait_until


@pytest.fixture
def pg_server():
    try:
        server = pg.PgServer()
    except RuntimeError as e:
        if in_ci():
            pytest.fail(str(e))
        pytest.skip(f"POSTGRESQL TESTS DID NOT RUN: {e}")
    yield server
    server.close()


def _health(weft) -> int:
    try:
        with urllib.request.urlopen(f"{weft.http_url}/v1.0/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _expected(iid: str, i: int) -> str:
    v = i
    for _ in range(3):
        v = v * 2 + 1
    return f"{iid}={v}"


def test_postgres_restart_mid_run_loses_and_repeats_nothing(weft_factory, workers, tmp_path, pg_server):  # noqa: F811
    from dapr.ext.workflow import WorkflowStatus as S

    url = pg_server.create_database("restart_mid_run")
    weft = weft_factory(env={"WEFT_DATABASE_URL": url})
    side = tmp_path / "side"
    workers(weft, side, act_sleep=0.2, name="w")
    c = _client(weft)
    ids = [f"pgr-{i:02d}" for i in range(30)]
    steps = side / "steps.log"

    def steps_done() -> int:
        return len(steps.read_text().splitlines()) if steps.exists() else 0

    try:
        start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i, iid in enumerate(ids):
            c.schedule_new_workflow("durable_chain", input=i, instance_id=iid, start_at=start_at)
        wait_until(lambda: steps_done() >= 15, 60, what="progress before the first outage")

        # Outage 1: the database goes away; the sidecar must say it is not ready.
        pg_server.stop("immediate")
        wait_until(lambda: _health(weft) == 503, 30, what="healthz 503 while PostgreSQL is down")
        pg_server.start()
        wait_until(lambda: _health(weft) == 204, 30, what="healthz 204 once PostgreSQL is back")

        # Outage 2: a crash-restart later in the workflows' life.
        wait_until(lambda: steps_done() >= 50, 90, what="progress after the first outage")
        pg_server.restart()
        print(f"PostgreSQL restarted twice; {steps_done()} activity steps had run")

        deadline = time.monotonic() + 150
        for i, iid in enumerate(ids):
            left = max(1, int(deadline - time.monotonic()))
            st = wait_until(lambda: c.wait_for_workflow_completion(iid, timeout_in_seconds=left), left + 5,
                            what=f"{iid} completes")
            assert st.runtime_status == S.COMPLETED, (iid, st.runtime_status, st.failure_details)
            assert json.loads(st.serialized_output) == _expected(iid, i), iid
        for iid in ids:
            types = event_types(weft.history(iid))
            assert types.count("ExecutionCompleted") == 1, (iid, types)
            assert types.count("ExecutionStarted") == 1, (iid, types)
        # The last activity ran for every instance (at least once: activities may repeat).
        finals = (side / "final.log").read_text().splitlines()
        assert sorted(set(finals)) == sorted(ids), finals
    finally:
        c.close()
    assert weft.alive(), "the sidecar must survive database outages"
