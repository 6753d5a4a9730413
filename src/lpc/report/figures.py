"""The study's figures (matplotlib, imported only when a figure is drawn): latent histograms (the paper's
Fig. 1), binarity (Fig. 2), neural collapse (Fig. 3), accuracy, and γ with its pressure for the IB heads."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes
from ..study import read_history
from .statistics import is_number

BINARITY = [("binarity_loglik_train", "ℓ̄ (log-likelihood, Eq. 25)", False),
            ("binarity_sigma_train", "σ̄ (mode std, Eq. 26)", True),
            ("binarity_peak_distance_train", "μ̄ (peak distance / σ, Eq. 27)", True)]
COLLAPSE = [("nc1_per_dim_train", "NC1 / P = Tr(Σ_W Σ_B⁺)/K/P", True), ("equinorm_train", "equinorm (CoV of class-mean norms)", True),
            ("equiangularity_train", "equiangularity (std of cosines)", True),
            ("max_angle_train", "max-angle (mean |cos + 1/(K-1)|)", True)]
GAMMA = [("gamma", "γ", True), ("pressure", "pressure γ / r²", True),
         ("classifier_scale", "classifier scale r", True), ("true_class_prob", "true-class probability", False),
         ("train_accuracy", "train accuracy", False)]
MAX_NODES = 16  # latent histograms shown for at most this many latent dimensions
FIGURE1_HEADS = ("ib", "lin_pen", "no_pen")  # the paper's Fig. 1 contrast: IB, its layer without γ, no layer


def make_figures(out: Path, rows: list[dict[str, Any]], notes: list[str]) -> list[tuple[Path, str]]:
    """Draws the figures it has data for into ``out/figures``; a missing figure adds a note instead."""
    import matplotlib

    matplotlib.use("Agg")
    (out / "figures").mkdir(exist_ok=True)
    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in selected))
    histories = {}
    for r in selected:
        try:
            histories[r["run"]] = read_history(out / r["run"])
        except Exception as error:  # a broken history costs its curves, not the report
            notes.append(f"{r['run']}/history.jsonl unreadable ({error}); left out of the figures.")
            histories[r["run"]] = []
    figures = []
    for draw in (_figure_latents, _figure_binarity, _figure_collapse, _figure_accuracy, _figure_gamma):
        made = draw(out, selected, heads, histories, notes)
        if made is not None:
            figures.append(made)
    return figures


def _colors(heads):
    from ..heads import HEADS
    import matplotlib.pyplot as plt

    order = list(HEADS) + [h for h in heads if h not in HEADS]
    cmap = plt.get_cmap("tab10")
    return {h: cmap(order.index(h) % 10) for h in heads}


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_latent_histograms(z: np.ndarray, y: np.ndarray, path: Path, *, title: str,
                           max_nodes: int | None = None) -> Path:
    """Figure 1 of the paper: one histogram per latent node, stacked by class, written as PNG to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(z.shape[1], max_nodes or MAX_NODES)
    cols = min(4, shown)
    rows_ = math.ceil(shown / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.4 * rows_ + 0.4), squeeze=False,
                             layout="constrained")
    classes = np.unique(y)
    for i in range(rows_ * cols):
        ax = axes[i // cols][i % cols]
        if i >= shown:
            ax.axis("off")
            continue
        _node_histogram(ax, z[:, i], y, classes)
        ax.set_title(f"node {i}", fontsize=9)
    axes[0][0].legend(title="class", fontsize=6, title_fontsize=7, ncol=2)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def plot_latent_comparison(latents: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str,
                           nodes: int) -> Path:
    """Figure 1 across heads: one column per head (``name -> (z, y)``), one row per node 0..nodes-1, each panel
    a histogram stacked by class; a head with fewer nodes leaves its lower panels empty."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(latents)
    fig, axes = plt.subplots(nodes, len(names), figsize=(3.4 * len(names), 1.5 * nodes + 0.8), squeeze=False,
                             layout="constrained")
    classes = np.unique(np.concatenate([y for _, y in latents.values()]))
    for j, name in enumerate(names):
        z, y = latents[name]
        axes[0][j].set_title(name, fontsize=10)
        for i in range(nodes):
            ax = axes[i][j]
            if i >= z.shape[1]:
                ax.axis("off")
                continue
            _node_histogram(ax, z[:, i], y, classes)
            if j == 0:
                ax.set_ylabel(f"node {i}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="class", loc="outside right upper", fontsize=7, title_fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def _node_histogram(ax, values: np.ndarray, y: np.ndarray, classes: np.ndarray) -> None:
    """Histogram of one node stacked by class, one filled step polygon per class (a bar per bin and class
    would be 600 artists per panel and dominate the report's time)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, 61) if high > low else np.array([low - 0.5, high + 0.5])
    bottom = np.zeros(len(edges) - 1)
    for j, c in enumerate(classes):
        counts = np.histogram(values[y == c], bins=edges)[0]
        ax.stairs(bottom + counts, edges, baseline=bottom, fill=True, color=cmap(j % cmap.N), label=str(c))
        bottom = bottom + counts
    ax.tick_params(labelsize=7)


def _figure_latents(out, selected, heads, histories, notes):
    runs = {}
    for head in FIGURE1_HEADS:  # the selected run of the smallest seed that saved its latents
        candidates = sorted((r for r in selected if r["head"] == head), key=lambda r: r["seed"])
        run = next((r for r in candidates if (out / r["run"] / "latents.npz").exists()), None)
        if run is not None:
            runs[head] = run
    if not runs:
        notes.append(f"Figure 1 (latent histograms) skipped: no selected {', '.join(FIGURE1_HEADS)} run with "
                     "latents.npz (the study has none of these heads, they diverged, or eval.save_latents is off).")
        return None
    latents = {}
    for head, run in runs.items():
        with np.load(out / run["run"] / "latents.npz") as arrays:
            latents[f"{head} (lr={run['lr']:g}, seed={run['seed']})"] = (arrays["z_train"], arrays["y_train"])
    widths = {head: z.shape[1] for head, (z, _) in zip(runs, latents.values())}
    # the penultimate layers set the layout; no_pen's z is the wide backbone output, cut to the same nodes
    layer = [w for head, w in widths.items() if head != "no_pen"] or list(widths.values())
    nodes = min(MAX_NODES, max(layer))
    path = out / "figures" / "fig1_latent_histograms.png"
    plot_latent_comparison(latents, path, nodes=nodes,
                           title="Latent histograms per node (training set, last epoch)")
    cut = [f"{head} shows its first {nodes} of {w}" for head, w in widths.items() if w > nodes]
    missing = [h for h in FIGURE1_HEADS if h not in runs]
    return path, (f"Figure 1: histograms of the training-set latents z at the last epoch of the selected run of "
                  f"the smallest seed of {', '.join(runs)}, one column per head and one row per node (nodes 0–"
                  f"{nodes - 1}), stacked by class. " + (f"{'; '.join(cut)} dimensions (no_pen's z is the backbone's "
                  "feature vector, as it has no penultimate layer). " if cut else "") +
                  (f"Not shown (no selected run with latents): {', '.join(missing)}. " if missing else "") +
                  "Under latent point collapse every class sits at one of two values in each node (paper, Fig. 1); "
                  "each panel has its own x-axis.")


def _curves(selected, head, histories, key):
    """Mean and std over the selected seeds of ``key`` per evaluated epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in selected:
        if r["head"] != head:
            continue
        for record in histories.get(r["run"], []):
            if is_number(record.get(key)):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
    return np.array(epochs), mean, std


def _run_curve(history, key):
    """Epochs and values of ``key`` in one run's history records that have it."""
    points = [(int(r["epoch"]), float(r[key])) for r in history if is_number(r.get(key))]
    return np.array([e for e, _ in points]), np.array([v for _, v in points])


def _panel_figure(out, selected, heads, histories, panels, name, title, tpt=False, per_run=False):
    """One panel per ``(key, label, log)`` that some head has, curves coloured by head: the mean over the selected
    seeds with a ± 1 std band, or (``per_run``) one line per selected run. Returns (path, keys shown) or None."""
    import matplotlib.pyplot as plt

    colors = _colors(heads)

    def curves(head, key):  # [(epochs, values, std or None)]
        if per_run:
            runs = sorted((r for r in selected if r["head"] == head), key=lambda r: r["seed"])
            return [(*_run_curve(histories.get(r["run"], []), key), None) for r in runs]
        return [_curves(selected, head, histories, key)]

    present = [(k, label, log) for k, label, log in panels
               if any(len(c[0]) for h in heads for c in curves(h, k))]
    if not present:
        return None
    fig, axes = plt.subplots(len(present), 1, figsize=(8, 2.4 * len(present) + 0.4), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (key, label, log) in zip(axes[:, 0], present):
        positive = True
        for head in heads:
            labelled = False
            for epochs, mean, std in curves(head, key):
                if not len(epochs):
                    continue
                positive = positive and bool((mean > 0).all())
                ax.plot(epochs, mean, marker="." if len(epochs) <= 50 else None, color=colors[head],
                        label=None if labelled else head, linewidth=1.2 if per_run else 1.5)
                labelled = True
                if std is not None:
                    ax.fill_between(epochs, mean - std, mean + std, color=colors[head], alpha=0.15, linewidth=0)
            if tpt:
                onsets = [r["tpt_epoch"] for r in selected if r["head"] == head and is_number(r.get("tpt_epoch"))]
                if onsets:
                    ax.axvline(float(np.mean(onsets)), color=colors[head], linestyle="--", linewidth=1)
            if per_run:  # where a run's training accuracy collapsed while γ rose
                for r in selected:
                    if r["head"] == head and is_number(r.get("accuracy_drop_epoch")):
                        ax.axvline(float(r["accuracy_drop_epoch"]), color=colors[head], linestyle=":", linewidth=1)
        if log and positive:
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(title)
    path = out / "figures" / name
    _save(fig, path)
    return path, [k for k, _, _ in present]


def _figure_binarity(out, selected, heads, histories, notes):
    made = _panel_figure(out, selected, heads, histories, BINARITY, "fig2_binarity.png",
                         "Binarity of the latent nodes (2-mode GMM per node, training set)")
    if made is None:
        notes.append("Figure 2 (binarity) skipped: no `binarity_*_train` values in the histories (eval.geometry off?).")
        return None
    return made[0], ("Figure 2: mean over nodes of a two-mode Gaussian mixture fitted per latent node on the training "
                     "set — average log-likelihood ℓ̄, mode standard deviation σ̄ and peak distance μ̄ (Appendix D, "
                     "Eqs. 25–27) over epochs; mean over the selected seeds, band ± 1 std.")


def _figure_collapse(out, selected, heads, histories, notes):
    made = _panel_figure(out, selected, heads, histories, COLLAPSE, "fig3_neural_collapse.png",
                         "Neural collapse: NC1 per dimension and NC2 (training set)", tpt=True)
    if made is None:
        notes.append("Figure 3 (neural collapse) skipped: no NC values in the histories (eval.geometry off?).")
        return None
    reached = [h for h in heads if any(r["head"] == h and is_number(r.get("tpt_epoch")) for r in selected)]
    onset = (f"dashed lines: mean TPT onset (train accuracy ≥ 99.9%) of {', '.join(reached)}" if reached
             else "no head reached the TPT (train accuracy ≥ 99.9%), so no onset is marked")
    return made[0], ("Figure 3: NC1 normalised by the latent width, Tr(Σ_W Σ_B⁺)/K/P, and the NC2 metrics "
                     f"(Appendix E) over epochs, mean over the selected seeds; {onset}.")


def _figure_accuracy(out, selected, heads, histories, notes):
    panels = [("train_accuracy", "train accuracy", False), ("test_accuracy", "test accuracy", False)]
    made = _panel_figure(out, selected, heads, histories, panels, "fig4_accuracy.png", "Accuracy over epochs")
    if made is None:
        notes.append("Accuracy curves skipped: no history.jsonl in the selected runs.")
        return None
    return made[0], "Accuracy curves: train and test accuracy (clean inputs) per evaluated epoch, mean over the selected seeds."


def _figure_gamma(out, selected, heads, histories, notes):
    ib_heads = [h for h in heads if _compresses(h)]
    if not ib_heads:
        return None
    made = _panel_figure(out, selected, ib_heads, histories, GAMMA, "fig5_gamma_pressure.png",
                         "γ, pressure and training accuracy of the IB heads", per_run=True)
    if made is None or "gamma" not in made[1]:
        notes.append("γ figure skipped: the IB runs' histories have no `gamma` (trained by an older lpc).")
        return None
    missing = [label for key, label, _ in GAMMA if key not in made[1]]
    return made[0], ("γ figure: the compression weight γ, the pressure γ / r² that it puts on the latents (r: mean "
                     "row norm of the classifier weights; a rescaling (W, z) → (cW, z/c) leaves the logits alone "
                     "and divides γ‖z‖² by c², so γ alone overstates the pull), r itself, the mean softmax "
                     "probability of the true class over the epoch's training batches, and the training accuracy, "
                     "one line per selected run of each IB head; γ, pressure and r on a log scale. Dotted lines: "
                     "epochs where a run's training accuracy fell more than 5 points below its best while γ rose."
                     + (f" Not in these histories: {', '.join(missing)}." if missing else ""))


def _compresses(head: str) -> bool:
    """Whether ``head`` is of the IB family (its loss has the compression term γ‖z‖²)."""
    from ..heads import HEADS

    return head in HEADS and HEADS[head].compression
