"""Run docs/python-api.md's Python blocks as written (on SmolLM2-135M-Instruct), printing what
the page shows and the wall and CPU seconds it took. tests/test_python_api.py runs the same
blocks on the page's toy model instead.

    python experiments/python_api/run_page.py --threads 1
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

PAGE = Path(__file__).parents[2] / "docs" / "python-api.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    program = "\n".join(re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S))
    wall, cpu = time.perf_counter(), time.process_time()
    exec(compile(program, str(PAGE), "exec"), {})  # noqa: S102 (our own docs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"wall {wall:.0f} s, CPU {cpu:.0f} s, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
