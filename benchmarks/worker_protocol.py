"""The line protocol between a benchmark driver and its worker processes (bench_trl.py,
bench_disco.py): a worker writes its records to stdout as ``TAG`` + JSON; every other line is a
library's chatter and is skipped. Standard library only: workers run in the peers' own venvs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import IO

TAG = "BENCH "


def emit(kind: str, **values) -> None:
    """A worker's record of ``kind`` on stdout, for the driver's :func:`read_record`."""
    print(TAG + json.dumps({"kind": kind, **values}), flush=True)


def read_record(proc: subprocess.Popen, log: IO[str], name: str, kind: str) -> dict:
    """The next record of ``kind`` from worker ``name``; its stderr's tail if it ends first."""
    for line in proc.stdout:
        if line.startswith(TAG):
            record = json.loads(line[len(TAG) :])
            if record["kind"] == kind:
                return record
    log.flush()
    tail = Path(log.name).read_text()[-3000:]
    raise RuntimeError(f"{name} worker ended before sending {kind!r}; its stderr:\n{tail}")
