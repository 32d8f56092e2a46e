"""PNG plot of the training curves from metrics.jsonl records (matplotlib, Agg backend)."""
from __future__ import annotations


def plot_metrics(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, len(records) + 1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(x, [r["train_loss"] for r in records], label="train loss")
    ax1.set_xlabel("epoch (stages in sequence)")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("test_acc", "test acc"), ("ema_test_acc", "EMA test acc"),
                       ("label_acc", "label recovery acc"), ("train_acc", "train acc")):
        ys = [r.get(key) for r in records]
        if any(y is not None for y in ys):
            ax2.plot(x, [float("nan") if y is None else y for y in ys], label=label)
    stage2 = [i for i, r in enumerate(records, 1) if r.get("stage") == 2]
    for ax in (ax1, ax2):
        if stage2:
            ax.axvline(stage2[0] - 0.5, color="grey", linestyle=":", label=None)
    ax2.set_xlabel("epoch (stages in sequence)")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
