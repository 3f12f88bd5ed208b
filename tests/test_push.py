"""``bayesalign push RUN REPO_ID``: final/ with its model card goes to the hub through
huggingface_hub's create_repo and create_commit, which are monkeypatched here (no network); the
pushed card loads the model from the repository, not from the local folder;
a run without final/ or a user without a token is one error line, exit status 2."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest

from bayesalign.cli import main


@pytest.fixture
def hub(monkeypatch) -> list[tuple[str, dict]]:
    """The calls made to the hub, with a token present."""
    calls: list[tuple[str, dict]] = []

    def create_repo(repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(repo_id, operations, **kwargs):
        contents = {}
        for op in operations:
            data = op.path_or_fileobj
            contents[op.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
        calls.append(("create_commit", {"repo_id": repo_id, **kwargs, "files": contents}))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "create_commit", create_commit)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    return calls


def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "model.safetensors").write_bytes(b"weights")
    local = repr(str((run / "final").resolve()))
    (run / "final" / "README.md").write_text(
        f"---\nlibrary_name: transformers\n---\n# Aligned with bayesalign\n\npath = {local}\n"
    )
    return run


@pytest.mark.parametrize(("given", "private"), [("run", False), ("run/final", True)])
def test_push_uploads_final_with_its_card(tmp_path, hub, capsys, given, private):
    run = finished_run(tmp_path)
    argv = ["push", str(tmp_path / given), "me/aligned", *(["--private"] if private else [])]
    assert main(argv) == 0
    (create, made), (upload, sent) = hub
    assert create == "create_repo" and upload == "create_commit"
    assert made == {
        "repo_id": "me/aligned",
        "token": "hf_test",
        "private": private,
        "repo_type": "model",
        "exist_ok": True,
    }
    assert sent["repo_id"] == "me/aligned" and sent["repo_type"] == "model" and sent["token"] == "hf_test"
    assert sent["files"]["model.safetensors"] == b"weights"
    card = sent["files"]["README.md"].decode()
    assert "path = 'me/aligned'" in card and str(run) not in card  # loads from the hub, not a local path
    assert "https://huggingface.co/me/aligned" in " ".join(capsys.readouterr().err.split())


def test_a_run_without_final_or_a_user_without_token_is_one_error_line(tmp_path, hub, capsys, monkeypatch):
    (tmp_path / "unfinished").mkdir()
    assert main(["push", str(tmp_path / "unfinished"), "me/aligned"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        err.startswith(f"error: {tmp_path / 'unfinished' / 'final'} does not exist")
        and "Traceback" not in err
    )
    run = finished_run(tmp_path)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", str(run), "me/aligned"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN")
    assert hub == []  # nothing was sent


def test_a_hub_that_cannot_be_reached_is_one_error_line(tmp_path, hub, capsys, monkeypatch):
    def refuse(repo_id, **kwargs):  # what hub errors are: OSErrors (HTTP ones too), several lines
        raise ConnectionError("cannot reach huggingface.co: network is unreachable\nmore")

    monkeypatch.setattr(huggingface_hub, "create_repo", refuse)
    assert main(["push", str(finished_run(tmp_path)), "them/aligned"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "to them/aligned failed: cannot reach huggingface.co: network is unreachable" in err
    assert "more" not in err
