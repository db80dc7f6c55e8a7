"""Other libraries' classifiers as models: `timm:NAME` and `hf:NAME` by name, and their model objects.

Importing this package registers the sources (`jittercam.models.register_model_prefix`) and the adapters
that get a timm or Hugging Face model object ready for the methods (`jittercam.load_model(model)`); timm
and transformers are optional (`pip install 'jittercam[timm]'`, `'jittercam[hf]'`) and imported only when
such a model is built or recognised."""
from . import huggingface, timm
from .huggingface import HuggingFaceClassifier

__all__ = ["HuggingFaceClassifier", "huggingface", "timm"]
