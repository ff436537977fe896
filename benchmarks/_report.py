"""What several benchmark scripts share: the commit of a checkout, and writing a report's two files."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path


def commit_of(checkout: Path) -> str:
    """The short commit id of a git checkout, or "unknown" outside git."""
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def save_report(output_dir: str | Path, name: str, report: dict, markdown: str, *, suffix: str = "") -> None:
    """Write `<name>.json` (the report) and `<name>.md` (its Markdown) into `output_dir`, creating it.

    A `suffix` (a benchmark's `--suffix`) makes the name `<name>_<suffix>`.
    """
    name = f"{name}_{suffix}" if suffix else name
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (output / f"{name}.md").write_text(markdown, encoding="utf-8")
