"""One benchmark run on its own (``python -m bench.<name>``), outside
``make bench``: its results stamped with the time and commit, written to
``bench/results/<name>-<time>.json`` and ``<name>-latest.json``, and printed
as JSON and as its table."""

from __future__ import annotations

import datetime
import json
import os
import subprocess

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_and_print(name: str, results: dict, render) -> int:
    results["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()
    out = os.path.join(RESULTS, f"{name}-{results['when'].replace(':', '')}.json")
    for path in (out, os.path.join(RESULTS, f"{name}-latest.json")):
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(render(results))
    print(f"written to {out}")
    return 0
