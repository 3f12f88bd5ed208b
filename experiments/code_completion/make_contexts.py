"""Write the code-completion task's contexts: train.jsonl and heldout.jsonl next to this file.

    python experiments/code_completion/make_contexts.py [--heldout 64] [--seed 0]

Each line is {"context": "```python\\n<signature + docstring>\\n", "reference": "<body>\\n```",
"source": "module.py:function"}, taken from this Python's standard library (tasks/code_completion.py).
"""

import argparse
from pathlib import Path

from bayesalign.tasks.code_completion import stdlib_functions, write_splits

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, heldout = write_splits(Path(__file__).parent / "data", args.heldout, args.seed)
    print(f"{len(stdlib_functions())} functions: {train}, {heldout} ({args.heldout} held out)")
