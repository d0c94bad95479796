"""Pictures for the tools: a montage of several images in one PNG."""
import os

__all__ = ["save_montage"]


def save_montage(pictures, path, cols=3, tile=(4, 4.2), title=None):
    """[(title, RGB array (H, W, 3))] -> one PNG at ``path``, ``cols`` pictures a row of
    ``tile`` inches each, under an optional overall ``title``. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, len(pictures))
    rows = (len(pictures) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(tile[0] * cols, tile[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, pictures):
        ax.imshow(img)
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
