"""`make bench`: run every benchmark, print a table, write bench-results/<name>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import auth, devcluster, hub, projects, workspaces

BENCHMARKS = {
    "devcluster": devcluster.run,
    "auth": auth.run,
    "projects": projects.run,
    "workspaces": workspaces.run,
    "hub": hub.run,
}


def main(argv: list[str]) -> int:
    wanted = argv or list(BENCHMARKS)
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    for name in wanted:
        result = BENCHMARKS[name]()
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"\n== {name}")
        for key, value in result["metrics"].items():
            print(f"  {key:<45} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
