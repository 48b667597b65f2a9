"""Which windows each step trains on, and a position in them.

Fixed windows: a seeded permutation of the training windows per epoch. Random windows
(`windows = random`): each epoch draws as many window starts as there are training windows,
uniformly with replacement from every offset of the training text, seeded by the epoch. Either
way the position (epoch, offset) is all the state there is, so a checkpoint stores two numbers
and a resumed run reads exactly the windows the uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np


class Stream:
    def __init__(self, train: np.ndarray, seed: int, per_epoch: int | None = None) -> None:
        """Over the window ids `train`; with `per_epoch`, `per_epoch` draws with replacement
        from `train` (window starts) per epoch."""
        self.train, self.seed, self.per_epoch = train, seed, per_epoch
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    @classmethod
    def of(cls, data, seed: int) -> Stream:
        """The stream of a `Prepared`'s training windows."""
        if data.text is None:
            return cls(data.train, seed)
        return cls(data.starts(), seed, per_epoch=max(1, len(data.train)))

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.per_epoch is not None:
            return self.train[rng.integers(0, len(self.train), size=self.per_epoch)]
        return self.train[rng.permutation(len(self.train))]

    def take(self, count: int) -> np.ndarray:
        """The next `count` window ids, moving into the next epoch when this one runs out."""
        out = []
        while count > 0:
            chunk = self._order[self.offset : self.offset + count]
            out.append(chunk)
            count -= len(chunk)
            self.offset += len(chunk)
            if self.offset >= len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return np.concatenate(out)

    def seek(self, count: int) -> None:
        """Go to where `count` windows from the start end (every epoch is as long)."""
        self.epoch, self.offset = divmod(count, len(self._order))
        self._order = self._permutation(self.epoch)

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, state: dict) -> None:
        """Continue where `state` left off; ValueError for an offset past the epoch's end."""
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if not 0 <= offset < len(self._order) or epoch < 0:
            raise ValueError(f"the data stream position {state} lies outside the "
                             f"{len(self._order):,} training windows of an epoch")  # fmt: skip
        self.epoch, self.offset = epoch, offset
        self._order = self._permutation(self.epoch)


def eval_ids(val: np.ndarray, batch: int, batches: int) -> list[np.ndarray]:
    """The validation batches: the same windows, in the same order, at every evaluation,
    spread evenly over the whole validation set (all of it, cycled, when it is smaller)."""
    if len(val) == 0:
        return []
    count = batch * batches
    if count >= len(val):
        ids = np.resize(val, max(count, 1))[:count]
    else:
        ids = val[(np.arange(count) * len(val)) // count]
    return [ids[i : i + batch] for i in range(0, count, batch)]
