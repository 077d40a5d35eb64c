"""rrjax.bench.render: Markdown tables from a report dict alone."""

from rrjax.bench.config import BenchConfig
from rrjax.bench.render import md_table, render


def test_md_table_formats_numbers():
    text = md_table(["a", "b", "c"], [[1.23456, 12345.6, None], ["x", 3, 0.5]])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.23 | 12,346 |  |", "| x | 3 | 0.5 |"]


def _report():
    env = dict(date="2026-01-01 00:00", command="cmd", machine="m", versions="v", load_start=1.0, load_end=1.5,
               xla_flags="")
    main = [dict(attack="fgsm", contender=c, median_s=t, load=1.0, ra=[1.0, 0.5], equivalent=True,
                 max_ra_diff_samples=0) for c, t in (("rrjax-grid", 0.5), ("torchattacks", 5.0))]
    layers = dict(labels=["XLA"], rows=[dict(kind="conv", name="conv2", count=3, shape=[8, 8, 4], batch=2, flops=2e6,
                                             xla_ms={"XLA": 1.0}, torch_ms=2.0, load=1.0)],
                  kinds=[dict(kind="conv", instances=3, flops=6e6, xla_ms={"XLA": 3.0}, torch_ms=6.0,
                              xla_gflops={"XLA": 2.0}, torch_gflops=1.0, xla_pct_peak={"XLA": 2.0}, torch_pct_peak=1.0)])
    return dict(env=env, peak={"jax": 90.0, "torch": 100.0, "peak": 100.0}, flops_per_step=1e6, offset=32.0,
                eps_max=0.01, eps_max_source="--eps_max", main=main, layers=layers,
                targets=[["t", "m", "PASS"]])


def test_render_has_the_measured_sections_only():
    text = render(_report(), BenchConfig(n=4, eps_count=2))
    assert text.startswith("### Run 2026-01-01 00:00 — cmd")
    # 4 samples x 2 ε / 0.5 s = 16 samples·ε/s; executed FGSM grid passes: 4 (one gradient for the grid).
    assert "| fgsm | rrjax-grid | 0.5 | 16 | 8 | 10 | 0.008 | 0.008 | 1.0 | PASS |" in text
    assert "| conv | 3 | 3 | 6 | 2 | 1 | 2 | 1 |" in text
    assert "| target | measured | result |" in text and "| t | m | PASS |" in text
    assert "Scaling in E" not in text and "Peak memory" not in text
