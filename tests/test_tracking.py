"""Tracking: the TensorBoard events hold the run's own metrics, and its samples as text."""

from __future__ import annotations

import copy
import json
import struct
import sys
from pathlib import Path

import pytest

from bayesalign.config import ConfigError, apply_overrides, parse_config
from bayesalign.runs import RunFolder
from bayesalign.session import train
from bayesalign.training.tracking import tensorboard_scalars

RAW = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"steps": 4, "batch_size": 32, "lr": 3e-2},
    "eval": {"every": 2, "samples": 16, "save_samples": 3, "report": False},
    "checkpoint": {"every": 4},
    "tracking": {"backend": "tensorboard", "project": "toy"},
}


def test_tensorboard_gets_every_record_at_its_step(tmp_path):
    train(parse_config(copy.deepcopy(RAW)), tmp_path)
    records = RunFolder(tmp_path).read_metrics()
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    for name in ("satisfaction_pi", "kl_p_pi", "kl_pi_a"):
        assert [s for s, _ in scalars[name]] == [r["step"] for r in records]
        assert [v for _, v in scalars[name]] == pytest.approx([r[name] for r in records], rel=1e-6)
    assert "loss" in scalars and len(scalars["loss"]) == 2  # train metrics: only after a step


def test_a_missing_tracker_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train(parse_config(copy.deepcopy(RAW)), tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        parse_config(apply_overrides(copy.deepcopy(RAW), ["tracking.backend=tensorbord"]))


def test_tensorboard_gets_the_sampled_texts(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(parse_config(copy.deepcopy(RAW)), tmp_path)
    (events,) = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    (tag,) = [t for t in accumulator.Tags()["tensors"] if t.startswith("samples")]
    texts = [e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors(tag)]
    assert len(texts) == 3  # one panel per evaluation (steps 0, 2, 4)
    saved = (RunFolder(tmp_path).samples / "step_000000.jsonl").read_text().splitlines()
    rows = texts[0].strip().splitlines()
    assert rows[0].startswith("| text |") and len(rows) == 2 + len(saved)  # header, rule, rows
    for row, line in zip(rows[2:], saved, strict=True):
        assert row.startswith(f"| {json.loads(line)['text']} |")


def test_mlflow_gets_every_record_and_the_samples_as_tables(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from bayesalign.training.tracking import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = apply_overrides(copy.deepcopy(RAW), ["tracking.backend=mlflow"])
    train(parse_config(raw), tmp_path)
    records = RunFolder(tmp_path).read_metrics()
    client = MlflowClient(mlflow_uri(RunFolder(tmp_path)))
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    for name in ("satisfaction_pi", "kl_p_pi"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [r["step"] for r in records]
        assert [m.value for m in history] == pytest.approx([r[name] for r in records], rel=1e-6)
    tables = [f.path for f in client.list_artifacts(run.info.run_id, "samples")]
    assert tables == [f"samples/step_{r['step']:06d}.json" for r in records]
    table = json.loads(
        (tmp_path / "mlflow-artifacts" / run.info.run_id / "artifacts" / tables[0]).read_text()
    )
    saved = (RunFolder(tmp_path).samples / "step_000000.jsonl").read_text().splitlines()
    texts = [row[table["columns"].index("text")] for row in table["data"]]
    assert texts == [json.loads(line)["text"] for line in saved]


def wandb_offline_history(run_file: Path) -> list[dict[str, str]]:
    """The history rows (key -> JSON value) of an offline W&B run's ``run-*.wandb`` file.

    wandb 0.31 ships no Python reader; the file is a 7-byte header (":W&B", magic, version)
    then LevelDB's log format: 32 KiB blocks of chunks [crc32 u32, length u16, type u8, data],
    type 1 a whole record, 2/3/4 its first/middle/last piece; each record a protobuf Record.
    """
    from wandb.proto import wandb_internal_pb2

    raw, block, header = run_file.read_bytes(), 32768, 7
    assert raw[:4] == b":W&B"
    pos, piece, rows = header, b"", []
    while pos + header <= len(raw):
        if (left := block - pos % block) < header:  # a block's tail too short for a chunk: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + header])
        piece += raw[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            piece = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or ".".join(i.nested_key): i.value_json for i in record.history.item})
    return rows


def test_wandb_offline_gets_every_record_and_the_samples_as_tables(tmp_path, monkeypatch):
    for name, value in [("WANDB_MODE", "offline"), ("WANDB_SILENT", "true")]:
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    raw = apply_overrides(copy.deepcopy(RAW), ["tracking.backend=wandb"])
    train(parse_config(raw), tmp_path / "run")
    records = RunFolder(tmp_path / "run").read_metrics()
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    history = wandb_offline_history(run_file)
    assert [int(h["_step"]) for h in history] == [r["step"] for r in records]
    for name in ("satisfaction_pi", "kl_p_pi"):
        assert [float(h[name]) for h in history] == pytest.approx([r[name] for r in records], rel=1e-6)
    assert all(json.loads(h["samples._type"]) == "table-file" for h in history)
    for record in records:
        step = record["step"]
        (table,) = (run_dir / "files" / "media" / "table").glob(f"samples_{step}_*.table.json")
        table = json.loads(table.read_text())
        saved = (RunFolder(tmp_path / "run").samples / f"step_{step:06d}.jsonl").read_text().splitlines()
        texts = [row[table["columns"].index("text")] for row in table["data"]]
        assert texts == [json.loads(line)["text"] for line in saved]
