"""Keras layers and the graph operands they propagate over.

Three graph operands share one interface, ``graph.matmul(x, rows=None) -> (graph @ x)[rows]``:

* :class:`CSRGraph`: a fixed sparse matrix (the normalized user-item graph). It multiplies with
  the CSR kernel ``tf.raw_ops.SparseMatrixMatMul``, about 6x faster on CPU than
  ``tf.sparse.sparse_dense_matmul``, under a custom gradient that applies the transpose (the
  matrix itself when symmetric), so gradients are exact. The CSR matrix is built with
  TensorFlow's private ``sparse_csr_matrix_ops`` module; if a TensorFlow release moves it, the
  graph falls back to ``tf.sparse.sparse_dense_matmul`` (same values, slower).
* :class:`NeighborGraph`: a graph with a fixed number of neighbours per row (the kNN item-item
  graph) whose edge values are tensors and may carry gradients (learned modality weights, edge
  masks). It computes only the rows asked for (in training, the batch's items), so its
  ``[rows, width, dim]`` intermediate stays far below ``[edges, dim]``.
* :class:`ResampledGraph`: a symmetric sparse matrix with a fixed number of entries whose
  entries are replaced between steps (FREEDOM's pruned user-item graph, resampled each epoch).

:class:`GraphPropagation` is the one propagation layer every graph model uses. The MLP layers
are :class:`ModalityProjection` (raw features to ``Z^k``), :class:`EdgeMasker` (IBMRec's edge
keep probabilities), :class:`FusionMLP` and :class:`PairCritic` (MRdIB's fusion and
Donsker-Varadhan critic).
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
import keras
# The CSR wrapper attaches shape and dtype metadata to the CSR variant tensor, which lets a
# CSR matrix built once, eagerly, be captured by every tf.function instead of being rebuilt from
# COO indices on every call (~3 ms per training step on TikTok). It is not public API: guard it.
try:
    from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops as _csr_ops
except ImportError:  # pragma: no cover - depends on the TensorFlow release
    _csr_ops = None


def csr_kernel_available() -> bool:
    """Whether :class:`CSRGraph` can use the CSR kernel (else ``sparse_dense_matmul``)."""
    return _csr_ops is not None


def replica_device() -> str | None:
    """The device of the current ``tf.distribute`` replica when there are several, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    try:
        devices = tf.nest.flatten(context.devices or [])
    except (AttributeError, IndexError):  # a replica context without local devices to name
        # (a multi-worker replica: one per worker, on that worker's default device)
        return None
    return devices[0] if devices else None


class PerDevice:
    """Constant tensors (any nest) with one copy on each replica's device, made on first use.

    A model's graphs and features are built once, on the default device; a replica on another
    device would otherwise read them from there at every step. ``get()`` returns the copy on
    the current replica's device (the original outside a multi-replica strategy).
    """

    def __init__(self, value, *, copy=None, copy_on_default: bool = False):
        """``copy(value)`` makes a device's copy (default: ``tf.identity`` of each tensor);
        ``copy_on_default``: make one on the default device too, instead of returning
        ``value`` there (for values that are recipes rather than tensors)."""
        self._value = value
        self._copy = copy or (lambda v: tf.nest.map_structure(tf.identity, v))
        self._copy_on_default = copy_on_default
        self._copies: dict[str, object] = {}

    def get(self):
        device = replica_device()
        if device is None and not self._copy_on_default:
            return self._value
        key = device or ""
        if key not in self._copies:
            with tf.init_scope(), (tf.device(device) if device else contextlib.nullcontext()):
                self._copies[key] = self._copy(self._value)
        return self._copies[key]

    @property
    def devices(self) -> list[str]:
        """The replica devices that hold a copy (for tests)."""
        return sorted(key for key in self._copies if key)


class CSRGraph:
    """A fixed sparse ``[rows, cols]`` matrix multiplied with the CSR kernel.

    ``use_csr_kernel=False`` (or a TensorFlow without the CSR module) multiplies with
    ``tf.sparse.sparse_dense_matmul`` instead, under the same exact custom gradient.
    """

    def __init__(self, matrix: sp.spmatrix, *, symmetric: bool | None = None,
                 use_csr_kernel: bool | None = None):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sum_duplicates()
        matrix.sort_indices()
        self.shape = matrix.shape
        if symmetric is None:
            symmetric = matrix.shape[0] == matrix.shape[1] and abs(matrix - matrix.T).max() < 1e-6 \
                if matrix.nnz else True
        self.symmetric = bool(symmetric)
        self.nnz = int(matrix.nnz)
        if use_csr_kernel is None:
            use_csr_kernel = csr_kernel_available()
        elif use_csr_kernel and not csr_kernel_available():
            raise ValueError("this TensorFlow has no CSR sparse-matrix module")
        self.uses_csr_kernel = bool(use_csr_kernel)
        with tf.init_scope():  # eager even when first used inside a tf.function
            coo = (self._to_sparse_tensor(matrix),
                   None if self.symmetric else self._to_sparse_tensor(matrix.T.tocsr()))

        def operands(pair):  # (forward, backward) in this kernel's format, on this device
            convert = self._from_sparse_tensor if self.uses_csr_kernel else tf.sparse.reorder
            forward = convert(pair[0])
            return forward, forward if pair[1] is None else convert(pair[1])

        with tf.init_scope():
            self._operands = PerDevice(operands(coo), copy=lambda _: operands(coo))

    @staticmethod
    def _to_sparse_tensor(matrix: sp.csr_matrix) -> tf.sparse.SparseTensor:
        coo = matrix.tocoo()
        order = np.lexsort((coo.col, coo.row))
        return tf.sparse.SparseTensor(
            np.stack([coo.row[order], coo.col[order]], 1).astype(np.int64),
            coo.data[order].astype(np.float32), np.asarray(matrix.shape, np.int64))

    @staticmethod
    def _from_sparse_tensor(sparse: tf.sparse.SparseTensor):
        return _csr_ops.CSRSparseMatrix(sparse)._matrix

    def matmul(self, x, rows=None):
        """``(A @ x)[rows]`` with the exact gradient ``A^T @ upstream`` (``A`` itself if symmetric).

        The product is computed for every row and then gathered: restricting it to a batch's
        rows was measured slower on TikTok and Sports (a batch's users and items are the
        heavy ones, and their entries are a large part of the graph).
        """
        forward, backward = self._operands.get()
        if self.uses_csr_kernel:
            def product(matrix, dense):
                return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=dense)
        else:
            product = tf.sparse.sparse_dense_matmul

        @tf.custom_gradient
        def spmm(dense):
            def grad(upstream):
                return product(backward, upstream)
            return product(forward, dense), grad

        out = spmm(x)
        return out if rows is None else tf.gather(out, rows)


class NeighborTable:
    """A fixed ``[n, width]`` table of row ids, gathered with a fast exact gradient.

    ``gather(params)`` is ``tf.gather(params, table)``. TensorFlow's gradient of a gather adds the
    upstream rows into ``params``' shape with ``UnsortedSegmentSum``, a single-threaded kernel
    that took 19 ms per IBMRec step on Sports for the edge masker's ``[18,357, 20, 8]`` gather
    and 5 ms for each ``[18,357, 20]`` degree gather of the normalization (2 threads). Since the
    table never changes, that sum is a fixed sparse product, ``T @ upstream`` with
    ``T[j, e] = 1`` where flat entry ``e`` of the table is ``j``: one :class:`CSRGraph` built
    once, multithreaded (about 3 ms and under 1 ms there).
    """

    def __init__(self, table, num_rows: int):
        table = np.asarray(table, np.int64)
        self.shape = table.shape
        self.num_rows = int(num_rows)
        with tf.init_scope():
            self._ids = PerDevice(tf.constant(table.astype(np.int32)))
        flat = table.reshape(-1)
        incidence = sp.csr_matrix((np.ones(len(flat), np.float32), (flat, np.arange(len(flat)))),
                                  shape=(self.num_rows, len(flat)))
        self._sum_into_rows = CSRGraph(incidence, symmetric=False)

    def gather(self, params):
        """``tf.gather(params, table)``: ``[num_rows, ...]`` -> ``[n, width, ...]``."""
        entries = int(np.prod(self.shape))

        @tf.custom_gradient
        def gather(values):
            def grad(upstream):
                flat = tf.reshape(upstream, [entries, -1])
                return tf.reshape(self._sum_into_rows.matmul(flat), tf.shape(values))
            return tf.gather(values, self._ids.get()), grad

        return gather(params)


def gather_table(params, table):
    """``tf.gather(params, table)`` for a tensor ``table`` or a :class:`NeighborTable`."""
    return table.gather(params) if isinstance(table, NeighborTable) else tf.gather(params, table)


class NeighborGraph:
    """A ``[n, n]`` matrix with ``width`` stored entries per row, values possibly learned.

    Row ``i`` holds ``values[i, c]`` at column ``neighbors[i, c]``; repeated columns add up.

    ``fast_gradient``: the gradient for ``x`` of a product of some rows, ``S_rows^T g``, is one
    CSR product built from those rows' entries. TensorFlow's own gradient of the rows' gather
    adds the upstream rows with the single-threaded ``UnsortedSegmentSum``: 13 ms of an IBMRec
    step on Sports (about 38,000 entries of 192 columns, 2 threads). False keeps TensorFlow's
    (the straightforward formulation; also where the CSR kernel is missing).
    """

    def __init__(self, neighbors, values, *, fast_gradient: bool = False):
        self.neighbors = tf.convert_to_tensor(neighbors, tf.int32)
        self.values = tf.convert_to_tensor(values, tf.float32)
        self.fast_gradient = bool(fast_gradient) and csr_kernel_available()

    @property
    def width(self) -> int:
        return int(self.neighbors.shape[1])

    def matmul(self, x, rows=None, *, chunk_rows: int = 2048):
        """``(S @ x)[rows]``: one ``[rows, width, dim]`` gather, weighted and summed.

        One gather (not one per column) matters for the backward pass: TensorFlow densifies
        each gather's sparse gradient into a full ``[n, dim]`` tensor before adding them up.
        Without ``rows`` every row is computed, ``chunk_rows`` at a time.
        """
        if rows is None:
            n = int(self.neighbors.shape[0])
            return tf.concat([self._rows(x, self.neighbors[s:s + chunk_rows],
                                         self.values[s:s + chunk_rows])
                              for s in range(0, n, chunk_rows)], axis=0)
        return self._rows(x, tf.gather(self.neighbors, rows), tf.gather(self.values, rows))

    def _rows(self, x, neighbors, values):
        if not self.fast_gradient:
            return tf.reduce_sum(values[:, :, None] * tf.gather(x, neighbors), axis=1)

        @tf.custom_gradient
        def rows_product(x, values):
            gathered = tf.gather(x, neighbors)  # [rows, width, dim]
            out = tf.reduce_sum(values[:, :, None] * gathered, axis=1)

            def grad(upstream):
                d_values = tf.reduce_sum(gathered * upstream[:, None, :], axis=2)
                return _transposed_rows_product(neighbors, values, upstream, tf.shape(x)[0]), d_values
            return out, grad

        return rows_product(x, values)

    def to_dense(self) -> np.ndarray:
        """The dense matrix (for tests on small graphs)."""
        n = int(self.neighbors.shape[0])
        dense = np.zeros((n, n), np.float32)
        nbr, val = self.neighbors.numpy(), self.values.numpy()
        for i in range(n):
            np.add.at(dense[i], nbr[i], val[i])
        return dense


def _transposed_rows_product(neighbors, values, upstream, num_columns):
    """``S^T @ upstream`` for the ``[rows, num_columns]`` matrix ``S`` with ``values[r, c]`` at
    column ``neighbors[r, c]`` (repeats add up), as one CSR product.

    The entries are sorted by (column, row) into a ``[num_columns, rows]`` CSR matrix built for
    this call; building it costs a sort of the entries, far less than TensorFlow's scatter-add.
    """
    rows = tf.shape(neighbors, out_type=tf.int64)[0]
    width = tf.shape(neighbors, out_type=tf.int64)[1]
    columns = tf.reshape(tf.cast(neighbors, tf.int64), [-1])
    row_ids = tf.repeat(tf.range(rows), width)
    order = tf.argsort(columns * rows + row_ids, stable=True)
    indices = tf.stack([tf.gather(columns, order), tf.gather(row_ids, order)], axis=1)
    matrix = tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=indices, values=tf.gather(tf.reshape(values, [-1]), order),
        dense_shape=tf.stack([tf.cast(num_columns, tf.int64), rows]))
    return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=upstream)


class ResampledGraph:
    """A symmetric sparse ``[n, n]`` matrix with ``nnz`` entries that :meth:`assign` replaces.

    The entries live in two non-trainable weights of ``owner`` (a Keras layer or model, so that
    checkpoints and ``tf.distribute`` strategies see them like any other variable); a
    ``tf.function`` that multiplies with the graph reads the entries assigned last. Each
    product converts the entries to CSR (``SparseTensorToCSRSparseMatrix``, a copy of the
    entries) and multiplies with the CSR kernel, under the exact gradient of a symmetric
    matrix (the product with itself); without the kernel it falls back to
    ``tf.sparse.sparse_dense_matmul``.
    """

    def __init__(self, owner, name: str, n: int, nnz: int):
        self.shape = (int(n), int(n))
        self.nnz = int(nnz)
        self.indices = owner.add_weight(shape=(self.nnz, 2), dtype="int64", trainable=False,
                                        initializer="zeros", name=f"{name}_indices")
        self.values = owner.add_weight(shape=(self.nnz,), trainable=False, initializer="zeros",
                                       name=f"{name}_values")
        # Attributes of the owner, so that tf.train.Checkpoint tracks them.
        setattr(owner, f"{name}_indices", self.indices)
        setattr(owner, f"{name}_values", self.values)

    def assign(self, matrix: sp.spmatrix) -> None:
        """Replaces the entries with those of ``matrix`` (symmetric, ``nnz`` entries)."""
        coo = sp.coo_matrix(matrix)
        if coo.shape != self.shape or coo.nnz != self.nnz:
            raise ValueError(f"a ResampledGraph of shape {self.shape} with {self.nnz} entries "
                             f"cannot take a {coo.shape} matrix with {coo.nnz}")
        order = np.lexsort((coo.col, coo.row))
        self.indices.assign(np.stack([coo.row[order], coo.col[order]], 1).astype(np.int64))
        self.values.assign(coo.data[order].astype(np.float32))

    def matmul(self, x, rows=None):
        indices = tf.convert_to_tensor(self.indices)
        values = tf.convert_to_tensor(self.values)
        if csr_kernel_available():
            matrix = tf.raw_ops.SparseTensorToCSRSparseMatrix(
                indices=indices, values=values, dense_shape=tf.constant(self.shape, tf.int64))

            def product(dense):
                return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=dense)
        else:
            sparse = tf.sparse.SparseTensor(indices, values, self.shape)

            def product(dense):
                return tf.sparse.sparse_dense_matmul(sparse, dense)

        @tf.custom_gradient
        def spmm(dense):
            return product(dense), product

        out = spmm(x)
        return out if rows is None else tf.gather(out, rows)

    def to_dense(self) -> np.ndarray:
        """The dense matrix (for tests on small graphs)."""
        dense = np.zeros(self.shape, np.float32)
        idx = self.indices.numpy()
        np.add.at(dense, (idx[:, 0], idx[:, 1]), self.values.numpy())
        return dense


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (``y > 0``)."""
    return float(y + np.log(-np.expm1(-y)))


def symmetric_normalize(values, neighbors):
    """``D^-1/2 S D^-1/2`` for a :class:`NeighborGraph`'s values, with ``D`` the row sums (Eq. 11).

    ``neighbors``: the ``[n, width]`` column ids, a tensor or a :class:`NeighborTable`. Rows
    that sum to zero stay zero.
    """
    degree = tf.reduce_sum(values, axis=1)
    inv_sqrt = tf.where(degree > 0, tf.math.rsqrt(tf.maximum(degree, 1e-12)), 0.0)
    return values * inv_sqrt[:, None] * gather_table(inv_sqrt, neighbors)


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class GraphPropagation(keras.layers.Layer):
    """LightGCN-style propagation without weights or nonlinearity (Eq. 6-7 and Eq. 11).

    ``E^{l+1} = G E^l`` for ``l = 0 .. num_layers - 1``; the output is the mean
    ``1/(L+1) sum_{l=0}^{L} E^l`` (``combine='mean'``, Eq. 7) or the last layer ``E^L``
    (``combine='last'``, Eq. 11).

    Args:
      num_layers: number of propagation steps ``L`` (0 returns the input, or its rows).
      combine: ``'mean'`` or ``'last'``.

    Call arguments:
      embeddings: ``[n, dim]`` input embeddings ``E^0``.
      graph: a :class:`CSRGraph` or :class:`NeighborGraph` (``n x n``).
      rows: optional int tensor; only these output rows are returned. With ``combine='last'``
        the last step computes only these rows.

    Example:
      >>> graph = CSRGraph(scipy.sparse.csr_matrix([[0., 1.], [1., 0.]]))
      >>> GraphPropagation(num_layers=1)(tf.eye(2), graph=graph)  # (I + G) / 2
    """

    def __init__(self, *, num_layers: int, combine: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if combine not in ("mean", "last"):
            raise ValueError(f"combine must be 'mean' or 'last', got {combine!r}")
        self.num_layers = num_layers
        self.combine = combine

    def call(self, embeddings, graph=None, rows=None):
        if self.num_layers == 0:
            return embeddings if rows is None else tf.gather(embeddings, rows)
        step = graph.matmul
        if self.combine == "last":
            h = embeddings
            for _ in range(self.num_layers - 1):
                h = step(h)
            return step(h, rows)
        h, total = embeddings, embeddings
        for _ in range(self.num_layers):
            h = step(h)
            total = total + h
        out = total / float(self.num_layers + 1)
        return out if rows is None else tf.gather(out, rows)

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers, "combine": self.combine}


@tf.custom_gradient
def tall_matmul(x, kernel):
    """``x @ kernel`` for a tall ``x`` (many rows), with a faster kernel gradient.

    TensorFlow's own gradient computes ``x^T @ dy`` as ``matmul(x, dy, transpose_a=True)``, which
    on CPU is 2-3x slower than ``(dy^T @ x)^T`` when ``x`` is tall and wide (all items' raw
    features: 18,357 x 4,096 on Sports took 200-325 ms against 100 ms). The values are the same.
    """
    def grad(dy):
        return (tf.matmul(dy, kernel, transpose_b=True),
                tf.transpose(tf.matmul(dy, x, transpose_a=True)))
    return tf.matmul(x, kernel), grad


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class ModalityProjection(keras.layers.Layer):
    """One MLP per modality from raw features ``M^k`` to ``Z^k`` (Eq. 21).

    With ``hidden_layers=0`` (the default) each MLP is one affine map ``Z^k = M^k W_k + b_k``,
    as in VBPR and LATTICE; ``hidden_layers=h`` puts ``h`` hidden layers of ``output_dim``
    units with ``activation`` before the output layer.

    The weights are the layer's own (``m{k}_out_kernel``, ``m{k}_hidden{h}_bias``, ...), so the
    layer's dtype policy and a checkpoint of the layer cover them. Under a mixed policy
    (``dtype='mixed_bfloat16'``) the products run in the compute dtype from float32 variables,
    and the outputs are cast back to float32.

    Args:
      input_dims: raw dimension of each modality, in order.
      output_dim: dimension of each ``Z^k``.
      hidden_layers: hidden layers per MLP.
      activation: activation of the hidden layers.
      output_stddev: std of the normal initializer of the output layer's kernel (default:
        Glorot). With unit-norm inputs, ``s`` gives outputs of the scale of an ``N(0, s^2)``
        embedding.
      fast_gradient: compute the kernels' gradients with :func:`tall_matmul` (same values,
        faster for many rows); False uses TensorFlow's own matmul gradient.
      output_bias: initial value of the output layer's bias (0; MRdIB's scale head starts it
        negative so that ``softplus`` of the output starts small).

    Call: a list of ``[n, input_dims[k]]`` tensors -> a list of ``[n, output_dim]`` float32
    tensors.
    """

    def __init__(self, *, input_dims, output_dim: int = 64, hidden_layers: int = 0,
                 activation: str = "leaky_relu", output_stddev: float | None = None,
                 fast_gradient: bool = True, output_bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.fast_gradient = bool(fast_gradient)
        self.output_bias = float(output_bias)
        self.input_dims = [int(d) for d in input_dims]
        self.output_dim = int(output_dim)
        self.hidden_layers = int(hidden_layers)
        self.activation = activation
        self.output_stddev = output_stddev
        if self.hidden_layers < 0:
            raise ValueError(f"hidden_layers must be >= 0, got {hidden_layers}")
        self._activation_fn = keras.activations.get(activation)
        # Attribute names of each modality's (kernel, bias) pairs, input to output. Names, not
        # the variables: a list of variables would not be tracked for tf.train.Checkpoint.
        self._weight_names: list[list[tuple[str, str]]] = []

    def build(self, input_shape=None):
        for k, dim in enumerate(self.input_dims):
            names = []
            fan_in = dim
            for h in range(self.hidden_layers + 1):
                out = h == self.hidden_layers
                prefix = f"m{k}_out" if out else f"m{k}_hidden{h}"
                init = "glorot_uniform" if not out or self.output_stddev is None else \
                    keras.initializers.RandomNormal(stddev=self.output_stddev)
                setattr(self, f"{prefix}_kernel", self.add_weight(
                    shape=(fan_in, self.output_dim), initializer=init, name=f"{prefix}_kernel"))
                bias_init = keras.initializers.Constant(self.output_bias) if out else "zeros"
                setattr(self, f"{prefix}_bias", self.add_weight(
                    shape=(self.output_dim,), initializer=bias_init, name=f"{prefix}_bias"))
                names.append((f"{prefix}_kernel", f"{prefix}_bias"))
                fan_in = self.output_dim
            self._weight_names.append(names)
        self.built = True

    def _weights_of(self, k: int):
        return [(getattr(self, kernel), getattr(self, bias)) for kernel, bias in self._weight_names[k]]

    def _matmul(self, x, kernel):
        kernel = tf.cast(tf.convert_to_tensor(kernel), self.compute_dtype)
        return (tall_matmul if self.fast_gradient else tf.matmul)(x, kernel)

    def project(self, k: int, features):
        out = tf.cast(features, self.compute_dtype)
        layers = self._weights_of(k)
        for h, (kernel, bias) in enumerate(layers):
            out = self._matmul(out, kernel) + tf.cast(bias, self.compute_dtype)
            if h + 1 < len(layers):
                out = self._activation_fn(out)
        return tf.cast(out, tf.float32)

    def call(self, features):
        return [self.project(k, m) for k, m in enumerate(features)]

    @property
    def is_affine(self) -> bool:
        return self.hidden_layers == 0

    def project_with_bias_weight(self, k: int, features, bias_weight):
        """``features @ W_k + bias_weight * b_k`` for an affine projection (``hidden_layers=0``).

        A linear propagation ``G`` of projected items is ``G (M W + 1 b) = (G M) W + (G 1) b``:
        with ``features = (G M)[rows]`` and ``bias_weight = (G 1)[rows]`` (``[n, 1]``) this gives
        ``(G Z)[rows]`` without projecting any other row.
        """
        if not self.is_affine:
            raise ValueError("project_with_bias_weight needs an affine projection (hidden_layers=0)")
        (kernel, bias), = self._weights_of(k)
        product = self._matmul(tf.cast(features, self.compute_dtype), kernel)
        return tf.cast(product, tf.float32) + bias_weight * tf.convert_to_tensor(bias)

    def get_config(self):
        return {**super().get_config(), "input_dims": self.input_dims, "output_dim": self.output_dim,
                "hidden_layers": self.hidden_layers, "activation": self.activation,
                "output_stddev": self.output_stddev, "fast_gradient": self.fast_gradient,
                "output_bias": self.output_bias}


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class EdgeMasker(keras.layers.Layer):
    """Keep probability of every item-item edge from its endpoints (Eq. 24).

    ``w_ij = sigmoid(w_2^T relu(W_1 [h_i || h_j] + b_1) + b_2)`` where ``h_i = [z_i || q_i]``.
    ``W_1 [h_i || h_j] = h_i W_a + h_j W_b`` is computed per item, then gathered per edge, so
    the per-edge work is ``O(edges * hidden_units)`` instead of ``O(edges * 2 dim * hidden)``.

    Args:
      hidden_units: width of the hidden layer.
      keep_bias_init: initial ``b_2``; 2.0 starts every edge at keep probability 0.88, close
        to the original graph.

    Call: ``(item_features [n, dim], neighbors [n, width])`` (int ids, or a
    :class:`NeighborTable`) ``-> [n, width]`` logits of the keep probabilities (``w_ij = sigmoid(logit)``); samplers take the logits, which stay finite
    where the probability rounds to 0 or 1.
    """

    def __init__(self, *, hidden_units: int = 32, keep_bias_init: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.keep_bias_init = float(keep_bias_init)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        h = self.hidden_units
        self.w_source = self.add_weight(shape=(dim, h), name="w_source", initializer="glorot_uniform")
        self.w_target = self.add_weight(shape=(dim, h), name="w_target", initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(h,), name="b_hidden", initializer="zeros")
        self.w_out = self.add_weight(shape=(h,), name="w_out", initializer="glorot_uniform")
        self.b_out = self.add_weight(shape=(), name="b_out",
                                     initializer=keras.initializers.Constant(self.keep_bias_init))
        self.built = True

    def call(self, item_features, neighbors):
        source = tf.matmul(item_features, self.w_source) + self.b_hidden  # [n, h]
        target = tf.matmul(item_features, self.w_target)                   # [n, h]
        hidden = tf.nn.relu(source[:, None, :] + gather_table(target, neighbors))
        return tf.tensordot(hidden, self.w_out, axes=1) + self.b_out

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "keep_bias_init": self.keep_bias_init}


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class FusionMLP(keras.layers.Layer):
    """A residual nonlinear fusion of the modalities: ``x + W_2 act(W_1 x + b_1) + b_2``.

    ``x = [Z^1, ..., Z^K]``. A linear fusion (a weighted sum or a linear map of ``x``) cannot
    express an interaction of two modalities, such as a preference decided by the product of a
    visual and an acoustic attribute; the hidden layer can. ``W_2`` and ``b_2`` start at zero,
    so the layer starts as the identity (the backbone's linear fusion).

    Call: ``[n, units]`` -> ``[n, units]``.
    """

    def __init__(self, *, units: int, hidden_units: int = 64, activation: str = "leaky_relu",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.hidden_units = int(hidden_units)
        self.activation = activation
        self._activation_fn = keras.activations.get(activation)

    def build(self, input_shape=None):
        self.w_hidden = self.add_weight(shape=(self.units, self.hidden_units), name="w_hidden",
                                        initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(self.hidden_units,), name="b_hidden",
                                        initializer="zeros")
        self.w_out = self.add_weight(shape=(self.hidden_units, self.units), name="w_out",
                                     initializer="zeros")
        self.b_out = self.add_weight(shape=(self.units,), name="b_out", initializer="zeros")
        self.built = True

    def call(self, x):
        hidden = self._activation_fn(tf.matmul(x, self.w_hidden) + self.b_hidden)
        return x + tf.matmul(hidden, self.w_out) + self.b_out

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden_units": self.hidden_units,
                "activation": self.activation}


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class PairCritic(keras.layers.Layer):
    """A critic ``T(x, y) = w_2^T relu(x W_x + y W_y + b_1)`` of paired rows.

    MRdIB's Donsker-Varadhan estimator of the dependence between two modalities'
    representations (:func:`ibmrec_tf.losses.donsker_varadhan`) scores the batch's pairs and
    pairs with ``y`` shuffled; ``x W_x`` and ``y W_y`` are computed once per row and added for
    every pairing. There is no output bias: the bound does not change when ``T`` is shifted by
    a constant, so such a bias would get a zero gradient (and Adam would move it by the
    rounding of that zero).

    Call: ``(x [n, d_x], y [n, d_y], permutation=None)`` -> ``[n]`` scores of the pairs
    ``(x_i, y_i)``, or of ``(x_i, y_perm[i])``.
    """

    def __init__(self, *, hidden_units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)

    def build(self, input_shape):
        (dx,), (dy,) = [tuple(s)[-1:] for s in input_shape]
        h = self.hidden_units
        self.w_x = self.add_weight(shape=(int(dx), h), name="w_x", initializer="glorot_uniform")
        self.w_y = self.add_weight(shape=(int(dy), h), name="w_y", initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(h,), name="b_hidden", initializer="zeros")
        self.w_out = self.add_weight(shape=(h,), name="w_out", initializer="glorot_uniform")
        self.built = True

    def pair_scores(self, x, y, permutations):
        """Scores of the pairs ``(x_i, y_i)`` and of ``(x_i, y[p[i]])`` for each permutation
        ``p`` in ``permutations``: ``[1 + len(permutations), n]``."""
        hx = tf.matmul(x, self.w_x) + self.b_hidden
        hy = tf.matmul(y, self.w_y)
        pairs = [hx + hy] + [hx + tf.gather(hy, p) for p in permutations]
        hidden = tf.nn.relu(tf.stack(pairs))
        return tf.tensordot(hidden, self.w_out, axes=1)

    def call(self, x, y, permutation=None):
        return self.pair_scores(x, y, [] if permutation is None else [permutation])[-1]

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}
