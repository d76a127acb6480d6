"""Saving the classic commands' figures: ``matplotlib.figure.Figure`` only, never pyplot, so the user's
matplotlib backend and global state are left alone."""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out ``fig`` and write it to ``path`` (PNG; parent directories made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
