"""The dashboard's Cluster page on a 3-sidecar cluster (3 placement nodes, 3 `weft sidecar`s on
PostgreSQL, one SDK worker each), in a real headless Chromium: whichever sidecar serves the page,
it lists all three sidecars with their apps and actor types, and their owned buckets sum to 4096,
and the three placement nodes with their leader.
Screenshots at desktop and phone widths (see ../browser.py)."""

from __future__ import annotations

from browser import chromium, new_page, shoot
from conftest import direct_cluster
from workload import start_many, wait_done


def test_cluster_page_lists_three_sidecars_owning_every_bucket(rig):
    c, _workers = direct_cluster(rig)
    hosts = {s["internal"] for s in c.sidecars}
    # Some work first, so the serving sidecar's steps-per-second chart has something to show.
    run = start_many([c.sidecar(0)["grpc"]], "dash-", 60)
    wait_done(run, [s["http"] for s in c.sidecars], timeout=120)
    with chromium() as ctx, new_page(ctx) as page:
        for i, sc in enumerate(c.sidecars):
            page.goto(f"http://{sc['http']}/ui/cluster")
            rows = page.locator("#sidecars tbody tr[data-host]")
            rows.first.wait_for()
            # The page refreshes itself; wait for the table to show the settled cluster.
            page.wait_for_function(
                "() => [...document.querySelectorAll('#sidecars [data-buckets]')]"
                ".reduce((n, td) => n + Number(td.dataset.buckets), 0) === 4096", timeout=30_000)
            assert rows.count() == 3
            owned = [int(x) for x in page.locator("#sidecars [data-buckets]").evaluate_all(
                "tds => tds.map(td => td.dataset.buckets)")]
            assert sum(owned) == 4096 and all(n > 0 for n in owned), owned
            addresses = {page.locator(f"#sidecars tbody tr[data-host]:nth-child({k + 1}) td").first.inner_text()
                         for k in range(3)}
            assert addresses == hosts, (addresses, hosts)
            assert page.locator("[data-total]").inner_text().strip() == "4096 / 4096"
            assert page.locator("#sidecars .pill").count() == 1  # "this one": the serving sidecar
            leader = page.locator('[data-fact="Placement leader"]').inner_text()
            assert ":" in leader, leader
            assert "workflow" in page.locator("#sidecars .types").first.inner_text()
            # The placement cluster's three raft members, one of them the leader.
            assert page.locator("#placement tbody tr[data-node]").count() == 3
            assert page.locator("#placement .pill").count() == 1
            states = page.locator("#placement tbody td:nth-of-type(3)").all_inner_texts()
            assert sorted(states) == ["Follower", "Follower", "Leader"], states
            if i == 0:
                page.locator("figure.rate").wait_for(timeout=30_000)  # two samples, 5 s apart
                page.locator("#limits").wait_for()
                shoot(page, "cluster-3-sidecars")
