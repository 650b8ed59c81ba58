"""Files to batches: folder layout, the one check pass and decode path, `ImageDataset`, sources.

Nothing here knows about models. `load_image_folder` reads a folder of class folders,
`load_tfds` / `load_arrays` / `load_csv` the other sources; every source gives an
`ImageDataset` whose `prepare()` decodes, resizes, caches, shuffles, augments and batches.
"""

from tltf.data.auditing import AuditReport, audit
from tltf.data.dataset import ImageDataset
from tltf.data.folder import load_image_folder
from tltf.data.sources import load_arrays, load_csv, load_tfds

__all__ = ["AuditReport", "ImageDataset", "audit", "load_arrays", "load_csv", "load_image_folder",
           "load_tfds"]
