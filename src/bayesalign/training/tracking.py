"""Experiment tracking through accelerate's tracker interface: TensorBoard, Weights & Biases
(``WANDB_MODE=offline`` works without network) or MLflow, chosen in the config. Every
evaluation record goes to the tracker as scalars at its step; the sampled texts of π as a table
where the tracker has tables (W&B, MLflow) and as a Markdown text panel in TensorBoard."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from bayesalign.runs import RunFolder

BACKENDS = ("tensorboard", "wandb", "mlflow")


def make_tracker(backend: str, project: str, run: RunFolder):
    """An accelerate GeneralTracker writing under the run folder (TensorBoard, MLflow) or to the
    named project (W&B). A missing package is an ImportError that names it."""
    from accelerate import tracking

    needs = {"tensorboard": "tensorboard", "wandb": "'bayesalign[wandb]'", "mlflow": "'bayesalign[mlflow]'"}
    try:
        __import__(backend)
        if backend == "mlflow":
            __import__("sqlalchemy")
            __import__("alembic")
    except ImportError as err:
        raise ImportError(
            f"tracking.backend {backend!r} needs {needs[backend]}: pip install {needs[backend]}"
        ) from err
    if backend == "tensorboard":
        tracker = tracking.TensorBoardTracker(project, run.path / "tensorboard")
    elif backend == "wandb":
        tracker = tracking.WandBTracker(project, dir=str(run.path))
    else:
        import mlflow

        # MLFLOW_TRACKING_URI (a server, a shared database) wins; else a database in the run folder
        if "MLFLOW_TRACKING_URI" not in os.environ:
            mlflow.set_tracking_uri(mlflow_uri(run))
        tracker = tracking.MLflowTracker(project, logging_dir=(run.path / "mlflow-artifacts").as_uri())
    tracker.start()  # accelerate >= 1.x opens the writer/run here, not in the constructor
    return tracker


def log_record(tracker, record: dict, run: RunFolder) -> None:
    """Scalars of the record at its step, and the texts sampled at that evaluation."""
    step = record["step"]
    scalars = {
        k: v
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    tracker.log(scalars, step=step)
    samples = run.samples / f"step_{step:06d}.jsonl"
    if not samples.exists():
        return
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line]
    if not rows:
        return
    columns = list(rows[0])
    if tracker.name == "wandb":
        tracker.log_table(
            "samples", columns=columns, data=[[r.get(c) for c in columns] for r in rows], step=step
        )
    elif tracker.name == "mlflow":
        import mlflow

        table = {c: [r.get(c) for r in rows] for c in columns}
        mlflow.log_table(table, artifact_file=f"samples/step_{step:06d}.json")
    elif tracker.name == "tensorboard":
        table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        table += "".join("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n" for r in rows)
        tracker.writer.add_text("samples", table, global_step=step)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|").replace("\n", " ")


def mlflow_uri(run: RunFolder) -> str:
    """The SQLite database of a run's MLflow records (MLflow >= 3 has no plain-file store)."""
    return f"sqlite:///{(run.path / 'mlflow.db').resolve()}"


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar written under ``folder`` (for tests and quick looks): name -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            out[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return out
