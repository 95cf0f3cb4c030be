"""The analysis layer: tables, the paper's reference numbers, figures and the report."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import reference
from analysis.figures import lmc_figure, read_csv_rows
from analysis.metrics import harmonic_mean
from analysis.report import STAND_IN_NOTE, record_artifacts, render
from analysis.tables import domain_table, render_latex, summarize_domains


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
    assert reference.table1("merged_pooled", "resnet101") == 56.3
    assert reference.table1("merged_encoder_only", "mit_b5") == 62.1
    assert reference.table1("merged_first_buffers", "resnet101") == pytest.approx(54.8)
    assert reference.table3("I+D") == 39.3
    assert reference.table3("X") is None


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


def test_interpolation_barrier_is_the_dip_below_the_chord():
    from analysis.metrics import interpolation_barrier

    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert interpolation_barrier(alphas, [10.0, 9.0, 8.0, 7.0, 6.0]) == 0.0  # on the chord
    assert interpolation_barrier(alphas, [10.0, 9.0, 1.0, 7.0, 6.0]) == pytest.approx(7.0)
    assert interpolation_barrier(alphas, [10.0, 12.0, 12.0, 12.0, 6.0]) == 0.0  # above it
    with pytest.raises(ValueError, match="alphas must increase"):
        interpolation_barrier([1.0, 0.0], [1.0, 2.0])


def test_table4_reference_maps_norm_family_to_the_papers_backbone():
    assert reference.table4("bn_pooled") == 56.3
    assert reference.table4("ln_pooled") == 60.8
    assert reference.table4("ln_midpoint") == pytest.approx(60.2)
    assert reference.table4("bn_idd") == 52.1
    assert reference.table4("gn_pooled") is None


def test_report_takes_the_stand_in_flag_from_artifact_lists_never_from_file_contents(tmp_path):
    (tmp_path / "tta").mkdir()
    (tmp_path / "tta" / "curve.pdf").write_bytes(b"%PDF")
    record_artifacts(tmp_path, "tta", [{"title": "TTA", "files": [str(tmp_path / "tta" / "curve.pdf")],
                                         "stand_in": True}])
    (tmp_path / "classification").mkdir()
    (tmp_path / "classification" / "summary.md").write_text(f"> {STAND_IN_NOTE}\n")  # says so, but no list
    text = render(tmp_path)
    assert "- **TTA** (stand-in (miniature)): [pdf](tta/curve.pdf)" in text
    assert "## classification (no artifacts.json: origin of the data not recorded)" in text
    assert "[summary.md](classification/summary.md)" in text


def test_reference_columns_and_lmc_curve_come_from_the_csv_files():
    columns = reference.columns("table1", ["merged_pooled", "nothing"])
    assert columns == {"paper H (R101)": {"merged_pooled": 56.3, "nothing": None},
                       "paper H (MiT-B5)": {"merged_pooled": 60.8, "nothing": None}}
    curve = reference.lmc_curve("gta2idd_to_gta2cityscapes")
    assert len(curve) == 11 and curve[0] == 52.1 and curve[-1] == 40.2
    assert reference.columns(None, ["a"]) == {}
    with pytest.raises(ValueError, match="unknown paper reference 'table9'"):
        reference.columns("table9", ["a"])
    with pytest.raises(KeyError, match="no curve 'x'"):
        reference.lmc_curve("x")
