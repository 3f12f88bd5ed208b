"""Run folders under faults and user mistakes (docs/reliability.md lists each case and its test).

Every fault is injected, not hoped for: a torn line, a write that fails half-way with ENOSPC, a
second process holding the folder, a truncated or bit-flipped checkpoint, a signal mid-step.
Where a run is resumed after a fault, it must end bit-identical to one that never had it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from bayesalign import atomic
from bayesalign.cli import main
from bayesalign.preflight import PreflightError, check_model_name
from bayesalign.runs import RunFolder, RunFolderError, RunFolderWarning
from bayesalign.runs.metric_names import is_timing
from bayesalign.training import resumable as resumable_module
from bayesalign.training import trainer as trainer_module
from bayesalign.training.interrupt import stop_at_step_boundary

CONFIG = Path(__file__).parents[1] / "configs" / "toy_word.yaml"
FAST = [
    *("--set", "eval.samples=64", "--set", "training.batch_size=32", "--set", "eval.every=2"),
    *("--set", "checkpoint.every=2", "--set", "checkpoint.keep=2", "--set", "eval.report=false"),
]
SRC = str(Path(__file__).parents[1] / "src")


def train(out: Path, steps: int, *extra: str) -> int:
    return main(["train", str(CONFIG), "--out", str(out), "--set", f"training.steps={steps}", *FAST, *extra])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_identical_runs(a: Path, b: Path) -> None:
    """Same records (every value but the timings) and the same final weights, bit for bit."""
    ra, rb = records(a), records(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys(), x["step"]
        assert {k: v for k, v in x.items() if not is_timing(k)} == {
            k: v for k, v in y.items() if not is_timing(k)
        }, x["step"]
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: 6 steps in one go."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert train(out, 6) == 0
    return out


class TornWrites:
    """``io.open`` for files named in ``names`` (or their .tmp siblings) returns a file whose
    first write stores half its text and then fails with ENOSPC: a disk that fills mid-write.
    Both a rewrite in place and an atomic one go through io.open, so each meets the same fault."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        real_open = io.open

        def faulty_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            name = Path(str(file)).name.removesuffix(".tmp")
            return _Torn(handle) if name in names and "w" in mode else handle

        monkeypatch.setattr(io, "open", faulty_open)


class _Torn:
    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, text):
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


# -- 1. metrics.jsonl: appends that a crash can tear -----------------------------------------------
def test_a_torn_last_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path, capsys, uninterrupted):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "samples_seen": 19')  # the process died while appending step 6
    capsys.readouterr()
    assert train(out, 6, "--resume") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: " in err and "dropped an incomplete last line (line 4" in err
    assert [r["step"] for r in records(out)] == [0, 2, 4, 6]
    assert_identical_runs(out, uninterrupted)


def test_a_full_disk_while_appending_tears_only_the_last_line(tmp_path, monkeypatch):
    run = RunFolder(tmp_path).create()
    run.log_metrics({"step": 0, "z": 0.5})
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        run.log_metrics({"step": 2, "z": 0.25})
    monkeypatch.undo()
    with pytest.warns(RunFolderWarning, match="dropped an incomplete last line"):
        assert run.read_metrics() == [{"step": 0, "z": 0.5}]
    with pytest.warns(RunFolderWarning):
        run.truncate_metrics(after_step=0)  # what a resume does: the torn line goes
    run.log_metrics({"step": 2, "z": 0.25})
    assert run.read_metrics() == [{"step": 0, "z": 0.5}, {"step": 2, "z": 0.25}]


def test_a_damaged_line_followed_by_records_is_an_error_naming_it(tmp_path):
    run = RunFolder(tmp_path).create()
    run.metrics_file.write_text('{"step": 0}\n{"step": 2, "z\n{"step": 4}\n')
    with pytest.raises(RunFolderError, match=r"metrics.jsonl:2 is damaged"):
        run.read_metrics()


# -- 2. one writer per run folder ------------------------------------------------------------------
def test_a_second_process_cannot_write_a_run_folder_in_use(tmp_path, capsys):
    out = tmp_path / "run"
    holding = f"import sys; from bayesalign.runs import RunFolder; run = RunFolder({str(out)!r}).lock()"
    command = [sys.executable, "-c", f"{holding}; print('locked', flush=True); sys.stdin.read()"]
    env = {**os.environ, "PYTHONPATH": SRC}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as holder:
        assert holder.stdout.readline().strip() == "locked"
        assert train(out, 2) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"error: {out} is in use by another process (PID {holder.pid})" in err
        assert not (out / "config.yaml").exists()
        holder.kill()  # killed, not closed: the kernel must free the lock of a dead holder
    assert train(out, 2) == 0


# -- 3. rewrites that a crash cannot leave half-done -----------------------------------------------
def test_a_full_disk_while_resume_rewrites_config_and_metrics_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    for name in before:
        with monkeypatch.context() as patch:
            TornWrites(patch, name)
            with pytest.raises(OSError, match="No space left"):
                train(out, 6, "--resume")
        assert (out / name).read_bytes() == before[name]
        assert not (out / f"{name}.tmp").exists()
    assert train(out, 6, "--resume") == 0
    assert [r["step"] for r in records(out)] == [0, 2, 4, 6]


def test_a_full_disk_while_writing_the_model_card_keeps_the_previous_card(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train(out, 2) == 0
    card = (out / "final" / "README.md").read_text()
    TornWrites(monkeypatch, "README.md")
    with pytest.raises(OSError, match="No space left"):
        train(out, 4, "--resume")
    assert (out / "final" / "README.md").read_text() == card


# -- 4. generation longer than the model's context window -----------------------------------------
def test_max_new_tokens_beyond_the_context_window_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, 2, "--set", "sampling.max_new_tokens=40") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: sampling.max_new_tokens 40 does not fit the model's context window of 32 tokens" in err
    assert "at most 31 new tokens fit" in err
    assert not (out / "metrics.jsonl").exists()
    # nothing was kept, so the corrected run may resume the folder (or start afresh in it)
    assert train(out, 2, "--resume", "--set", "sampling.max_new_tokens=4") == 0
    assert [r["step"] for r in records(out)] == [0, 2]


# -- 5. a damaged newest checkpoint ------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's data: the file still loads, with a wrong weight
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file", "checksums"),
    [
        (_truncate, "policy.safetensors", True),
        (_truncate, "trainer.pt", False),  # a checkpoint without checksums: verified by reading it
        (_flip_a_byte, "policy.safetensors", True),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, capsys, uninterrupted, damage, file, checksums
):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    newest = out / "checkpoints" / "step_000004"
    damage(newest / file)
    if not checksums:
        for step in ("step_000002", "step_000004"):
            (out / "checkpoints" / step / "checksums.json").unlink()
    capsys.readouterr()
    assert train(out, 6, "--resume") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: skipped checkpoint {newest}: {file}" in err and "resumed at step 2" in err
    assert_identical_runs(out, uninterrupted)


def test_no_usable_checkpoint_is_an_error_naming_each(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    for step in ("step_000002", "step_000004"):
        _truncate(out / "checkpoints" / step / "policy.safetensors")
    assert train(out, 6, "--resume") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: no usable checkpoint" in err and "step_000002: policy.safetensors" in err


# -- 6. interrupted runs, and folders that are not runs ----------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_saves_a_checkpoint_and_the_resumed_run_is_bit_identical(
    tmp_path, capsys, monkeypatch, uninterrupted, signum
):
    out = tmp_path / "run"
    real_step = trainer_module.Trainer.train_step

    def step_then_signal(self):
        result = real_step(self)
        if self.state.step == 3:
            signal.raise_signal(signum)  # arrives while step 3 is still being finished
        return result

    handler = signal.getsignal(signum)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", step_then_signal)
    assert train(out, 6) == 128 + signum
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"interrupted by {name} at step 3: checkpoint {out}/checkpoints/step_000003")
    assert signal.getsignal(signum) is handler  # the usual effect is back once training stops
    assert train(out, 6, "--resume") == 0
    assert_identical_runs(out, uninterrupted)


def test_a_second_signal_stops_at_once():
    # a process started in the background of a non-interactive shell inherits SIGINT ignored:
    # the test sets Python's usual handler itself, and checks that it is what comes back
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with stop_at_step_boundary(True) as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_outside_training_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("bayesalign.session.train", interrupted)  # the CLI imports it lazily
    assert train(tmp_path / "run", 2) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_kill_before_the_first_checkpoint_does_not_duplicate_records(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise OSError("killed while writing the first checkpoint")

    monkeypatch.setattr(resumable_module, "save_checkpoint", killed)
    with pytest.raises(OSError, match="killed"):
        train(out, 4)
    monkeypatch.undo()
    assert [r["step"] for r in records(out)] == [0, 2]
    capsys.readouterr()
    assert train(out, 4, "--resume") == 0
    assert "no checkpoint: starting over" in capsys.readouterr().err
    assert [r["step"] for r in records(out)] == [0, 2, 4]


def test_a_folder_that_holds_no_run_is_not_written_into(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    (out / "notes.txt").write_text("my notes\n")
    assert train(out, 2) == 2
    assert "holds no bayesalign run (notes.txt)" in " ".join(capsys.readouterr().err.split())
    assert (out / "config.yaml").read_text() == "my own config\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"]


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("a file\n")
    assert train(out, 2) == 2
    assert f"error: --out {out} is a file" in " ".join(capsys.readouterr().err.split())
    assert out.read_text() == "a file\n"


def test_resuming_a_finished_run_with_fewer_steps_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    card = (out / "final" / "README.md").read_text()
    assert train(out, 2, "--resume") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "training.steps 2 is below step 4, which the run has already reached" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["steps"] == 4
    assert (out / "final" / "README.md").read_text() == card


# -- 7. user mistakes: one error line naming the file, line, key or scorer, exit 2 -----------------
SCORERS = """
def boom(text):
    return 1 / 0

def answer(text):
    return "yes"
"""
CALLABLE = "target.constraints=[{{type: callable, function: scorers17:{}, boolean: {}}}]"
# override -> what the error line says; contexts.txt is a file with a non-UTF-8 second line
MISTAKES = {
    "training.steps=[1": "override 'training.steps=[1': the value is not valid YAML",
    "model.name=./no/such/model": "model.name './no/such/model' looks like a local folder, and there is no",
    CALLABLE.format("boom", "true"): "scorer 'callable' failed: ZeroDivisionError: division by zero",
    CALLABLE.format("answer", "true"): "scorer 'callable' returned 'yes' (str) for text",
    CALLABLE.format("nope", "true"): "cannot import callable 'scorers17:nope'",
    CALLABLE.format("boom", "false"): "target: scorer 'callable' is real-valued",
    "target.constraints=[{type: classifier, path: ./nowhere, label: 1}]": "classifier folder ./nowhere",
    "contexts={train: contexts.txt, per_step: 2}": "contexts.txt:2: not UTF-8 text (byte 0xff)",
    "tracking={backend: tensorboard, project: ../../elsewhere}": "tracking.project: '../../elsewhere' must",
}


@pytest.mark.parametrize("override", MISTAKES)
def test_a_mistake_in_the_config_is_one_error_line(tmp_path, capsys, monkeypatch, override):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    Path("scorers17.py").write_text(SCORERS)
    Path("contexts.txt").write_bytes(b"one\ntw\xff\n")
    assert train(tmp_path / "run", 2, "--set", override) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert MISTAKES[override] in " ".join(err.split())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"model: {name: toy}\n# caf\xe9\ntarget: {}\n", "bad.yaml:2: not UTF-8 text (byte 0xe9)"),
        (b"model: {name: toy}\ntarget:\n  constraints: [{type: word\n", "bad.yaml: not valid YAML at line 4"),
        (None, "does not exist (a folder)"),
    ],
    ids=["not-utf8", "yaml-syntax", "a-folder"],
)
def test_an_unreadable_config_file_is_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in " ".join(err.split())


def test_a_model_name_that_looks_like_a_path_is_never_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("runs").mkdir()
    for name in ("runs/mymodel", "./model", "~/no-such-model-here", "/no/such/model", "a/b/c"):
        with pytest.raises(PreflightError, match="looks like a local folder"):
            check_model_name(name)
    check_model_name("HuggingFaceTB/SmolLM2-135M")  # a hub id: no local folder 'HuggingFaceTB'
    Path("runs/mymodel").mkdir()
    check_model_name("runs/mymodel")


def test_a_hub_name_is_not_downloaded_unless_allowed(monkeypatch):
    """Hub access is off by default: a name that is no local folder and not in the local HF cache
    is one clear error naming the switch, found without any network attempt."""
    from bayesalign.config.build import build_models
    from bayesalign.config.sections import ModelSection
    from bayesalign.preflight import PreflightError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    import transformers

    original = transformers.AutoTokenizer.from_pretrained

    def spy(name, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return original(name, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    with pytest.raises(PreflightError, match="model.hub: true"):
        build_models(ModelSection(name="nobody-here/no-such-model-xyz"), "", 0)
    assert calls == [True]  # asked the local cache only


def test_pretraining_corpus_and_vocabulary_mistakes_are_one_line(tmp_path):
    from pydantic import ValidationError

    from bayesalign.pretraining.config import ModelSizeSection
    from bayesalign.pretraining.corpus import CorpusError, load_documents

    with pytest.raises(ValidationError, match="vocab_size"):
        ModelSizeSection(vocab_size=100)  # below the byte alphabet
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1.txt:2: not UTF-8"):
        load_documents([str(latin1)])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(CorpusError, match="no non-empty document"):
        load_documents([str(blank)])
