"""Each worker's share of a data set in multi-worker training: which elements or record files
it reads, and how many steps every worker runs.

`ImageDataset.prepare(shard=...)` cuts the share before decoding; `batches(..., shard=...)`
reports the steps. Both read them here, so they always agree.
"""

from __future__ import annotations

import numpy as np


def check_shard(shard, size: int) -> tuple[int, int]:
    """`shard` as `(num_shards, index)` ((1, 0) for None); raises a ValueError when it is not
    one, or when a data set of `size` elements cannot give every worker an element."""
    if shard is None:
        return 1, 0
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard))
    if not ok or not 0 <= shard[1] < shard[0]:
        raise ValueError(
            "Expected `shard` to be None or (num_shards, index) with 0 <= index < "
            "num_shards, e.g. tltf.training.distribute.worker_shard(strategy). "
            f"Received: shard={shard!r}")
    if shard[0] > size:
        raise ValueError(
            f"Cannot give each of {shard[0]} workers its own images: the data set has "
            f"only {size}. Use fewer workers or more data. Received: shard={shard!r}")
    return int(shard[0]), int(shard[1])


def files_of_shard(data, num_shards: int, index: int) -> list[tuple[str, int]] | None:
    """The `(record file, count)` pairs worker `index` of `num_shards` reads, or None: the
    records of `data` are not in files, or too few to give every worker at least one."""
    files = data._record_files
    if files is None or len(files) < num_shards:
        return None
    return files[index::num_shards]


def share(data, batch_size: int, num_shards: int) -> tuple[int, int]:
    """(elements, steps) of each worker's share of `data`: every worker runs the same whole
    number of steps of `batch_size / num_shards` images (one worker's part of a global
    batch), enough for the largest share; a smaller share repeats some of its own images.
    One share is all the data, in steps of `batch_size`."""
    if num_shards == 1:
        return len(data), -(-len(data) // batch_size)
    step = -(-batch_size // num_shards)
    shares = [files_of_shard(data, num_shards, i) for i in range(num_shards)]
    largest = (-(-len(data) // num_shards) if shares[0] is None  # by element: within one
               else max(sum(n for _, n in files) for files in shares))
    steps = -(-largest // step)
    return steps * step, steps
