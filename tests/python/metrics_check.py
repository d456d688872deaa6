"""Parse snapfs's /metrics with the Prometheus project's own parser and check the
families, their types, labels and values (tests/integration/api.rs gives the text on stdin and
what to expect in argv: the collection that was snapshotted and failed a restore).
"""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

collection = sys.argv[1]
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}


def family(name, kind):
    assert name in families, f"{name} missing; have {sorted(families)}"
    assert families[name].type == kind, f"{name} is {families[name].type}, not {kind}"
    return families[name]


def value(name, kind, sample, labels):
    for s in family(name, kind).samples:
        if s.name == sample and s.labels == labels:
            return s.value
    raise AssertionError(f"no {sample}{labels} in {family(name, kind).samples}")


assert value("snapshot_creation_running", "gauge", "snapshot_creation_running", {"id": collection}) == 0
assert value("snapshot_recovery_running", "gauge", "snapshot_recovery_running", {"id": collection}) == 0
assert value("snapshot_created", "counter", "snapshot_created_total", {"id": collection}) >= 1
assert value("snapfs_restore_failures", "counter", "snapfs_restore_failures_total", {"reason": "checksum"}) >= 1
assert value("snapfs_snapshot_bytes_streamed", "counter", "snapfs_snapshot_bytes_streamed_total", {"via": "http"}) > 0
freeze = family("snapfs_snapshot_freeze_seconds", "histogram")
count = [s.value for s in freeze.samples if s.name.endswith("_count")][0]
assert count >= 1, freeze.samples
buckets = [s for s in freeze.samples if s.name.endswith("_bucket")]
assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
print("all checks passed")
