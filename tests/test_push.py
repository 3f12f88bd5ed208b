"""``bayesalign push RUN REPO_ID``: final/ with its model card goes to the hub through
huggingface_hub's create_repo and upload_folder, which are monkeypatched here (no network);
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

    def upload_folder(**kwargs):
        folder = Path(kwargs["folder_path"])
        calls.append(("upload_folder", kwargs | {"files": sorted(p.name for p in folder.iterdir())}))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    return calls


def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "model.safetensors").write_bytes(b"weights")
    (run / "final" / "README.md").write_text(
        "---\nlibrary_name: transformers\n---\n# Aligned with bayesalign\n"
    )
    return run


@pytest.mark.parametrize(("given", "private"), [("run", False), ("run/final", True)])
def test_push_uploads_final_with_its_card(tmp_path, hub, capsys, given, private):
    run = finished_run(tmp_path)
    argv = ["push", str(tmp_path / given), "me/aligned", *(["--private"] if private else [])]
    assert main(argv) == 0
    (create, made), (upload, sent) = hub
    assert create == "create_repo" and upload == "upload_folder"
    assert made == {
        "repo_id": "me/aligned",
        "token": "hf_test",
        "private": private,
        "repo_type": "model",
        "exist_ok": True,
    }
    assert Path(sent["folder_path"]) == run / "final"
    assert sent["repo_id"] == "me/aligned" and sent["repo_type"] == "model" and sent["token"] == "hf_test"
    assert "README.md" in sent["files"] and "model.safetensors" in sent["files"]
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
