"""dustpred.benchmarks: Snakemake benchmark files summarised per rule."""

from __future__ import annotations

import pytest

from dustpred import benchmarks
from dustpred.errors import InputError

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path, wall, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_jobs_are_grouped_by_their_rule_folder_and_summed(tmp_path):
    write(tmp_path / "predict" / "baseline" / "seed0" / "train.tsv", 10.0, 300.0, 15.0)
    write(tmp_path / "predict" / "baseline" / "seed0" / "test.tsv", 2.5, 800.0, 3.0)
    write(tmp_path / "train_unet" / "baseline" / "seed0.tsv", 100.0, 4000.0, 190.0)
    write(tmp_path / "simulate_sky.tsv", 5.0, 600.0, 20.0)
    rows = benchmarks.per_rule(benchmarks.read_all(tmp_path))
    assert [r["rule"] for r in rows] == ["train_unet", "predict", "simulate_sky"]
    predict = rows[1]
    assert rows[2]["jobs"] == 1
    assert predict["jobs"] == 2
    assert predict["wall_s_sum"] == pytest.approx(12.5)
    assert predict["wall_s_max"] == pytest.approx(10.0)
    assert predict["max_rss_mb"] == pytest.approx(800.0)
    assert predict["cpu_s_sum"] == pytest.approx(18.0)
    assert "train_unet" in benchmarks.format_table(rows)


def test_unmeasured_values_read_as_nan(tmp_path):
    write(tmp_path / "summary" / "all.tsv", 1.0, "-", "-")
    (job,) = benchmarks.read_all(tmp_path)
    assert job.wall_s == 1.0 and job.max_rss_mb != job.max_rss_mb


def test_a_file_that_is_not_a_benchmark_is_refused_by_name(tmp_path):
    bad = tmp_path / "fit_linear" / "baseline.tsv"
    bad.parent.mkdir()
    bad.write_text("hello\tworld\n1\t2\n")
    with pytest.raises(InputError, match="baseline.tsv.*expected a Snakemake benchmark"):
        benchmarks.read_all(tmp_path)


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="no \\*.tsv files"):
        benchmarks.read_all(tmp_path)


def test_command_line_prints_the_table_and_writes_csv(tmp_path, capsys):
    write(tmp_path / "b" / "evaluate" / "x.tsv", 4.0, 100.0, 4.0)
    benchmarks.main([str(tmp_path / "b"), "--csv", str(tmp_path / "t.csv")])
    assert "evaluate" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == ",".join(benchmarks.COLUMNS)
