"""The sparse graph operands, with exact custom gradients: :class:`CSRGraph`,
:class:`NeighborGraph` (with :class:`NeighborTable` gathers) and :class:`ResampledGraph` (see
:mod:`ibmrec_tf.layers`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from ibmrec_tf.layers.devices import PerDevice

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


def is_symmetric(matrix: sp.spmatrix, rtol: float = 1e-6) -> bool:
    """Whether ``matrix`` equals its transpose within ``rtol`` of its largest entry (a relative
    tolerance: an absolute one would call any graph of small entries symmetric)."""
    if matrix.shape[0] != matrix.shape[1]:
        return False
    if not matrix.nnz:
        return True
    scale = abs(matrix).max()
    return bool(abs(matrix - matrix.T).max() <= rtol * scale)


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
            symmetric = is_symmetric(matrix)
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
        if not is_symmetric(coo.tocsr()):
            # the product's gradient is the product with the matrix itself
            raise ValueError("a ResampledGraph's matrix must be symmetric (its gradient is the "
                             "product with itself); this one is not symmetric")
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


#: the smallest degree :func:`symmetric_normalize` divides by (see there)
DEGREE_FLOOR = 1e-4


def symmetric_normalize(values, neighbors):
    """``D^-1/2 S D^-1/2`` for a :class:`NeighborGraph`'s values, with ``D`` the row sums (Eq. 11).

    ``neighbors``: the ``[n, width]`` column ids, a tensor or a :class:`NeighborTable`. Rows
    that sum to zero stay zero. A row whose degree falls below :data:`DEGREE_FLOOR` (a mask
    that drops all of its edges; a kNN row's degree is a sum of similarities, orders of
    magnitude above it) is divided as if its degree were the floor, which bounds the gradient:
    under a floor of 1e-12 a nearly emptied row gave gradients near ``0.5 * 1e-12^-1.5 = 5e17``.
    """
    degree = tf.reduce_sum(values, axis=1)
    inv_sqrt = tf.where(degree > 0, tf.math.rsqrt(tf.maximum(degree, DEGREE_FLOOR)), 0.0)
    return values * inv_sqrt[:, None] * gather_table(inv_sqrt, neighbors)
