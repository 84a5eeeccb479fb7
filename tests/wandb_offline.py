"""Read an offline W&B run back (metrics, summary, config, group) without network access.

wandb 0.31 keeps no Python reader for its run file: records are wandb's own protobuf
`Record` messages in a LevelDB-style log (7-byte header, 32 KiB blocks, each chunk
with a 7-byte header: crc32, length, type). Parsing uses wandb's protobuf classes.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

HEADER, BLOCK, CHUNK_HEADER = 7, 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _records(path: Path):
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - (pos % BLOCK)
        if room < CHUNK_HEADER:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """run_dir: a `wandb/offline-run-*` folder."""
    (path,) = Path(run_dir).glob("*.wandb")
    run = OfflineRun()
    for r in _records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name, run.group, run.job_type = r.run.run_id, r.run.display_name, r.run.run_group, r.run.job_type
            run.config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            run.history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            run.summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return run
