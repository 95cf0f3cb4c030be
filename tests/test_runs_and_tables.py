"""Run folders, atomic writes, and the table/figure/report writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.figures import lmc_figure, read_csv_rows
from analysis.metrics import harmonic_mean
from analysis.report import record_artifacts, render
from analysis.tables import (domain_table, paper_table1_harmonic_mean, paper_table3_harmonic_mean,
                             render_latex, summarize_domains)
from experiments.runs import (STAND_IN_NOTE, finish_run, is_complete, read_manifest, sha256_file,
                              start_run, write_text_atomic)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.md"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        from experiments.runs import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_manifest_records_inputs_outputs_with_sha256_and_completion(tmp_path):
    member = tmp_path / "member.bin"
    member.write_bytes(b"weights")
    run = tmp_path / "run"
    start_run(run, "merge", {"a": 1}, {"member0": member})
    assert not is_complete(run)
    out = run / "merged.bin"
    out.write_bytes(b"merged")
    finish_run(run, {"merged": out}, metrics={"miou": 1.0})
    manifest = read_manifest(run)
    assert is_complete(run) and manifest["stage"] == "merge" and manifest["note"] == STAND_IN_NOTE
    assert manifest["inputs"]["member0"]["sha256"] == sha256_file(member)
    assert manifest["outputs"]["merged"] == {"path": "merged.bin", "sha256": sha256_file(out)}
    assert json.loads((run / "metrics.json").read_text()) == {"miou": 1.0}
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt manifest .*manifest.json"):
        read_manifest(run)


def _records():
    values = {("a", 0): (40.0, 20.0), ("a", 1): (50.0, 30.0), ("b", 0): (30.0, 30.0)}
    return [{"method": m, "seed": s, "domain": d, "miou": v[i]}
            for (m, s), v in values.items() for i, d in enumerate(("cityscapes", "idd"))]


def test_h_is_averaged_per_seed_and_missing_domains_are_refused():
    table = summarize_domains(_records(), ["cityscapes", "idd"])
    expected = [harmonic_mean([40, 20]), harmonic_mean([50, 30])]
    assert table["a"]["H"].mean == pytest.approx(np.mean(expected))
    assert table["a"]["H"].std == pytest.approx(np.std(expected, ddof=1))
    assert table["b"]["cityscapes"].format() == "30.0"
    with pytest.raises(ValueError, match="'a' seed 0 has no result for domains \\['acdc'\\]"):
        summarize_domains(_records(), ["cityscapes", "idd", "acdc"])


def test_table_files_keep_measured_and_published_numbers_apart(tmp_path):
    table = summarize_domains(_records(), ["cityscapes", "idd"])
    reference = {"paper H (R101)": {"a": 56.3, "b": None}}
    paths = domain_table(table, ["cityscapes", "idd"], {"a": "Merged_x"}, tmp_path / "t1", "Table 1",
                         STAND_IN_NOTE, reference)
    assert sorted(p.suffix for p in paths) == [".csv", ".md", ".tex"]
    markdown = (tmp_path / "t1.md").read_text()
    assert STAND_IN_NOTE in markdown and "| Merged_x | 45.0 ± 7.1 | 25.0 ± 7.1 |" in markdown
    latex = (tmp_path / "t1.tex").read_text()
    assert r"\toprule" in latex and r"Merged\_x" in latex and r"$\pm$" in latex
    rows = read_csv_rows(tmp_path / "t1.csv")
    assert rows[0]["method"] == "a" and float(rows[0]["paper H (R101)"]) == 56.3 and rows[1]["paper H (R101)"] == ""
    assert render_latex(["x"], [["50%"]], "c", "") .count(r"50\%") == 1


def test_paper_reference_values_come_from_the_published_tables():
    assert paper_table1_harmonic_mean("merged_pooled", "resnet101") == 56.3
    assert paper_table1_harmonic_mean("merged_encoder_only", "mit_b5") == 62.1
    assert paper_table1_harmonic_mean("merged_first_buffers", "resnet101") == pytest.approx(54.8)
    assert paper_table3_harmonic_mean("I+D") == 39.3
    assert paper_table3_harmonic_mean("X") is None


def test_lmc_figure_writes_a_pdf_with_embedded_fonts_and_its_csv(tmp_path):
    rows = [{"alpha": a, "seed": s, "domain": d, "miou": 10 + a + s}
            for a in (0.0, 0.5, 1.0) for s in (0, 1) for d in ("cityscapes", "H")]
    pdf, csv_path = lmc_figure(rows, tmp_path / "lmc.pdf", "title", ("A", "B"), STAND_IN_NOTE, [1, 2, 3])
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and b"/FontFile2" in data  # TrueType embedded
    assert len(read_csv_rows(csv_path)) == len(rows)


def test_report_links_every_artifact_and_flags_the_stand_in(tmp_path):
    (tmp_path / "table1").mkdir()
    (tmp_path / "table1" / "table1.md").write_text("TABLE")
    record_artifacts(tmp_path, "table1", [{"title": "Table 1", "files": [str(tmp_path / "table1" / "table1.md")],
                                            "stand_in": True, "runs": ["runs/train/x"]}])
    text = render(tmp_path)
    assert "[md](table1/table1.md)" in text and "stand-in (miniature)" in text and "`runs/train/x`" in text
    assert STAND_IN_NOTE in text and "TABLE" in text


def test_a_study_is_logged_to_wandb_offline_with_its_records_and_files(tmp_path, monkeypatch):
    from experiments.logging_utils import log_study

    monkeypatch.setenv("WANDB_MODE", "offline")
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    log_study("table1", {"seeds": [0]}, _records(), [table], "auto", group="sweep", directory=tmp_path / "w")
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    log_study("table1", {}, _records(), [table], "none", directory=tmp_path / "off")
    assert not (tmp_path / "off").exists()


def test_interpolation_barrier_is_the_dip_below_the_chord():
    from analysis.metrics import interpolation_barrier

    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert interpolation_barrier(alphas, [10.0, 9.0, 8.0, 7.0, 6.0]) == 0.0  # on the chord
    assert interpolation_barrier(alphas, [10.0, 9.0, 1.0, 7.0, 6.0]) == pytest.approx(7.0)
    assert interpolation_barrier(alphas, [10.0, 12.0, 12.0, 12.0, 6.0]) == 0.0  # above it
    with pytest.raises(ValueError, match="alphas must increase"):
        interpolation_barrier([1.0, 0.0], [1.0, 2.0])


def test_table4_reference_maps_norm_family_to_the_papers_backbone():
    from analysis.tables import paper_table4_harmonic_mean

    assert paper_table4_harmonic_mean("bn_pooled") == 56.3
    assert paper_table4_harmonic_mean("ln_pooled") == 60.8
    assert paper_table4_harmonic_mean("ln_midpoint") == pytest.approx(60.2)
    assert paper_table4_harmonic_mean("bn_idd") == 52.1
    assert paper_table4_harmonic_mean("gn_pooled") is None


def test_report_also_links_results_of_other_entry_points(tmp_path):
    (tmp_path / "tta").mkdir()
    (tmp_path / "tta" / "README.md").write_text(f"> {STAND_IN_NOTE}\n")
    (tmp_path / "tta" / "curve.pdf").write_bytes(b"%PDF")
    (tmp_path / "classification").mkdir()
    (tmp_path / "classification" / "summary.md").write_text("real Fashion-MNIST")
    text = render(tmp_path)
    assert "## tta (stand-in (miniature))" in text and "[curve.pdf](tta/curve.pdf)" in text
    assert "## classification (see its README for the data used)" in text


def _claim_in_child(run_dir, hold_seconds=0.0):
    """Start a run in another process; returns (returncode, stderr)."""
    import subprocess
    import sys

    code = ("import sys, time; from experiments import runs\n"
            f"runs.start_run({str(run_dir)!r}, 'child')\n"
            "print('claimed', flush=True)\n"
            f"time.sleep({hold_seconds})\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_folder_is_held_by_one_process_at_a_time(tmp_path):
    import os

    from experiments import runs

    run_dir = tmp_path / "run"
    runs.start_run(run_dir, "parent")
    runs.claim(run_dir)  # re-entrant in the holder
    child = _claim_in_child(run_dir)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0
    assert "RunInUse" in err and f"pid {os.getpid()}" in err and str(run_dir.resolve()) in err
    assert runs.read_manifest(run_dir)["stage"] == "parent"  # the refused process wrote nothing
    runs.finish_run(run_dir)
    child = _claim_in_child(run_dir)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert runs.read_manifest(run_dir)["stage"] == "child"


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    from experiments import runs

    run_dir = tmp_path / "run"
    child = _claim_in_child(run_dir, hold_seconds=600)
    assert child.stdout.readline().strip() == "claimed"
    with pytest.raises(runs.RunInUse, match=f"pid {child.pid} on "):
        runs.claim(run_dir)
    child.kill()
    child.wait(timeout=60)
    child.stdout.close()
    child.stderr.close()
    with runs.claimed(run_dir):  # the operating system dropped the dead holder's lock
        assert runs.read_manifest(run_dir)["status"] == "running"  # its run stays resumable
    with pytest.raises(ZeroDivisionError):
        with runs.claimed(run_dir):
            1 / 0
    runs.claim(run_dir)  # released by the failed block
    runs.release(run_dir)
