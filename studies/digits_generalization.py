"""Fig. 1 of the paper on the bundled digits: does the test error fall as w2 / w1 grows at fixed w1 w2?

    python studies/digits_generalization.py --quick --out digits_out     # ~1.5 minutes on one core
    python studies/digits_generalization.py --out digits_out             # the full sweep (~20 minutes)
    python studies/digits_generalization.py --teacher classes ...        # true digit classes, no teacher

The paper (Section 6, App. G) trains a teacher on MNIST, relabels train and test images by it, and
trains GeLU students (d1 = 1000, MSE on one-hot labels, SGD) from W0 ~ N(0, w1^2), V0 ~ N(0, w2^2)
with w1 w2 fixed at He's value, for ten ratios w2 / w1; Fig. 1: every student fits the training set,
and the test error falls as w2 / w1 grows. Here, with the engine's own pieces only:

- data: ``make_data("digits", 64, n_train + n_test, seed)`` (centred, unit-norm 8x8 digits, a fixed
  permutation; its prefix property makes the first n_train columns the training set and the next
  n_test the held-out set);
- teacher (``--teacher``): ``trained`` (default, as in App. G): a GeLU net of width ``--teacher-width``
  from He-like weights trained by ``rmt_engine.montecarlo.train.gradient_descent`` on ALL the digits against
  one-hot true classes; the labels are then its argmax, so a student of the same family can fit them
  exactly. ``random``: the argmax of a random GeLU net (W ~ N(0, 1), V ~ N(0, 1/width)).
  ``classes``: the true digit classes (no teacher: perfect generalization need not be possible);
- students: GeLU, d1 = ``--width``, d2 = 10, the weights ``initial_weights(TrialSpec(...), seed)`` of
  the engine at w1 = sqrt(P / r), w2 = sqrt(P r) for each ratio r = w2 / w1, with the He-like product
  P = w1 w2 = 2 / sqrt(d0 d1) (He's sqrt(2/d0) sqrt(2/d1), as App. G fixes it); 0/1 one-hot targets as in
  App. G (not scaled to ||Y||_F = 1: the initial outputs, ~ 1/sqrt(d0) at this product, would then dwarf
  targets of 1/sqrt(n), and GD would spend itself cancelling a random function that stays on the test
  points); full-batch GD (``gradient_descent``) with the Eq. 13 step of each
  initialization (``bounds.lemma3`` / ``bounds.eq13_step`` from sigma_min, sigma_max of phi(W0 X)),
  times ``--lr-scale``;
- reported per ratio (mean and 95% t-interval over seeds): training error, test error (argmax of the
  student vs the teacher's label on the held-out digits), relative test MSE, ||W_K - W_0|| / ||W_0||,
  iterations, h_K / h_0 and the GD status; a table on stdout, ``digits_generalization.png`` and ``.json``
  in --out. A student that has not fitted its training set (training error > 0: large w2 / w1 is slow
  with the Eq. 13 step) is not comparable with one that has; the trend is also given among the ratios
  whose students all fitted it.

Differences from App. G (say them when quoting the numbers): digits instead of MNIST (1797 8x8
images); unit-norm inputs, so the He-like product is taken in the paper's (unnormalized) form;
full-batch GD with the Eq. 13 step instead of SGD with lr 0.01; far fewer points and a smaller width.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from rmt_engine import TrialSpec, make_data
from rmt_engine.theory import bounds
from rmt_engine.theory.activations import activation
from rmt_engine.sampling.data import DIGITS_D0, DIGITS_N
from rmt_engine.montecarlo.train import STATUS_NAMES, TrainSpec, gradient_descent, initial_weights

ACT = "gelu"
CLASSES = 10


def he_product(d0: int, d1: int) -> float:
    """App. G's fixed product: He's ``sqrt(2 / d0) * sqrt(2 / d1) = 2 / sqrt(d0 d1)``."""
    return 2.0 / math.sqrt(d0 * d1)


def scales(ratio: float, product: float) -> tuple[float, float]:
    """``(w1, w2)`` with ``w1 w2 = product`` and ``w2 / w1 = ratio``."""
    return math.sqrt(product / ratio), math.sqrt(product * ratio)


def one_hot(labels, classes=CLASSES, *, unit_norm=True) -> np.ndarray:
    """``classes x n`` one-hot matrix; ``unit_norm``: scaled to ||Y||_F = 1 (Eq. 16), else entries 0/1."""
    labels = np.asarray(labels, dtype=np.int64)
    Y = np.zeros((classes, labels.size))
    Y[labels, np.arange(labels.size)] = 1.0
    return Y / math.sqrt(labels.size) if unit_norm else Y


def forward(X, W, V, act=ACT) -> np.ndarray:
    """``V phi(W X)`` (d2 x n)."""
    return V @ activation(act).phi(W @ X)


def predict(X, W, V, act=ACT) -> np.ndarray:
    return np.argmax(forward(X, W, V, act), axis=0)


def eq13_lr(X, Y, W0, V0, act=ACT) -> float:
    """Eq. 13's step at (W0, V0): mu, nu, beta of Eq. 18 (``bounds.lemma3``, chi_max = sigma_max(V0))
    from the extreme singular values of phi(W0 X), h0 = ||V0 phi(W0 X) - Y||_F^2."""
    a = activation(act)
    F = a.phi(W0 @ X)
    s = np.linalg.svd(F, compute_uv=False)
    smin_F = float(s[-1]) if F.shape[0] >= F.shape[1] else 0.0
    smax_X = float(np.linalg.norm(X, 2))
    smax_V = float(np.linalg.norm(V0, 2))
    mu, nu, beta = bounds.lemma3(smin_F, float(s[0]), smax_X, smax_V, a.dphi_max, a.ddphi_max, smax_V)
    h0 = float(np.sum((V0 @ F - Y) ** 2))
    return bounds.eq13_step(mu, nu, beta, h0)


def true_classes(X) -> np.ndarray:
    """The digit class of every column of ``make_data("digits", ...)``, found by matching each column
    with the centred, normalized images of scikit-learn's digits (dot product 1), so nothing of the
    engine's permutation is re-implemented here."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    d = load_digits()
    Z = np.asarray(d.data, dtype=np.float64)
    Z = Z - Z.mean(axis=0, keepdims=True)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    match = np.argmax(Z @ X, axis=0)
    if not np.allclose(np.sum(Z[match] * X.T, axis=1), 1.0, atol=1e-9):
        raise RuntimeError("could not match the digits columns with scikit-learn's images")
    return np.asarray(d.target, dtype=np.int64)[match]


def make_teacher(kind: str, X_all, *, width: int, seed: int, iters: int, log=print):
    """Labels (int array over the columns of ``X_all``) and a description dict of the teacher."""
    d0 = X_all.shape[0]
    if kind == "classes":
        y = true_classes(X_all)
        return y, {"kind": kind}
    # random: pre-activations N(0, 1), outputs O(1). trained: pre-activations of std sqrt(2) (He's
    # sqrt(2 / d0) on inputs of norm sqrt(d0)) and a small output layer, w1 w2 sqrt(d0 width) = 0.1 (Eq. 19),
    # so h(Theta0) ~ ||Y||^2 and GD fits the classes (measured: 97.7% of the digits at width 128 after
    # 800 steps; with V ~ N(0, 2 / width) the initial outputs dominate h0 and it reaches 15%).
    w1, w2 = (1.0, 1.0 / math.sqrt(width)) if kind == "random" else (math.sqrt(2.0), 0.1 / math.sqrt(2.0 * d0 * width))
    spec = TrialSpec(activation=ACT, n=X_all.shape[1], d0=d0, d1=width, d2=CLASSES, w1=w1, w2=w2,
                     data="digits", seed=seed)
    W, V = initial_weights(spec, 10_000 + seed)
    info = {"kind": kind, "width": width, "w1": spec.w1, "w2": spec.w2}
    if kind == "trained":
        y_true = true_classes(X_all)
        Y = one_hot(y_true)
        lr = eq13_lr(X_all, Y, W, V)
        t0 = time.perf_counter()
        res = gradient_descent(X_all, Y, W, V, ACT, lr, TrainSpec(max_iters=iters, tol=1e-6), ntk=False)
        W, V = res.W, res.V
        acc = float(np.mean(predict(X_all, W, V) == y_true))
        info.update(iterations=res.iterations, final_loss=res.final_loss, accuracy_on_classes=acc, lr=lr,
                    seconds=round(time.perf_counter() - t0, 1))
        log(f"teacher: GeLU width {width}, {res.iterations} GD steps, h_K/h_0 = {res.final_loss:.3g}, "
            f"agrees with the true classes on {acc:.1%} of the {X_all.shape[1]} digits")
    elif kind != "random":
        raise ValueError(f"unknown teacher {kind!r}: trained, random or classes")
    y = predict(X_all, W, V)
    info["class_counts"] = np.bincount(y, minlength=CLASSES).tolist()
    return y, info


def train_student(X_tr, y_tr, X_te, y_te, *, d1: int, ratio: float, product: float, seed: int,
                  data_seed: int, max_iters: int, tol: float, lr_scale: float) -> dict:
    """One student: the engine's (W0, V0) at w1 = sqrt(P / r), w2 = sqrt(P r), GD with the Eq. 13 step."""
    d0, n = X_tr.shape
    w1, w2 = scales(ratio, product)
    spec = TrialSpec(activation=ACT, n=n, d0=d0, d1=d1, d2=CLASSES, w1=w1, w2=w2, data="digits", seed=data_seed)
    W0, V0 = initial_weights(spec, seed)
    Y = one_hot(y_tr, unit_norm=False)  # 0/1 targets as in App. G: the initial outputs (~ 1/sqrt(d0)) stay below them
    lr = lr_scale * eq13_lr(X_tr, Y, W0, V0)
    res = gradient_descent(X_tr, Y, W0, V0, ACT, lr, TrainSpec(max_iters=max_iters, tol=tol), ntk=False)
    out_te = forward(X_te, res.W, res.V)
    T = one_hot(y_te, unit_norm=False)
    return {
        "ratio": ratio, "w1": w1, "w2": w2, "seed": seed, "lr": lr,
        "status": STATUS_NAMES[res.status], "iterations": res.iterations, "final_loss": res.final_loss,
        "train_error": float(np.mean(predict(X_tr, res.W, res.V) != y_tr)),
        "test_error": float(np.mean(np.argmax(out_te, axis=0) != y_te)),
        "test_rel_mse": float(np.sum((out_te - T) ** 2) / np.sum(T ** 2)),
        "rel_change_W": res.rel_change_W, "rel_change_V": res.rel_change_V, "seconds": res.seconds,
    }


def run(*, n_train: int, n_test: int, d1: int, ratios, seeds: int, teacher: str = "trained",
        teacher_width: int = 256, teacher_iters: int = 1500, data_seed: int = 0, max_iters: int = 3000,
        tol: float = 1e-3, lr_scale: float = 1.0, product: float | None = None, log=print) -> dict:
    """The whole experiment: returns ``{"config", "teacher", "results": [per student dicts]}``."""
    if n_train + n_test > DIGITS_N:
        raise ValueError(f"n_train + n_test must be <= {DIGITS_N}")
    X_all = make_data("digits", DIGITS_D0, n_train + n_test, data_seed)
    y_all, tinfo = make_teacher(teacher, X_all, width=teacher_width, seed=data_seed, iters=teacher_iters, log=log)
    X_tr, X_te = np.ascontiguousarray(X_all[:, :n_train]), np.ascontiguousarray(X_all[:, n_train:])
    y_tr, y_te = y_all[:n_train], y_all[n_train:]
    P = he_product(DIGITS_D0, d1) if product is None else float(product)
    results = []
    for r in ratios:
        for s in range(seeds):
            res = train_student(X_tr, y_tr, X_te, y_te, d1=d1, ratio=float(r), product=P, seed=s,
                                data_seed=data_seed, max_iters=max_iters, tol=tol, lr_scale=lr_scale)
            log(f"  w2/w1 = {r:<8.4g} seed {s}: {res['status']:<9} {res['iterations']:>5} steps, train err "
                f"{res['train_error']:.3f}, test err {res['test_error']:.3f}, |dW|/|W0| {res['rel_change_W']:.3g} "
                f"({res['seconds']:.1f} s)")
            results.append(res)
    config = dict(n_train=n_train, n_test=n_test, d0=DIGITS_D0, d1=d1, ratios=list(map(float, ratios)), seeds=seeds,
                  teacher=teacher, teacher_width=teacher_width, product=P, eq19_scale=P * math.sqrt(DIGITS_D0 * d1),
                  he_ratio=math.sqrt(DIGITS_D0 / d1), max_iters=max_iters, tol=tol, lr_scale=lr_scale,
                  data_seed=data_seed)
    return {"config": config, "teacher": tinfo, "results": results}


def summarize(results, keys=("train_error", "test_error", "test_rel_mse", "rel_change_W", "iterations", "final_loss")):
    """Per ratio: mean and 95% t half-width over seeds of ``keys``, and the converged count."""
    from scipy import stats  # noqa: PLC0415

    out = []
    for r in sorted({x["ratio"] for x in results}):
        rows = [x for x in results if x["ratio"] == r]
        row = {"ratio": r, "w1": rows[0]["w1"], "w2": rows[0]["w2"], "runs": len(rows),
               "converged": sum(x["status"] == "converged" for x in rows)}
        for k in keys:
            v = np.asarray([x[k] for x in rows], dtype=float)
            half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
            row[k], row[k + "_ci"] = float(v.mean()), half
        out.append(row)
    return out


def trend(summary, key="test_error", *, fitted_only=False):
    """Least-squares slope of ``key`` against log10(w2 / w1), and the Spearman correlation (NaN with too
    few ratios). ``fitted_only``: only the ratios whose students all reached zero training error."""
    from scipy import stats  # noqa: PLC0415

    if fitted_only:
        summary = [s for s in summary if s["train_error"] == 0]
    x = np.log10([s["ratio"] for s in summary])
    y = np.asarray([s[key] for s in summary])
    slope = float(np.polyfit(x, y, 1)[0]) if x.size >= 2 else math.nan
    rho = float(stats.spearmanr(x, y)[0]) if x.size >= 3 else math.nan
    return slope, rho


def table(summary) -> str:
    head = ("| w2/w1 | w1 | w2 | converged | h_K / h_0 | train error | test error | rel. test MSE | rel. change W "
            "| steps |")
    lines = [head, "|" + "---|" * 10]
    for s in summary:
        lines.append(f"| {s['ratio']:.4g} | {s['w1']:.4g} | {s['w2']:.4g} | {s['converged']}/{s['runs']} | "
                     f"{s['final_loss']:.3g} | "
                     f"{s['train_error']:.3f} +- {s['train_error_ci']:.3f} | {s['test_error']:.3f} +- "
                     f"{s['test_error_ci']:.3f} | {s['test_rel_mse']:.3f} +- {s['test_rel_mse_ci']:.3f} | "
                     f"{s['rel_change_W']:.3g} | {s['iterations']:.0f} |")
    return "\n".join(lines)


def figure(summary, config, path):
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator  # noqa: PLC0415

    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    r = np.asarray([s["ratio"] for s in summary])
    fitted = np.asarray([s["train_error"] == 0 for s in summary])
    for key, label, marker, c in (("test_error", "test error (held-out digits)", "o", "C0"),
                                  ("train_error", "training error", "s", "C1")):
        y = np.asarray([s[key] for s in summary])
        e = np.nan_to_num(np.asarray([s[key + "_ci"] for s in summary]))
        ax1.errorbar(r, y, yerr=e, color=c, marker="none", capsize=3, label=label + ", mean +- 95% CI")
        ax1.plot(r[fitted], y[fitted], marker, color=c, ms=5)
        ax1.plot(r[~fitted], y[~fitted], marker, color=c, ms=5, mfc="white")
    ax1.plot([], [], "o", color="k", mfc="white", label="hollow: training set not fitted (train error > 0)")
    ax2.plot(r, [s["rel_change_W"] for s in summary], "o-", ms=4, color="C2", label=r"$\|W_K - W_0\|_F/\|W_0\|_F$")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(list(r)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.axvline(config["he_ratio"], color="0.5", ls=":", lw=1,
                   label=f"He: w2/w1 = sqrt(d0/d1) = {config['he_ratio']:.3g}")
        ax.set_xlabel(r"$w_2 / w_1$ at fixed $w_1 w_2$")
        ax.legend(fontsize=7)
    ax1.set_ylim(bottom=0)
    ax1.set_ylabel("classification error (vs teacher labels)")
    ax2.set_yscale("log")
    ax2.set_ylabel("relative change of W after GD")
    ax1.set_title(f"digits, teacher = {config['teacher']}: error after GD", fontsize=9)
    ax2.set_title("how far the first layer moved (App. F)", fontsize=9)
    fig.suptitle(f"GeLU students d1 = {config['d1']}, n = {config['n_train']} train / {config['n_test']} test, "
                 f"w1 w2 = {config['product']:.3g} (He-like, w1 w2 sqrt(d0 d1) = {config['eq19_scale']:.3g}), "
                 f"{config['seeds']} seeds; GD: Eq. 13 step x {config['lr_scale']:g}, tol = {config['tol']:g}, "
                 f"max_iters = {config['max_iters']}", fontsize=8.5)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (n_train 300, d1 384, 5 ratios, 2 seeds, 2000 steps; ~1.5 minutes)")
    p.add_argument("--out", default="digits_generalization_out", help="folder for the PNG and the JSON")
    p.add_argument("--teacher", choices=("trained", "random", "classes"), default="trained")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--width", type=int, help="student width d1")
    p.add_argument("--seeds", type=int)
    p.add_argument("--ratios", type=str, help="comma-separated w2/w1 values")
    p.add_argument("--max-iters", type=int)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--lr-scale", type=float, default=1.0)
    p.add_argument("--data-seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.quick:
        d = dict(n_train=300, n_test=1497, width=384, seeds=2, ratios="0.01,0.1,1,10,100", max_iters=2000,
                 teacher_width=128, teacher_iters=800)
    else:
        d = dict(n_train=500, n_test=1297, width=512, seeds=3,
                 ratios="0.003,0.01,0.03,0.1,0.3,1,3,10,30,100", max_iters=5000, teacher_width=256,
                 teacher_iters=1500)
    ratios = [float(x) for x in (a.ratios or d["ratios"]).split(",")]
    t0 = time.perf_counter()
    res = run(n_train=a.n_train or d["n_train"], n_test=a.n_test or d["n_test"], d1=a.width or d["width"],
              ratios=ratios, seeds=a.seeds or d["seeds"], teacher=a.teacher, teacher_width=d["teacher_width"],
              teacher_iters=d["teacher_iters"], data_seed=a.data_seed, max_iters=a.max_iters or d["max_iters"],
              tol=a.tol, lr_scale=a.lr_scale)
    summary = summarize(res["results"])
    slope, rho = trend(summary)
    cfg = res["config"]
    print()
    print(f"digits teacher-student ({cfg['teacher']}): n = {cfg['n_train']} train, {cfg['n_test']} test, d1 = "
          f"{cfg['d1']}, w1 w2 = {cfg['product']:.4g}, {cfg['seeds']} seeds per ratio (mean +- 95% t-interval)")
    print(table(summary))
    print(f"test error against log10(w2/w1): slope {slope:+.4f} per decade, Spearman {rho:+.2f} "
          f"({'falls' if slope < 0 else 'rises'} as w2/w1 grows)")
    fit = [s["ratio"] for s in summary if s["train_error"] == 0]
    fslope, frho = trend(summary, fitted_only=True)
    print(f"ratios whose students all fit the training set (train error 0): {[f'{x:g}' for x in fit] or 'none'}; "
          f"among them slope {fslope:+.4f} per decade, Spearman {frho:+.2f}")
    res["fitted_ratios"], res["fitted_slope_per_decade"] = fit, fslope
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res.update(summary=summary, slope_per_decade=slope, spearman=rho, seconds=round(time.perf_counter() - t0, 1))
    (out / "digits_generalization.json").write_text(json.dumps(res, indent=1))
    try:
        figure(summary, cfg, out / "digits_generalization.png")
        print(f"wrote {out / 'digits_generalization.png'} and {out / 'digits_generalization.json'} "
              f"({res['seconds']} s)")
    except ImportError as e:  # matplotlib missing: the table is still printed
        print(f"no figure ({e})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
