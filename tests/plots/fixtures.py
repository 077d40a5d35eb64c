"""Synthetic sweep directories whose every record is computed by hand from per-sample arrays."""

from __future__ import annotations

import numpy as np

from rrjax import records as R

MODELS = ("xception", "meso4")  # deliberately not sorted: colours must follow sorted names
ATTACKS = {"fgsm": {}, "pgd": {"steps": 10, "step_size": 0.01}}
# float32-rounded, as a sweep stores an ε grid it computed in float32
EPS = tuple(float(np.float32(e)) for e in (0.0, 8 / 255, 0.1, 0.2))
TOLS = (0.0, 0.05, 0.25, 0.5, 1.0)
N = 40


def samples(model, attack, eps):
    """Per-sample arrays whose shift grows with ε; distinct per (model, attack)."""
    seed = MODELS.index(model) * 10 + list(ATTACKS).index(attack)
    rng = np.random.default_rng(seed)
    scale = 0.3 if model == "xception" else 0.9
    shift = np.clip(rng.uniform(0, 1, N) * eps * scale * 5, 0, 1)
    y = (np.arange(N) % 2).astype(np.int32)
    correct = rng.uniform(0, 1, N) > eps * (2 if model == "meso4" else 1) * 2
    p_clean = np.where(y == 1, 0.8, 0.2)
    return {"index": np.arange(N), "y": y, "correct": correct, "shift": shift, "p_fake_clean": p_clean,
            "p_fake_adv": np.clip(p_clean + np.where(y == 1, -shift, shift), 0, 1), "same_label": shift < 0.3}


def row(cell, model, dataset, attack, eps, tol, s):
    """A record row computed by hand from the per-sample arrays (CIs: ±0.1, clipped)."""
    ra, rr = float(s["correct"].mean()), float((s["shift"] <= tol).mean())
    return dict(model=model, checkpoint=f"ck/{model}", checkpoint_sha256="0" * 64, dataset=dataset, split="test",
                attack=attack, attack_params=ATTACKS[attack], threat_norm="linf", eps=eps, tolerance=tol, n=N,
                n_correct=int(s["correct"].sum()), ra=ra, ra_lo=max(ra - 0.1, 0.0), ra_hi=min(ra + 0.1, 1.0),
                n_robust=int((s["shift"] <= tol).sum()), rr=rr, rr_lo=max(rr - 0.1, 0.0), rr_hi=min(rr + 0.1, 1.0),
                clean_accuracy=0.9, shift_norm="linf", strict=False, ci_method="wilson", seed=0, health="",
                cell=cell)


def make_sweep(out, datasets=("synth",), models=MODELS, attacks=tuple(ATTACKS), eps_grid=EPS):
    for dataset in datasets:
        for model in models:
            for attack in attacks:
                for eps in eps_grid:
                    cell = R.cell_id({"m": model, "d": dataset, "a": attack, "e": eps})
                    s = samples(model, attack, eps)
                    rows = [row(cell, model, dataset, attack, eps, t, s) for t in TOLS]
                    R.write_cell(out, cell, {"model": model}, s, rows)
    R.rebuild_tables(out)
    return out


def artist(fig, gid):
    """The one artist of ``fig`` with this gid."""
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, (gid, len(found))
    return found[0]


def want(rows, model, attack, eps, field, over):
    """``field`` of the rows of (model, attack, eps), ordered by ``over``."""
    sel = [r for r in rows if r["model"] == model and r["attack"] == attack and abs(r["eps"] - eps) < 1e-9]
    return [r[field] for r in sorted(sel, key=lambda r: r[over])]


def copy_table(sweep):
    """A copy of the sweep's records.csv alone (no cells/ next to it); returns its path."""
    other = sweep.parent / (sweep.name + "_table_only")
    other.mkdir(exist_ok=True)
    (other / "records.csv").write_bytes((sweep / "records.csv").read_bytes())
    return other / "records.csv"
