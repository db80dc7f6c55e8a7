"""Reading images and turning them into model inputs."""
from .images import load_image, to_input

__all__ = ["load_image", "to_input"]
