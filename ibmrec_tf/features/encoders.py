"""Item feature encoders: Keras Applications for images, KerasHub or TF-IDF for texts.

Every encoder has the same small surface, which :func:`~ibmrec_tf.features.extract.extract`
drives in chunks:

* ``spec``: a JSON-able description (network, weights, sizes) that an interrupted run must
  match to be resumed;
* ``dim``: the feature width;
* ``fit(sources)``: called once with every item's source before encoding (TF-IDF learns its
  vocabulary and projection there; the networks do nothing);
* ``encode(sources) -> (features [n, dim] float32, ok [n] bool)``: ``ok`` is False where a
  source could not be used (an image that does not decode); those rows are zeros.

Weights: ``'imagenet'`` (images) or ``'preset'`` (texts) download the published weights on first
use (Keras caches them under ``~/.keras/``; KerasHub under ``~/.cache/kagglehub/`` or the
Hugging Face cache); ``'none'`` gives randomly initialized weights, seeded by Keras's global
seed (``keras.utils.set_random_seed``), for tests and machines without a network; any other
value is a path to a weights file (``.weights.h5``) of the same network.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

#: ``--image_model`` choices: (Keras Applications constructor, default size, output, width)
IMAGE_MODELS = {
    "vgg16": ("VGG16", 224, "fc2", 4096),
    "resnet50": ("ResNet50", 224, "avg_pool", 2048),
    "efficientnetv2b0": ("EfficientNetV2B0", 224, "avg_pool", 1280),
    "efficientnetv2s": ("EfficientNetV2S", 384, "avg_pool", 1280),
}
_PREPROCESS_MODULES = {"vgg16": "vgg16", "resnet50": "resnet50"}  # EfficientNetV2 has its own
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, package: str, extra: str = "features"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{package} is not installed; install the optional extra: "
                           f"pip install -e \".[{extra}]\"") from None


def _weights_file(weights: str, flag: str) -> str:
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{flag}={weights}: no such weights file (or give "
                                f"{'imagenet' if 'image' in flag else 'preset'} or none)")
    return weights


def _seed_spec(encoder) -> dict:
    """The seed, where it decides the weights (random ones)."""
    return {"seed": encoder.seed} if encoder.weights == "none" else {}


@dataclasses.dataclass
class ImageEncoder:
    """A Keras Applications network's image features, decoded and resized with ``tf.data``.

    ``vgg16`` gives the 4096-d ``fc2`` activations (the kind of feature the Amazon sets ship);
    the others their global-average-pooled last feature map. Images are decoded (JPEG, PNG, GIF's
    first frame, BMP, WebP) to RGB, resized to ``image_size`` squared (bilinear, no crop) and
    passed through the network's own preprocessing. A file that does not decode is skipped by
    ``tf.data``'s ``ignore_errors`` and reported as not ok.
    """

    model: str = "vgg16"
    weights: str = "imagenet"
    image_size: int | None = None
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.model not in IMAGE_MODELS:
            raise ValueError(f"image model must be one of {sorted(IMAGE_MODELS)}, got "
                             f"{self.model!r}")
        constructor, default_size, self._output, self.dim = IMAGE_MODELS[self.model]
        if self.image_size is None:
            self.image_size = default_size
        if self.model == "vgg16" and self.image_size != 224:
            raise ValueError(f"vgg16's fc2 features need 224x224 input, got image_size="
                             f"{self.image_size}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        self._constructor = constructor
        self._network = None

    @property
    def spec(self) -> dict:
        return {"kind": "image", "model": self.model, "weights": self.weights,
                "image_size": self.image_size, "dim": self.dim} | _seed_spec(self)

    def fit(self, sources: Sequence[str | None]) -> None:
        del sources

    def _build(self):
        import keras
        import tensorflow as tf

        constructor = getattr(keras.applications, self._constructor)
        weights = {"imagenet": "imagenet", "none": None}.get(self.weights, None)
        keras.utils.set_random_seed(self.seed)  # random weights (and none other) follow it
        size = self.image_size
        if self.model == "vgg16":
            base = constructor(include_top=True, weights=weights)
        else:
            base = constructor(include_top=False, weights=weights, pooling="avg",
                               input_shape=(size, size, 3))
        if self.weights not in ("imagenet", "none"):
            base.load_weights(_weights_file(self.weights, "--image_weights"))
        self._base = base
        network = keras.Model(base.input, base.get_layer(self._output).output) \
            if self.model == "vgg16" else base
        module = _PREPROCESS_MODULES.get(self.model)
        preprocess = getattr(keras.applications, module).preprocess_input if module else None

        # One trace for every batch size (a deep network's trace costs seconds).
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def forward(images):
            x = preprocess(images) if preprocess else images
            return network(x, training=False)

        self._network = forward

    def encode(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        if self._network is None:
            self._build()
        size = self.image_size

        def load(index, path):
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), [size, size])
            return index, tf.ensure_shape(image, [size, size, 3])

        dataset = (tf.data.Dataset.from_tensor_slices((np.arange(len(sources)), list(sources)))
                   .map(load, num_parallel_calls=tf.data.AUTOTUNE)
                   .ignore_errors()
                   .batch(self.batch_size)
                   .prefetch(1))
        features = np.zeros((len(sources), self.dim), np.float32)
        ok = np.zeros(len(sources), bool)
        for index, images in dataset:
            index = index.numpy()
            features[index] = self._network(images).numpy()
            ok[index] = True
        return features, ok


@dataclasses.dataclass
class KerasHubTextEncoder:
    """Mean-pooled token embeddings of a KerasHub text backbone (sentence embeddings).

    ``preset`` is a KerasHub preset name (``bert_base_en_uncased``, ...) or a local preset
    folder (``Backbone.save_to_preset`` and ``Tokenizer.save_to_preset`` write one). Texts are
    tokenized by the preset's own preprocessor, cut to ``max_length`` tokens, and the backbone's
    sequence output is averaged over the real (unpadded) tokens.
    """

    preset: str = "bert_base_en_uncased"
    weights: str = "preset"
    max_length: int = 128
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        keras_hub = require("keras_hub", "KerasHub")
        import keras

        keras.utils.set_random_seed(self.seed)
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            self.preset, sequence_length=self.max_length)
        backbone = keras_hub.models.Backbone.from_preset(
            self.preset, load_weights=self.weights == "preset")
        if self.weights not in ("preset", "none"):
            backbone.load_weights(_weights_file(self.weights, "--text_weights"))
        self._preprocessor, self._backbone = preprocessor, backbone
        self.dim = int(backbone.hidden_dim)
        self._forward = None

    @property
    def spec(self) -> dict:
        return {"kind": "text", "encoder": "keras_hub", "preset": self.preset,
                "weights": self.weights, "max_length": self.max_length,
                "dim": self.dim} | _seed_spec(self)

    def fit(self, sources: Sequence[str | None]) -> None:
        del sources

    def encode(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        if self._forward is None:
            backbone = self._backbone

            @tf.function(reduce_retracing=True)
            def forward(inputs):
                outputs = backbone(inputs, training=False)
                sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
                mask = tf.cast(inputs["padding_mask"], sequence.dtype)[..., None]
                total = tf.reduce_sum(sequence * mask, axis=1)
                return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

            self._forward = forward
        features = np.zeros((len(sources), self.dim), np.float32)
        for start in range(0, len(sources), self.batch_size):
            texts = tf.constant(list(sources[start:start + self.batch_size]))
            inputs = self._preprocessor(texts)
            features[start:start + len(texts)] = tf.cast(self._forward(inputs),
                                                         tf.float32).numpy()
        return features, np.ones(len(sources), bool)


@dataclasses.dataclass
class TfidfTextEncoder:
    """TF-IDF of word uni- and bigrams reduced by a truncated SVD to ``dim`` columns (LSA).

    Needs no download, and is the weaker choice: it knows no word's meaning beyond its
    co-occurrences in this catalog. Fitted on the catalog's own texts, seeded; where the
    vocabulary is smaller than ``dim``, the width is the vocabulary's less one, and ``dim``
    says so.
    """

    dim: int = 384
    seed: int = 0
    max_features: int = 200_000

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"text dim must be >= 1, got {self.dim}")
        self.requested_dim = self.dim
        self._vectorizer = self._svd = None

    @property
    def spec(self) -> dict:
        return {"kind": "text", "encoder": "tfidf", "dim": self.requested_dim,
                "seed": self.seed, "max_features": self.max_features}

    def fit(self, sources: Sequence[str | None]) -> None:
        text = require("sklearn.feature_extraction.text", "scikit-learn")
        decomposition = require("sklearn.decomposition", "scikit-learn")
        corpus = [s for s in sources if s]
        if not corpus:
            raise ValueError("TF-IDF has no text to fit on")
        self._vectorizer = text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
                                                max_features=self.max_features)
        matrix = self._vectorizer.fit_transform(corpus)
        width = min(self.requested_dim, matrix.shape[1] - 1, matrix.shape[0] - 1)
        if width < 1:
            raise ValueError(f"TF-IDF found too few distinct texts or words "
                             f"({matrix.shape[0]} texts, {matrix.shape[1]} terms) for an SVD")
        self._svd = decomposition.TruncatedSVD(n_components=width, random_state=self.seed)
        self._svd.fit(matrix)
        self.dim = width

    def encode(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._svd is None:
            raise RuntimeError("fit the TF-IDF encoder before encoding")
        features = self._svd.transform(self._vectorizer.transform(list(sources)))
        return features.astype(np.float32), np.ones(len(sources), bool)
