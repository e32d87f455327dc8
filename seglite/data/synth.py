"""A procedurally generated street scene data set in the exact Cityscapes layout.

Nothing can be downloaded in tests or on a fresh machine, so seglite makes its own city: a road
narrowing to a vanishing point, sidewalks, buildings, vegetation, sky, poles with signs and lights,
cars, trucks, buses, people and cyclists, plus regions whose labelIds the benchmark ignores. Classes
share colours (road, sidewalk and buildings are all greys) and differ in texture, shape and place,
so a model has to learn context rather than one colour per class.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

# Cityscapes labelIds used by the generator.
ROAD, SIDEWALK, PARKING, BUILDING, WALL, FENCE, POLE = 7, 8, 9, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER = 19, 20, 21, 22, 23, 24, 25
CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE, EGO, STATIC, UNLABELED = 26, 27, 28, 32, 33, 1, 4, 0
INSTANCE_CLASSES = {PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE}

BASE_COLOURS = {  # BGR, before per-image and per-object jitter
    ROAD: (95, 90, 90),
    SIDEWALK: (140, 130, 135),
    PARKING: (120, 110, 125),
    BUILDING: (110, 115, 120),
    WALL: (130, 140, 150),
    FENCE: (100, 130, 150),
    POLE: (120, 120, 120),
    LIGHT: (40, 150, 230),
    SIGN: (30, 200, 220),
    VEGETATION: (40, 120, 60),
    TERRAIN: (90, 170, 140),
    SKY: (200, 160, 120),
    PERSON: (60, 40, 170),
    RIDER: (40, 40, 220),
    CAR: (150, 60, 40),
    TRUCK: (80, 60, 50),
    BUS: (60, 110, 40),
    MOTORCYCLE: (200, 40, 40),
    BICYCLE: (50, 30, 120),
    EGO: (30, 30, 30),
    STATIC: (80, 100, 110),
    UNLABELED: (0, 0, 0),
}


class Canvas:
    """Paints label ids, instance ids and textured colour together so they always agree."""

    def __init__(self, width: int, height: int, rng: np.random.Generator):
        self.rng = rng
        self.labels = np.zeros((height, width), np.uint8)
        self.instances = np.zeros((height, width), np.int32)
        self.image = np.zeros((height, width, 3), np.float32)
        self.next_instance = {c: 0 for c in INSTANCE_CLASSES}
        self.tint = rng.uniform(0.8, 1.2, 3)

    def paint(self, mask: np.ndarray, label: int, texture: float = 8.0, stripes: int = 0) -> None:
        colour = np.asarray(BASE_COLOURS[label], np.float32) * self.tint * self.rng.uniform(0.85, 1.15)
        self.labels[mask] = label
        if label in INSTANCE_CLASSES:
            self.instances[mask] = label * 1000 + self.next_instance[label]
            self.next_instance[label] += 1
        else:
            self.instances[mask] = label
        ys, xs = np.nonzero(mask)
        noise = self.rng.normal(0, texture, (len(ys), 1))
        shade = colour[None, :] + noise
        if stripes:
            shade += 18.0 * np.sign(np.sin(ys / stripes))[:, None]
        self.image[ys, xs] = shade

    def polygon(self, points, label: int, **kw) -> None:
        mask = np.zeros(self.labels.shape, np.uint8)
        cv2.fillPoly(mask, [np.asarray(points, np.int32)], 1)
        self.paint(mask.astype(bool), label, **kw)

    def rect(self, x0, y0, x1, y1, label: int, **kw) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label, **kw)

    def ellipse(self, cx, cy, rx, ry, label: int, **kw) -> None:
        mask = np.zeros(self.labels.shape, np.uint8)
        cv2.ellipse(mask, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), 0, 0, 360, 1, -1)
        self.paint(mask.astype(bool), label, **kw)


def render_scene(width: int, height: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street scene: (BGR uint8 image, labelIds uint8, instanceIds int32). `shift` moves the camera forward."""
    rng = np.random.default_rng(seed)
    c = Canvas(width, height, rng)
    w, h = width, height
    horizon = int(h * rng.uniform(0.38, 0.5))
    vanish_x = w * rng.uniform(0.4, 0.6)
    c.rect(0, 0, w, horizon + 2, SKY, texture=4.0)
    # Buildings along the horizon, of random widths and heights; some walls and trees in front.
    x = -rng.uniform(0, 60)
    while x < w:
        bw = rng.uniform(0.08, 0.25) * w
        top = horizon - rng.uniform(0.1, 0.35) * h
        c.rect(x, top, x + bw, horizon + 0.05 * h, BUILDING, texture=6.0, stripes=int(rng.integers(3, 8)))
        x += bw + rng.uniform(0, 0.03) * w
    for _ in range(rng.integers(1, 4)):
        tx = rng.uniform(0, w)
        c.ellipse(
            tx,
            horizon - rng.uniform(0.0, 0.1) * h,
            rng.uniform(0.03, 0.09) * w,
            rng.uniform(0.05, 0.12) * h,
            VEGETATION,
            texture=20.0,
        )
    # Ground: sidewalks, then the road as a trapezoid to the vanishing point, terrain at the far sides.
    c.rect(0, horizon, w, h, SIDEWALK, texture=5.0, stripes=3)
    road_half = rng.uniform(0.3, 0.45) * w
    c.polygon(
        [(vanish_x - 4, horizon), (vanish_x + 4, horizon), (w / 2 + road_half, h), (w / 2 - road_half, h)],
        ROAD,
        texture=10.0,
    )
    for side in (0, 1):
        if rng.random() < 0.5:
            edge = 0 if side == 0 else w
            c.polygon(
                [(edge, horizon + 0.1 * h), (edge, h), (edge + (1 - 2 * side) * 0.12 * w, h)], TERRAIN, texture=15.0
            )
    if rng.random() < 0.4:
        c.polygon([(w / 2 + road_half * 0.6, h), (w / 2 + road_half, h), (vanish_x + 6, horizon + 2)], PARKING)
    if rng.random() < 0.5:
        fy = horizon + rng.uniform(0.02, 0.08) * h
        c.rect(rng.uniform(0, 0.3) * w, fy - 0.05 * h, rng.uniform(0.5, 0.7) * w, fy, FENCE, stripes=2)
    if rng.random() < 0.3:
        c.rect(rng.uniform(0.6, 0.9) * w, horizon - 0.08 * h, w, horizon + 0.04 * h, WALL)
    # Objects, far to near so that nearer ones occlude: poles with signs and lights, vehicles, people.
    objects = []
    for _ in range(rng.integers(3, 9)):
        depth = rng.uniform(0.05, 1.0)  # 0 = horizon, 1 = bottom of the image
        objects.append(
            (depth, rng.choice(["car", "car", "car", "truck", "bus", "person", "person", "rider", "pole", "pole"]))
        )
    for depth, kind in sorted(objects):
        depth = min(1.0, depth + shift * depth)
        y = horizon + depth * (h - horizon) * 0.95
        scale = 0.05 + 0.6 * depth
        lane = rng.uniform(-1, 1)
        cx = vanish_x + lane * (w / 2 + road_half - vanish_x) * depth * 0.9
        if kind in ("car", "truck", "bus"):
            bw = scale * w * {"car": 0.35, "truck": 0.45, "bus": 0.5}[kind]
            bh = bw * {"car": 0.6, "truck": 0.9, "bus": 0.95}[kind]
            label = {"car": CAR, "truck": TRUCK, "bus": BUS}[kind]
            c.rect(cx - bw / 2, y - bh, cx + bw / 2, y, label, texture=6.0)
            c.rect(cx - bw * 0.4, y - bh * 0.85, cx + bw * 0.4, y - bh * 0.55, label, texture=3.0)  # windows
        elif kind in ("person", "rider"):
            cx = cx + np.sign(lane or 1) * road_half * depth * 0.8
            ph = scale * h * 0.9
            if kind == "rider":
                c.ellipse(
                    cx, y - ph * 0.15, ph * 0.3, ph * 0.15, BICYCLE if rng.random() < 0.7 else MOTORCYCLE, texture=4.0
                )
                c.rect(cx - ph * 0.08, y - ph * 0.8, cx + ph * 0.08, y - ph * 0.25, RIDER)
                c.ellipse(cx, y - ph * 0.88, ph * 0.07, ph * 0.08, RIDER)
            else:
                c.rect(cx - ph * 0.1, y - ph * 0.8, cx + ph * 0.1, y, PERSON)
                c.ellipse(cx, y - ph * 0.88, ph * 0.08, ph * 0.09, PERSON)
        else:
            px = rng.choice([rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)]) * w
            ph = scale * h * 1.5
            pw = max(2.0, scale * w * 0.02)
            c.rect(px - pw, y - ph, px + pw, y, POLE, texture=3.0)
            if rng.random() < 0.6:
                c.rect(px - 5 * pw, y - ph, px + 5 * pw, y - ph + 8 * pw, SIGN if rng.random() < 0.6 else LIGHT)
    if rng.random() < 0.5:
        c.ellipse(rng.uniform(0, w), horizon + rng.uniform(0.05, 0.2) * h, 0.03 * w, 0.02 * h, STATIC)
    if rng.random() < 0.7:  # the ego vehicle's bonnet, ignored by the benchmark
        c.ellipse(w / 2, h * 1.08, w * 0.45, h * 0.12, EGO, texture=2.0)
    image = c.image * rng.uniform(0.7, 1.3) + rng.normal(0, 3.0, c.image.shape)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    return image, c.labels, c.instances


def write_dataset(
    out: str | Path,
    train: int = 40,
    val: int = 10,
    size: tuple[int, int] = (512, 256),
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write leftImg8bit/ and gtFine/ (labelIds, instanceIds, colour) for train and val under `out`."""
    from seglite.data.labels import PALETTE_RGB, label_ids_to_train_ids

    out = Path(out)
    for split, count, city in (("train", train, "synthcity"), ("val", val, "synthville")):
        image_dir = out / "leftImg8bit" / split / city
        label_dir = out / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            # crc32, not hash(): str hashes change per process (PYTHONHASHSEED), so two runs would draw two cities.
            split_seed = zlib.crc32(split.encode()) % 997
            image, labels, instances = render_scene(*size, seed=seed * 100_003 + split_seed * 10_007 + index)
            stem = f"{city}_{index:06d}_000019"
            cv2.imwrite(str(image_dir / f"{stem}_leftImg8bit.png"), image)
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_labelIds.png"), labels)
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_instanceIds.png"), instances.astype(np.uint16))
            colour = PALETTE_RGB[label_ids_to_train_ids(labels)][:, :, ::-1]
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_color.png"), colour)
    return out


def write_video(
    path: str | Path, frames: int = 60, size: tuple[int, int] = (512, 256), fps: float = 10.0, seed: int = 0
) -> Path:
    """An mp4 of the camera driving forward through one generated street."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4 here")
    for index in range(frames):
        writer.write(render_scene(*size, seed=seed, shift=0.6 * index / max(1, frames - 1))[0])
    writer.release()
    return path
