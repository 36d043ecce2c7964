"""Item features from raw images and texts, for datasets a user brings.

* :mod:`~ibmrec_tf.features.encoders`: :class:`ImageEncoder` (Keras Applications: VGG16's
  ``fc2``, ResNet50, EfficientNetV2), :class:`KerasHubTextEncoder` (mean-pooled KerasHub
  backbones) and :class:`TfidfTextEncoder` (TF-IDF + truncated SVD, no download);
* :mod:`~ibmrec_tf.features.extract`: :func:`extract`, the chunked, resumable driver that writes
  ``<modality>_feat.npy``, ``<modality>_missing.npy`` and ``extract_report.json``.

KerasHub and scikit-learn are optional (``pip install -e ".[features]"``); a missing one raises
:class:`MissingExtra` naming the extra.
"""

from ibmrec_tf.features.encoders import (IMAGE_EXTENSIONS, IMAGE_MODELS, ImageEncoder,
                                         KerasHubTextEncoder, MissingExtra, TfidfTextEncoder)
from ibmrec_tf.features.extract import (MISSING_SUFFIX, REPORT, ExtractError, ExtractResult,
                                        extract, image_sources, item_raw_ids, text_sources)

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_MODELS", "MISSING_SUFFIX", "REPORT", "ExtractError",
           "ExtractResult", "ImageEncoder", "KerasHubTextEncoder", "MissingExtra",
           "TfidfTextEncoder", "extract", "image_sources", "item_raw_ids", "text_sources"]
