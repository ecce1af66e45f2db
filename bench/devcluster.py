"""The local control plane: warm start time, memory at idle, and a single create call's latency.

The single-create latency is the baseline later benchmarks (P3) divide by, so it is measured here
the same way they will: median of several calls after a warm-up, in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from orchestrator.devcluster import build
from orchestrator.devcluster.cluster import LocalCluster

REPEATS = 5


def _create_latency_ms(kubeconfig: Path, calls: int = 20) -> float:
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    samples = []
    for i in range(calls + 3):
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"bench-{i}"), data={"a": "b"})
        start = time.perf_counter()
        api.create_namespaced_config_map("default", body)
        if i >= 3:  # warm-up calls are not counted
            samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def run() -> dict[str, Any]:
    build.ensure_built()
    with tempfile.TemporaryDirectory(prefix="kluis-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c", tie_to_parent=True)
        cold = time.monotonic()
        cluster.up()  # first start also creates the PKI
        first_start = time.monotonic() - cold
        cluster.down()
        starts = []
        for _ in range(REPEATS):
            t = time.monotonic()
            cluster.up()
            starts.append(time.monotonic() - t)
            cluster.down()
        cluster.up()
        time.sleep(10)  # let controllers settle before reading idle memory
        rss = cluster.memory_kib()
        latency = _create_latency_ms(cluster.kubeconfig)
        cluster.down()
    return {
        "versions": vars(build.PINNED),
        "metrics": {
            "first_start_s (new PKI)": round(first_start, 2),
            "warm_start_s (median of 5)": round(statistics.median(starts), 2),
            "idle_rss_mib_total": round(sum(rss.values()) / 1024, 1),
            **{f"idle_rss_mib[{k}]": round(v / 1024, 1) for k, v in rss.items()},
            "single_create_latency_ms (median of 20)": latency,
        },
    }
