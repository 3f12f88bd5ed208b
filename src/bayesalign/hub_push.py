"""`bayesalign push RUN REPO_ID`: upload a run's final/ folder (the model, its tokenizer and its
model card) to the Hugging Face Hub. Opt-in and separate from training: a run never publishes
itself, and what is pushed is the folder the user has already looked at."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HFValidationError


class PushError(ValueError):
    """A run that cannot be pushed as asked: no final/ folder, no token, or the hub refused."""


def final_folder(run: str | Path) -> Path:
    """The folder to push: ``run``'s final/ (or ``run`` itself when it is a final/ folder), with
    its model card."""
    path = Path(run)
    folder = path if path.name == "final" else path / "final"
    if not folder.is_dir():
        raise PushError(f"{folder} does not exist: push a run folder whose training has finished")
    if not (folder / "README.md").is_file():
        raise PushError(f"{folder} has no model card (README.md); a run writes it at the end of training")
    return folder


def push_run(run: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Create the model repository ``repo_id`` if needed (``private`` only applies to a new one)
    and upload final/ to it in one commit; returns the repository's URL. The token is the one
    ``hf auth login`` stored, or HF_TOKEN. The model card's code loads the model from the local
    folder it was written in; the pushed card loads it from ``repo_id`` instead."""
    folder = final_folder(run)
    token = huggingface_hub.get_token()
    if token is None:
        raise PushError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN")
    card = (folder / "README.md").read_text(encoding="utf-8")
    card = card.replace(repr(str(folder.resolve())), repr(repo_id))
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != "README.md")
    operations = [CommitOperationAdd(f.relative_to(folder).as_posix(), f) for f in files]
    operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    try:
        url = huggingface_hub.create_repo(
            repo_id, token=token, private=private, repo_type="model", exist_ok=True
        )
        huggingface_hub.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload {folder.resolve().parent.name} (trained with bayesalign)",
            repo_type="model",
            token=token,
        )
    except (OSError, HFValidationError) as err:  # HTTP errors, no network, a malformed id
        lines = str(err).strip().splitlines()
        raise PushError(
            f"pushing {folder} to {repo_id} failed: {lines[0] if lines else type(err).__name__}"
        ) from None
    return str(url)
