"""Read an offline W&B run back from its run-*.wandb file, for tests that check what a run sent to W&B.

wandb has no public reader for offline runs; the file is a leveldb-style log (7-byte file header, 32 KiB
blocks, each chunk: crc32 4 bytes, length 2, type 1: full/first/middle/last) of wandb's own protobuf
Records (wandb.proto.wandb_internal_pb2.Record), which is what `wandb sync` uploads.
"""

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(path).read_bytes()
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        pending += data[pos:pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
        elif kind not in (FIRST, MIDDLE):
            break


def offline_run(path: Path) -> dict:
    """{name, job_type, group, id, config (last value per key), metrics {name: {step_metric, summary}}, summary,
    preempting (mark_preempting was called), exit_code}."""
    run = {"config": {}, "metrics": {}, "summary": {}, "preempting": False, "exit_code": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            # a later run record (a name set after init) updates what it carries
            values = dict(name=r.display_name, job_type=r.job_type, group=r.run_group, id=r.run_id)
            run.update({k: v for k, v in values.items() if v or k not in run})
            run["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "metric":
            m = record.metric
            summary = sorted(f.name for f, v in m.summary.ListFields() if v)
            run["metrics"][m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": summary}
        elif kind == "preempting":
            run["preempting"] = True
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "summary":
            run["summary"].update({u.key or ".".join(u.nested_key): json.loads(u.value_json)
                                   for u in record.summary.update})
    return run


def offline_runs(wandb_dir: Path) -> dict[str, dict]:
    """Every offline run under wandb_dir, by run id."""
    runs = [offline_run(p) for p in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))]
    return {r["id"]: r for r in runs}
