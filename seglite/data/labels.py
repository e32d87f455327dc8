"""Cityscapes label table: names, colours and labelId <-> trainId maps."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255

# cityscapesscripts' table is the single source of truth for names, ids and colours.
_TABLE = [(lab.name, lab.id, lab.trainId, lab.color) for lab in _CS_LABELS if lab.id >= 0]

_TRAIN = sorted((train_id, name, label_id, color) for name, label_id, train_id, color in _TABLE if 0 <= train_id < 255)

CLASS_NAMES: tuple[str, ...] = tuple(name for _, name, _, _ in _TRAIN)
NUM_CLASSES = len(CLASS_NAMES)
TRAIN_ID_TO_LABEL_ID = np.array([label_id for _, _, label_id, _ in _TRAIN], dtype=np.uint8)
VALID_LABEL_IDS = frozenset(label_id for _, label_id, _, _ in _TABLE)

# labelId -> trainId lookup over all 256 byte values; ids outside the table map to ignore.
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _name, _label_id, _train_id, _color in _TABLE:
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id if 0 <= _train_id < 255 else IGNORE_INDEX

# trainId -> RGB colour for 0..18, black for everything else (ignore).
PALETTE_RGB = np.zeros((256, 3), dtype=np.uint8)
for _train_id, _name, _label_id, _color in _TRAIN:
    PALETTE_RGB[_train_id] = _color


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return LABEL_ID_TO_TRAIN_ID[label_ids]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes submission format: ignore (255) becomes 0, 'unlabeled'."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[:NUM_CLASSES] = TRAIN_ID_TO_LABEL_ID
    return lut[train_ids]
