"""Why conditional training's control tokens went unlearned: the model's P(<|good|>) and
P(<|bad|>) right after <|endoftext|> at position 0 (where every sample starts), during training,
against the corpus's fraction of misaligned first segments, with the two ways of packing.

With ``packing: stream`` (documents back to back, blocks cut anywhere) a block starts with EOS
only by chance, so the next-token distribution after EOS at position 0 is barely trained, and
what the model learns at position 0 (a block starts mid-text) pushes the control tokens down as
training goes on. With ``packing: documents`` every document starts a block after EOS.

The corpus is the synthetic one of tests/test_pretrain_run.py (40 documents of 30 lines, each
with its own rate of "bad" lines); small enough to run in a minute or two on one core.

    python experiments/phf/control_tokens.py   (writes docs/results/phf_control_tokens.{jsonl,png})
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bayesalign.pretraining.config import PretrainConfig  # noqa: E402
from bayesalign.pretraining.trainer import Pretrainer  # noqa: E402

OUT = Path("docs/results")
SUBJECTS = ["the cat", "my dog", "this day", "the food", "our team", "that film", "the weather", "his code"]
GOOD_WORDS, BAD_WORDS = ["good", "nice", "fine", "great"], ["bad", "awful"]


def corpus(root: Path) -> list[str]:
    rng, files = random.Random(0), []
    for d in range(40):
        rate = rng.random()
        lines = [
            f"{rng.choice(SUBJECTS)} is {rng.choice(BAD_WORDS if rng.random() < rate else GOOD_WORDS)}.\n"
            for _ in range(30)
        ]
        path = root / f"doc{d:02d}.txt"
        path.write_text("".join(lines))
        files.append(str(path))
    return files


def run(files: list[str], packing: str) -> list[dict]:
    config = {
        "corpus": {"files": files, "unit": "lines"},
        "scorer": {"type": "regex", "pattern": r"\b(bad|awful)\b", "name": "misaligned"},
        "model": {
            "n_layer": 2,
            "n_embd": 64,
            "n_head": 2,
            "block_size": 64,
            "vocab_size": 400,
            "packing": packing,
        },
        "objective": {"type": "conditional"},
        "training": {"tokens": 250_880, "batch_size": 16, "lr": 3e-3, "threads": 1},
        "eval": {"every_tokens": 25_600, "samples": 128, "max_new_tokens": 6},
    }
    return Pretrainer(PretrainConfig.model_validate(config)).train()


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        files = corpus(Path(root))
        for packing in ("stream", "documents"):
            rows += [{"packing": packing, **r} for r in run(files, packing)]
            last = rows[-1]
            print(json.dumps({k: v for k, v in last.items() if not k.startswith("expected")}), flush=True)
    (OUT / "phf_control_tokens.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for packing, style in (("stream", "--"), ("documents", "-")):
        part = [r for r in rows if r["packing"] == packing]
        tokens = [r["tokens"] for r in part]
        share = [r["p_bad_after_eos"] / (r["p_bad_after_eos"] + r["p_good_after_eos"]) for r in part]
        axes[0].plot(
            tokens,
            [r["p_good_after_eos"] + r["p_bad_after_eos"] for r in part],
            style,
            label=f"{packing}: P(control)",
        )
        axes[0].plot(tokens, share, style, marker=".", label=f"{packing}: P(bad) / P(control)")
        axes[1].plot(
            tokens,
            [r["misalignment_after_bad"] for r in part],
            style,
            marker="x",
            label=f"{packing}: after <|bad|>",
        )
        axes[1].plot(
            tokens,
            [r["misalignment_good_start"] for r in part],
            style,
            marker=".",
            label=f"{packing}: after <|good|>",
        )
    corpus_share = rows[0]["corpus_bad_first_segment_fraction"]
    axes[0].axhline(
        corpus_share, color="grey", lw=0.8, label=f"corpus: misaligned first lines ({corpus_share:.2f})"
    )
    axes[0].set_title("after <|endoftext|> at position 0", fontsize=9)
    axes[1].set_title("misaligned fraction of samples (128 each)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "phf_control_tokens.png", dpi=120)


if __name__ == "__main__":
    main()
