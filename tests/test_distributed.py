"""`bayesalign train` under `accelerate launch --multi_gpu --num_processes 2` on this CPU-only
machine (2 processes, DDP over gloo) equals the one-process run on the same global batch.

Both runs split every draw into the same 2 seeded shards (training.sample_shards: 2): one process
draws both, two processes one each. So the samples are identical and Z, a log-sum-exp over the same
gathered log-weights, is equal to the last bit. Only the gradient's float32 summation order differs
(per-process partial sums, then DDP's average, instead of one running sum over the micro-batches).
Measured after 8 Adam updates: weights differ by at most 1.8e-6, the exact KL(p‖π) by 1.7e-6
relative. The tolerances (1e-5 absolute on weights, 1e-4 relative on metrics) are 5-60x above that
and 3000x below one update (lr 3e-2). One exception: the attention *key* biases, which softmax
ignores. Their true gradient is 0, so Adam's m/√v turns rounding noise into full ±lr steps whose
signs depend on the summation order; they do not change π, which the exact metrics compare
over every sequence of the space.
The two-process run is also interrupted and resumed from its checkpoint, and it must still match.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bayesalign.config import parse_config
from bayesalign.session import train
from bayesalign.training.distributed import shard_generator, shard_sizes

CONFIG = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {
        "method": "gdc++",
        "steps": 4,
        "batch_size": 32,
        "minibatch_size": 16,  # 2 updates per step, each process trains on 8 rows of each
        "micro_batch_size": 4,  # and accumulates them over 2 micro-batches
        "lr": 3e-2,
        "threads": 1,
        "sample_shards": 2,
        "proposal": {"update": "adaptive", "every": 2, "samples": 32},
    },
    "eval": {"every": 2, "samples": 32, "exact": True, "report": False},
    "checkpoint": {"every": 2},
}
WEIGHT_ATOL, METRIC_RTOL = 1e-5, 1e-4
FSDP_CPU = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp_cpu.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: Path, out: Path, *extra: str, fsdp: bool = False) -> subprocess.CompletedProcess:
    """`bayesalign train` under `accelerate launch` with 2 CPU processes of 1 thread each: DDP,
    or with ``fsdp`` FSDP2 (configs/accelerate/fsdp_cpu.yaml)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu: torchrun; `--cpu` would start one process (several need an MPI hostfile)
    launcher = ["--config_file", str(FSDP_CPU)] if fsdp else ["--multi_gpu"]
    command = [
        str(accelerate),
        "launch",
        *launcher,
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={_free_port()}",
        "-m",
        "bayesalign.cli",
        "train",
        str(config),
        "--out",
        str(out),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_weights_equal(ones: dict, twos: dict) -> None:
    """Equal within WEIGHT_ATOL, attention key biases left out (see the module docstring)."""
    assert ones.keys() == twos.keys()
    for name, weight in ones.items():
        other = twos[name]
        if name.endswith("attn.c_attn.bias"):  # [query | key | value]: drop the key biases
            width = len(weight) // 3
            weight, other = (
                torch.cat([weight[:width], weight[2 * width :]]),
                torch.cat([other[:width], other[2 * width :]]),
            )
        torch.testing.assert_close(other, weight, rtol=0, atol=WEIGHT_ATOL)


def assert_records_equal(r1: list[dict], r2: list[dict]) -> None:
    """The records of a 2-process run equal those of the 1-process run (Z exactly)."""
    assert {r["processes"] for r in r1} == {1} and {r["processes"] for r in r2} == {2}
    # the main process alone wrote: one record per evaluation, resumed records not duplicated
    assert [r["step"] for r in r2] == [r["step"] for r in r1] == [0, 2, 4]
    assert r1[0]["running_log_z"] is r2[0]["running_log_z"] is None  # no sample drawn yet: NaN
    for before, a, b in zip(r1, r1[1:], r2[1:], strict=False):
        # Z sums log P - log q over the same samples: exact while q = a; once q is a copy of π,
        # log q carries π's rounding differences
        z_rtol = 1e-12 if before["proposal_updates"] == 0 else METRIC_RTOL
        assert b["running_log_z"] == pytest.approx(a["running_log_z"], rel=z_rtol)
        assert b["samples_seen"] == a["samples_seen"]
        for key in ("log_z", "kl_p_pi", "exact_kl_p_pi", "satisfaction_pi", "kl_pi_a"):
            assert b[key] == pytest.approx(a[key], rel=METRIC_RTOL), key
    for key in ("loss", "grad_norm"):  # the gradient is the global minibatch's mean, not a sum
        assert r2[-1][key] == pytest.approx(r1[-1][key], rel=METRIC_RTOL), key
    assert r2[-1]["proposal_updates"] == r1[-1]["proposal_updates"]


def test_two_processes_with_a_resume_equal_one_process(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    two = tmp_path / "two"
    first = launch(config, two, "--set", "training.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    # a second launch into the same folder is refused on every process (none waits forever)
    again = launch(config, two)
    assert again.returncode != 0 and "already holds a run" in again.stderr
    resumed = launch(config, two, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    one = tmp_path / "one"
    train(parse_config(CONFIG), one)

    ones = load_file(one / "final" / "model.safetensors")
    assert_weights_equal(ones, load_file(two / "final" / "model.safetensors"))
    start = load_file(two / "checkpoints" / "step_000002" / "policy.safetensors")
    moved = [not torch.allclose(start[n], ones[n], rtol=0, atol=1e-3) for n in ones]
    assert sum(moved) > len(ones) / 2  # the steps after the resume did move the weights
    assert_records_equal(records(one), records(two))


def test_fsdp_on_two_cpu_processes_with_a_resume_equals_one_process(tmp_path):
    """FSDP2 (configs/accelerate/fsdp_cpu.yaml): each process holds a shard of every weight
    and of Adam's moments. Sampling runs on the gathered weights; checkpoints and final/ hold
    the full ones. At lr 3e-3 π improves enough that q becomes a copy of π at step 2 (an
    unsharded copy, saved in the checkpoint and rebuilt by the resume)."""
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "training": {**CONFIG["training"], "lr": 3e-3}}))
    two = tmp_path / "two"
    first = launch(config, two, "--set", "training.steps=2", fsdp=True)
    assert first.returncode == 0, first.stderr[-3000:]
    # really sharded (accelerate alone would have fallen back to DDP): the main process holds
    # half of every weight, as DTensor shards
    sharded = re.search(
        r"FSDP: .* over 2 processes, (\d+) of (\d+) tensors; .* holds ([\d,]+) of ([\d,]+)",
        " ".join(first.stderr.split()),  # the console wraps long lines
    )
    assert sharded is not None, first.stderr[-3000:]
    tensors, of_tensors, mine, total = (int(g.replace(",", "")) for g in sharded.groups())
    assert tensors == of_tensors and 0.4 < mine / total <= 0.6
    assert (two / "checkpoints" / "step_000002" / "proposal.safetensors").exists()  # q ← π happened
    resumed = launch(config, two, "--resume", fsdp=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    one = tmp_path / "one"
    train(parse_config(yaml.safe_load(config.read_text())), one)

    assert_weights_equal(
        load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    )
    # final/ and checkpoints are plain models and full optimizer state, as one process writes them
    assert json.loads((two / "final" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    moments = [
        torch.load(run / "checkpoints" / "step_000004" / "trainer.pt")["optimizer"] for run in (one, two)
    ]
    shapes = [{(i, k): tuple(v.shape) for i, s in m["state"].items() for k, v in s.items()} for m in moments]
    assert shapes[0] == shapes[1]
    r1, r2 = records(one), records(two)
    assert_records_equal(r1, r2)
    assert r1[-1]["proposal_updates"] >= 1


def test_shards_split_a_draw_evenly_and_seed_independent_streams():
    assert shard_sizes(10, 4) == [3, 3, 2, 2] and sum(shard_sizes(7, 7)) == 7
    draws = {
        (seed, shard): torch.rand(4, generator=shard_generator(seed, shard))
        for seed in (0, 1)
        for shard in (0, 1)
    }
    assert torch.equal(draws[0, 1], torch.rand(4, generator=shard_generator(0, 1)))  # repeatable
    assert len({tuple(d.tolist()) for d in draws.values()}) == 4  # no two (seed, shard) share a stream
