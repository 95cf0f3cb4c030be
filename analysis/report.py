"""The results report: one Markdown page linking every table and figure.

Each experiment (every study, the TTA and the classification experiments) writes
``results/<name>/artifacts.json``: a list of artifacts (table or figure files), whether
they come from the miniature stand-in (decided by the experiment from its data's own
manifest, never from file contents here), and the run folders behind them. The report
only reads those files, so it can be rebuilt at any time with ``python -m analysis.report``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from analysis.io import read_json, write_json_atomic, write_text_atomic

# The one sentence every output derived from the miniature carries.
STAND_IN_NOTE = (
    "Results on the miniature benchmark: a procedurally generated stand-in for the "
    "paper's datasets. Not comparable with the paper's numbers."
)


def record_artifacts(results_dir: str | Path, study: str, artifacts: list[dict]) -> Path:
    """Write the artifact list of one study (replacing the previous one)."""
    path = Path(results_dir) / study / "artifacts.json"
    write_json_atomic(path, {"study": study, "artifacts": artifacts})
    return path


def collect(results_dir: str | Path) -> list[dict]:
    return [read_json(path) for path in sorted(Path(results_dir).glob("*/artifacts.json"))]


def render(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    studies = collect(results_dir)
    lines = ["# Results", ""]
    if any(a.get("stand_in") for s in studies for a in s["artifacts"]):
        lines += [f"> **Stand-in.** {STAND_IN_NOTE} Artifacts marked *stand-in* below come "
                  "from it; the paper's numbers appear only in separate reference columns.", ""]
    if not studies:
        lines.append("No study has written results yet (run `make reproduce-table1`).")
    for study in studies:
        lines += [f"## {study['study']}", ""]
        for artifact in study["artifacts"]:
            files = ", ".join(f"[{Path(f).suffix.lstrip('.')}]({os.path.relpath(f, results_dir)})"
                              for f in artifact["files"])
            origin = "stand-in (miniature)" if artifact.get("stand_in") else "real data"
            lines.append(f"- **{artifact['title']}** ({origin}): {files}")
            if artifact.get("summary"):
                lines.append(f"  - {artifact['summary']}")
            runs = artifact.get("runs", [])
            if runs:
                shown = ", ".join(f"`{r}`" for r in runs[:12])
                more = f" and {len(runs) - 12} more" if len(runs) > 12 else ""
                lines.append(f"  - runs: {shown}{more}")
        lines.append("")
        table = results_dir / study["study"] / f"{study['study']}.md"
        if table.exists():
            lines += [table.read_text(), ""]
    lines += _unlisted(results_dir, {s["study"] for s in studies})
    return "\n".join(lines)


def _unlisted(results_dir: Path, studies: set[str]) -> list[str]:
    """Result folders without an artifact list (written by hand or by an older version)."""
    lines = []
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name not in studies):
        files = sorted(f for f in folder.iterdir() if f.suffix in (".md", ".tex", ".csv", ".pdf"))
        if files:
            links = ", ".join(f"[{f.name}]({os.path.relpath(f, results_dir)})" for f in files)
            lines += [f"## {folder.name} (no artifacts.json: origin of the data not recorded)", "", links, ""]
    return lines


def write_report(results_dir: str | Path) -> Path:
    out = Path(results_dir) / "README.md"
    write_text_atomic(out, render(results_dir))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    print(write_report(args.results))


if __name__ == "__main__":
    main()
