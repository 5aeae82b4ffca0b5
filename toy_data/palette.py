"""One palette and one legend for every picture of the toy classes: ``toy_data preview``, the study
report's example predictions and ``predict --overlays`` / ``overlays`` all draw with these.

Colour says the class, line style says the source: ground truth solid, predictions dashed; the
mask / segmentation outline is orange. (Defined here, in the data package that defines the classes,
so that the generator's preview needs nothing from the model package.)
"""

from __future__ import annotations

CLASS_COLOURS: dict[int, str] = {1: "cyan", 2: "magenta", 3: "yellow", 4: "tomato"}
OTHER_COLOUR = "white"  # a class beyond the table
MASK_COLOUR = "orange"  # mask outline (data) and segmentation outline (model)
GT_STYLE = "-"
PRED_STYLE = "--"


def class_colour(label: int) -> str:
    """The colour of class ``label`` (1, 2, ...)."""
    return CLASS_COLOURS.get(int(label), OTHER_COLOUR)


def legend(predictions: bool = True) -> str:
    """The one-line legend; ``predictions=False`` for pictures of the data alone."""
    classes = f"{CLASS_COLOURS[1]}: class 1, {CLASS_COLOURS[2]}: class 2"
    if not predictions:
        return f"boxes: {classes}; {MASK_COLOUR}: mask outline"
    return (f"{classes}; solid: ground truth, dashed: predictions (class, score); "
            f"{MASK_COLOUR}: segmentation outline")
