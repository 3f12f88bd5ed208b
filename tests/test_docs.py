"""The documentation site (mkdocs + mkdocstrings API reference from the docstrings) builds with
--strict: a broken link, a page missing from the nav or a module that no longer imports fails.
(Not --quiet: mkdocs counts warnings only when it logs them.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_docs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "api" / "objectives" / "index.html").read_text()
    assert "KLController" in page and "GDCPlusPlus" in page  # the API reference came from the code
