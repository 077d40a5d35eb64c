"""Sweep specifications: grid and attack parsing, validation at parse time."""

from __future__ import annotations


import numpy as np
import pytest

from rrjax import sweep as S

def test_parse_grid_and_attacks():
    np.testing.assert_allclose(S.parse_grid("0:0.2:5", name="eps"), [0, 0.05, 0.1, 0.15, 0.2])
    np.testing.assert_allclose(S.parse_grid("0, 0.1,0.3", name="eps"), [0, 0.1, 0.3])
    for bad, msg in [("0:0.2", "malformed"), ("a,b", "malformed"), ("0:1:x", "malformed"), ("-1,2", "-1 < 0"),
                     ("0,nan", "NaN or inf"), ("", "is empty")]:
        with pytest.raises(ValueError, match=msg):
            S.parse_grid(bad, name="eps")
    specs = S.parse_attacks("fgsm, pgd(steps=7,norm=l2,random_start=false), cw_l2(steps=20)")
    assert [a.name for a in specs] == ["fgsm", "pgd", "cw_l2"]
    assert specs[1].kwargs["steps"] == 7 and specs[1].kwargs["random_start"] is False
    assert specs[1].threat_norm == "l2" and specs[2].threat_norm == "l2" and specs[0].threat_norm == "linf"
    # unroll is an execution choice: the default stays out of the configuration (cell ids of
    # earlier sweeps stay valid); unroll=true is recorded.
    assert all("unroll" not in a.kwargs for a in specs)
    fast = S.parse_attacks("pgd(steps=3,unroll=true),cw_bounded(unroll=true),cw_l2(abort_early=false,unroll=true)")
    assert all(a.kwargs["unroll"] is True for a in fast)
    # What --unroll=auto asks for: short loops of attacks that can unroll, unless set explicitly.
    auto = S.parse_attacks("fgsm,pgd(steps=10),pgd(steps=60),pgd(steps=5,unroll=false),pgd(steps=10,restarts=6),"
                           "cw_l2,cw_l2(abort_early=false,steps=5,binary_search_steps=2),cw_bounded(steps=50)",
                           unroll_max_steps=50)
    assert [a.kwargs.get("unroll", False) for a in auto] == [False, True, False, False, False, False, True, True]
    for bad, msg in [("deepfool", "unknown attack 'deepfool'"), ("pgd(stepz=3)", "no hyperparameter"),
                     ("pgd(steps)", "is not k=v"), ("pgd((", "malformed"), ("fgsm,fgsm", "twice"),
                     ("pgd(target=1)", "per-sample data"), ("pgd(unroll=2)", "unroll must be True or False"),
                     ("cw_l2(unroll=true)", "abort_early=False")]:
        with pytest.raises(ValueError, match=msg):
            S.parse_attacks(bad)


