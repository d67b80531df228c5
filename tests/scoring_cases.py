"""Hand-made label maps whose scores the official BraTS evaluation gave outside this project.

Only numpy here, so that a separate environment holding the referees (``brats-evaluation``, the BraTS 2023
lesion-wise script) can build the same maps from this file. Labels follow BraTS 2023 (1 NCR, 2 ED, 3 ET), the
convention both referees read; ``tests/test_scoring.py`` holds the values they gave.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPE", "hand_made_cases"]

SHAPE = (64, 64, 64)
"""Grid of every case, 1 mm voxels unless a case says otherwise."""

NCR, ED, ET = 1, 2, 3


def _tumour() -> np.ndarray:
    """Oedema 30^3 around a 14^3 core whose 2-voxel shell enhances."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:40, 10:40, 10:40] = ED
    labels[18:32, 18:32, 18:32] = ET
    labels[20:30, 20:30, 20:30] = NCR
    return labels


def hand_made_cases() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """``name -> (truth, prediction, voxel spacing in mm)``, each map ``uint8`` of :data:`SHAPE`.

    - ``slab``: the prediction is the truth minus a 2-voxel slab through the whole tumour (two predicted pieces of
      one true lesion).
    - ``missed_lesion``: the truth has a second, 30-voxel enhancing lesion far away, which the prediction misses.
    - ``false_positive``: the prediction adds a 64-voxel oedema fragment far from the tumour.
    - ``et_empty_in_truth``: the truth has no enhancing tumour (its shell is necrosis); the prediction has one.
    - ``et_empty_in_both``: neither has enhancing tumour; the prediction's core is one voxel wider on one side.
    - ``spacing_2mm``: ``slab`` on 2 mm voxels, for the millimetre distances.
    """
    truth = _tumour()
    slab = truth.copy()
    slab[:, :, 24:26] = 0

    missed = truth.copy()
    missed[50:52, 50:53, 50:55] = ET  # 30 voxels
    false_positive = truth.copy()
    false_positive[52:56, 52:56, 52:56] = ED

    no_et = truth.copy()
    no_et[no_et == ET] = NCR
    no_et_wider = no_et.copy()
    no_et_wider[18:33, 18:32, 18:32] = NCR
    return {
        "slab": (truth, slab, (1.0, 1.0, 1.0)),
        "missed_lesion": (missed, truth, (1.0, 1.0, 1.0)),
        "false_positive": (truth, false_positive, (1.0, 1.0, 1.0)),
        "et_empty_in_truth": (no_et, truth, (1.0, 1.0, 1.0)),
        "et_empty_in_both": (no_et, no_et_wider, (1.0, 1.0, 1.0)),
        "spacing_2mm": (truth, slab, (2.0, 2.0, 2.0)),
    }
