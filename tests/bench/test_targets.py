"""rrjax.bench.targets: PASS / FAIL / NOT RUN / n/a from hand-made measurements."""

import pytest

from rrjax.bench.config import BenchConfig
from rrjax.bench.targets import check_targets


def _row(attack, contender, t, equivalent=True):
    return dict(attack=attack, contender=contender, median_s=t, equivalent=equivalent)


def _report(fgsm=(1.0, 9.0), pgd=(10.0, 25.0), equivalent=True, scale=None, flops=1e9, peak=100.0):
    main = []
    for attack, times in (("fgsm", fgsm), ("pgd", pgd)):
        if times:
            main += [_row(attack, "rrjax-grid", times[0], equivalent), _row(attack, "torchattacks", times[1])]
    return dict(main=main, scale_e=scale or [], flops_per_step=flops, peak={"peak": peak})


def test_meso4_needs_twice_torchattacks_speed_for_pgd():
    cfg = BenchConfig(model="meso4", eps_count=16, pgd_steps=10, n=64)
    rows = check_targets(_report(fgsm=(1.0, 9.0), pgd=(10.0, 25.0)), cfg)
    assert rows[0] == ["FGSM over 16 ε ≥ 8× faster than torchattacks", "9.00×", "PASS"]
    assert rows[1] == ["PGD-10 over 16 ε, meso4, N=64: ≥ 2× faster than torchattacks", "2.50×", "PASS"]
    rows = check_targets(_report(fgsm=(1.0, 7.9), pgd=(10.0, 15.0)), cfg)
    assert [r[2] for r in rows] == ["FAIL", "FAIL", "NOT RUN"]  # 7.9× < 8×, 1.5× < 2×; no scaling table


def test_other_image_detectors_need_only_to_be_faster():
    rows = check_targets(_report(pgd=(10.0, 11.0)), BenchConfig(model="efficientnet_b4"))
    assert rows[1][0].endswith(": faster than torchattacks") and rows[1][2] == "PASS"
    assert check_targets(_report(pgd=(10.0, 9.0)), BenchConfig(model="meso_inception4"))[1][2] == "FAIL"


def test_xception_step_share_of_the_matmul_peak():
    # PGD grid: 64 x 16 x 10 steps of 1 GFLOP in 200 s = 51.2 GFLOP/s = 51.2 % of a 100 GFLOP/s peak.
    cfg = BenchConfig(model="xception", n=64, eps_count=16, pgd_steps=10)
    rows = check_targets(_report(pgd=(200.0, 300.0)), cfg)
    share = rows[2]
    assert share[0].startswith("rrjax xception attack step") and share[1].startswith("51.2%") and share[2] == "PASS"
    assert check_targets(_report(pgd=(300.0, 400.0)), cfg)[2][2] == "FAIL"  # 34.1 %


def test_a_speedup_without_equivalence_fails_and_missing_sections_say_not_run():
    rows = check_targets(_report(fgsm=(1.0, 100.0), equivalent=False), BenchConfig(model="meso4"))
    assert rows[0][2] == "FAIL" and "RA not equivalent" in rows[0][1]
    rows = check_targets(_report(pgd=None), BenchConfig(model="xception"))
    assert [r[2] for r in rows] == ["PASS", "NOT RUN", "NOT RUN", "NOT RUN"]


def test_video_and_rrjax_only_detectors():
    video = check_targets(_report(), BenchConfig(model="meso4_video"))
    assert [r[0].split(" ")[0] for r in video] == ["FGSM", "rrjax"]  # the PGD targets are for image detectors
    i3d = check_targets(_report(), BenchConfig(model="i3d"))
    assert i3d[0] == ["FGSM over 16 ε ≥ 8× faster than torchattacks", "n/a: i3d is rrjax-only (no PyTorch twin)", "n/a"]


@pytest.mark.parametrize("t64, result", [(4.0, "PASS"), (4.5, "FAIL")])
def test_scaling_in_e(t64, result):
    scale = [dict(attack="pgd", contender="rrjax-grid", E=e, median_s=t) for e, t in ((1, 0.3), (16, 1.0), (64, t64))]
    rows = check_targets(_report(scale=scale), BenchConfig(model="meso4"))
    assert rows[-1] == ["rrjax PGD time(E=64) / time(E=16) ≤ 4.4", f"{t64:.2f}", result]
