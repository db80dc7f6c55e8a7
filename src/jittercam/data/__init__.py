"""Reading images (as displayed), finding them in folders, writing results safely, and the benchmark
datasets. Each dataset module registers its dataset (`registry.register_dataset`); importing this
package imports them all."""
import importlib
import pkgutil

from .collection import Source, find_images, image_suffixes, output_names
from .images import MIN_SIDE, ImageInfo, as_rgb, check_image, load_image, to_input

# benchmark datasets: the shared pieces, the registry, then each dataset. Folders are recognised in this
# order of registration: COCO (an annotation file may be named explicitly), VOC, ImageNet.
from .base import BenchmarkDataset, Sample  # isort: skip
from .registry import (  # isort: skip
    available_datasets,
    dataset_needs_model,
    dataset_num_classes,
    dataset_source,
    open_dataset,
    register_dataset,
)
from . import offline  # isort: skip  # noqa: F401 - registers its dataset, the first named one
from . import coco, voc, imagenet  # isort: skip  # noqa: F401 - register their datasets, in this order

# any other module of this package is a dataset too (adding one touches one file); its folders are
# recognised after the shipped datasets'
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "MIN_SIDE",
    "BenchmarkDataset",
    "ImageInfo",
    "Sample",
    "Source",
    "as_rgb",
    "available_datasets",
    "check_image",
    "dataset_needs_model",
    "dataset_num_classes",
    "dataset_source",
    "find_images",
    "image_suffixes",
    "load_image",
    "open_dataset",
    "output_names",
    "register_dataset",
    "to_input",
]
