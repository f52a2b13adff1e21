"""Arms that score at chance level: a winner among them is noise (issue 11).

A constant prediction of any one class reaches at most ``1/K`` mean IU (IU of the predicted class
= its frequency <= 1, every other class 0), exactly ``1/K`` mean accuracy, and about ``1/K``
accuracy on balanced classification data. An arm whose score is within :data:`MARGIN` of that has
learnt nothing a constant could not, typically because the budget was too short.
"""

from __future__ import annotations

__all__ = ["chance_score", "chance_note", "MARGIN"]

MARGIN = 0.02
_CHANCE_SCORES = ("mean_iu", "mean_accuracy", "accuracy")


def chance_score(score: str, num_classes: int) -> float | None:
    """What a constant prediction reaches at most for ``score`` (None: no such bound used here)."""
    return 1.0 / num_classes if score in _CHANCE_SCORES and num_classes >= 2 else None


def num_classes_of(dataset: str) -> int | None:
    """The number of classes of a built-in dataset, without reading it (None for a folder)."""
    from fcnkit.data.registry import dataset_table

    return next((k for name, _, k, _ in dataset_table() if name == dataset), None)


def chance_note(scores: dict[str, float | None], score: str, dataset: str, label: str | None = None) -> str | None:
    """A warning naming the arms at chance level (``scores``: arm -> mean score), or None."""
    k = num_classes_of(dataset)
    chance = chance_score(score, k) if k else None
    if chance is None:
        return None
    low = [arm for arm, value in scores.items() if value is not None and value <= chance + MARGIN]
    if not low:
        return None
    who = "Every arm" if len(low) == len(scores) else "Arms " + ", ".join(low)
    return (
        f"**Warning: {who} scored at chance level** ({label or score} <= {chance:.3f} + {MARGIN}, what a "
        f"constant prediction of one of the {k} classes can reach): "
        + ("no arm can be called better; " if len(low) == len(scores) else "")
        + "train longer (a larger budget) before comparing."
    )
