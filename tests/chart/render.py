"""Renders helm/weft with `helm template` and prints the objects as one JSON list.

Usage: render.py [helm template args...]   (e.g. -f helm/weft/ci/x.yaml --set a=b)
Runs in the chart venv (.venv-chart, which has PyYAML), so suites in venvs without PyYAML (the SDK
suite's test_rendered.py) can read rendered manifests as JSON. HELM names the helm binary
(default: scripts/get-helm.sh fetches one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "weft"


def helm_bin() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    out = subprocess.run([str(ROOT / "scripts" / "get-helm.sh")], check=True, capture_output=True,
                         text=True, timeout=600)
    return out.stdout.strip().splitlines()[-1]


def template(args: list[str], release: str = "weft", namespace: str = "weft") -> list[dict]:
    """The rendered objects (NOTES.txt is not among them)."""
    p = subprocess.run([helm_bin(), "template", release, str(CHART), "--namespace", namespace, *args],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"helm template failed ({p.returncode}):\n{p.stderr}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


if __name__ == "__main__":
    try:
        docs = template(sys.argv[1:])
    except RuntimeError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    json.dump(docs, sys.stdout)
