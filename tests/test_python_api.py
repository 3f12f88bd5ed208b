"""docs/python-api.md runs as written, with the page's own substitution of the toy prior for
SmolLM2, and shows what it says: training brings π closer to p on exact posterior samples."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = (Path(__file__).parents[1] / "docs" / "python-api.md").read_text()


def test_the_python_api_page_runs_and_training_moves_pi_towards_p(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path / "cache"))
    toy_line = re.search(r"```text\n(prior = toy_model\(.*\))\n```", PAGE).group(1)
    blocks = re.findall(r"```python\n(.*?)```", PAGE, re.S)
    program = "\n".join(blocks)
    smollm2 = next(line for line in program.splitlines() if line.startswith("prior = LanguageModel"))
    program = program.replace(smollm2, f"from bayesalign.toy import toy_model\n{toy_line}")
    namespace: dict = {}
    exec(compile(program, "docs/python-api.md", "exec"), namespace)  # noqa: S102 (our own docs)

    printed = capsys.readouterr().out
    kls = [float(k) for k in re.findall(r"KL\(p‖π\) ([\d.]+) ±", printed)]
    assert len(kls) == 3  # steps 0, 4, 8
    assert min(kls[1:]) < kls[0]  # training moved π towards p on held-out exact p-samples
    best = namespace["best"]  # keep_best restored the evaluated π with the lowest KL(p‖π)
    assert best is not None and round(best["pool_kl_p_pi"], 3) == min(kls)
    assert namespace["metrics"]["pool_kl_p_pi"] <= kls[0]
    assert (tmp_path / "italian-policy" / "model.safetensors").exists()
