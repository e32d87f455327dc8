"""Deterministic, resumable sampling: the k-th batch depends only on (seed, k), never on how we got there."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler):
    """Yields batches of (index, augmentation seed) forever, starting at batch `start`, for one rank.

    Each epoch is a permutation drawn from (seed, epoch); the global batch of `batch_size` samples is
    split over ranks. DistributedSampler's job, plus exact resume mid-epoch.
    """

    def __init__(
        self, dataset_size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        self.size, self.batch, self.seed, self.start = dataset_size, batch_size, seed, start
        self.rank, self.world = rank, world_size

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_rank = self.batch // self.world
        step = self.start
        cached_epoch, order = -1, None
        while True:
            items = []
            for slot in range(self.rank * per_rank, (self.rank + 1) * per_rank):
                position = step * self.batch + slot
                epoch, offset = divmod(position, self.size)
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch_order(epoch)
                items.append((int(order[offset]), (self.seed * 1_000_003 + position) % (2**31)))
            yield items
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for progress estimates
        return 2**31
