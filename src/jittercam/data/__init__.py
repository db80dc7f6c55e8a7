"""Reading images (as displayed), finding them in folders, and writing results safely."""
from .collection import Source, find_images, image_suffixes, output_names
from .images import MIN_SIDE, ImageInfo, as_rgb, check_image, load_image, to_input

__all__ = [
    "MIN_SIDE",
    "ImageInfo",
    "Source",
    "as_rgb",
    "check_image",
    "find_images",
    "image_suffixes",
    "load_image",
    "output_names",
    "to_input",
]

# benchmark datasets (issue 11)
from .samples import BenchmarkDataset, Sample, open_dataset

__all__ += ["BenchmarkDataset", "Sample", "open_dataset"]
