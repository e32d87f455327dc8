"""The Getting started page's code blocks run as written, in order, in a fresh folder (on the generated city);
blocks that say `# not run by the tests: why` are skipped, and the reason is shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PAGE = REPO / "docs" / "getting-started.md"
SKIP = "# not run by the tests:"


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(bash|python)\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def test_every_block_is_bash_or_python_and_some_run():
    blocks = code_blocks(PAGE)
    assert len(blocks) >= 4 and sum(not code.startswith(SKIP) for _, code in blocks) >= 3
    assert PAGE.read_text().count("```") == 2 * len(blocks), "a fenced block of another language would not be run"


@pytest.mark.slow  # 57 s on 2 cores with the OpenVINO trial of --backend auto; mkdocs build --strict still runs in every step
def test_getting_started_blocks_run_in_order(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    skipped = []
    for language, code in code_blocks(PAGE):
        if code.startswith(SKIP):
            skipped.append(code.splitlines()[0].removeprefix(SKIP).strip())
            continue
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"this block of {PAGE.name} failed:\n{code}\n{result.stderr[-3000:]}"
    assert (tmp_path / "outputs" / "first" / "drive_overlay.mp4").is_file()
    assert (tmp_path / "runs" / "first" / "best.pt").is_file()
    if skipped:
        print("not run:", *skipped, sep="\n  ")


@pytest.mark.parametrize("page", sorted((REPO / "docs").rglob("*.md")), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files(page):
    """mkdocs --strict checks this too when it runs; this catches a broken link without the docs extra."""
    for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).resolve().is_file(), f"{page.name}: link to {target} leads nowhere"
