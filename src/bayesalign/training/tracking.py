"""Experiment tracking through accelerate's tracker interface: TensorBoard, Weights & Biases
(``WANDB_MODE=offline`` works without network) or MLflow, chosen in the config. Every
evaluation record goes to the tracker as scalars at its step; the sampled texts of π as a table
where the tracker has tables (W&B) and as a Markdown text panel in TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bayesalign.training.run import RunFolder

BACKENDS = ("tensorboard", "wandb", "mlflow")


def make_tracker(backend: str, project: str, run: RunFolder):
    """An accelerate GeneralTracker writing under the run folder (TensorBoard, MLflow) or to the
    named project (W&B). A missing package is an ImportError that names it."""
    from accelerate import tracking

    needs = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    try:
        __import__(needs[backend])
    except ImportError as err:
        raise ImportError(
            f"tracking.backend {backend!r} needs {needs[backend]}: pip install {needs[backend]}"
        ) from err
    if backend == "tensorboard":
        tracker = tracking.TensorBoardTracker(project, run.path / "tensorboard")
    elif backend == "wandb":
        tracker = tracking.WandBTracker(project, dir=str(run.path))
    else:
        tracker = tracking.MLflowTracker(project, logging_dir=str(run.path / "mlruns"))
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
    elif tracker.name == "tensorboard":
        table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        table += "".join("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n" for r in rows)
        tracker.writer.add_text("samples", table, global_step=step)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|").replace("\n", " ")


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
