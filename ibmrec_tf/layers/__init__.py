"""Keras layers and the graph operands they propagate over, one module per role.

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

Modules: :mod:`~ibmrec_tf.layers.sparse` (the graph operands and their custom gradients),
:mod:`~ibmrec_tf.layers.devices` (per-replica copies under ``tf.distribute``),
:mod:`~ibmrec_tf.layers.propagation`, :mod:`~ibmrec_tf.layers.projection` and
:mod:`~ibmrec_tf.layers.heads` (the denoisers' networks). Every name is importable from here.
"""

from ibmrec_tf.layers.devices import PerDevice, replica_device
from ibmrec_tf.layers.heads import EdgeMasker, FusionMLP, PairCritic
from ibmrec_tf.layers.projection import ModalityProjection, inverse_softplus, tall_matmul
from ibmrec_tf.layers.propagation import GraphPropagation
from ibmrec_tf.layers.sparse import (CSRGraph, NeighborGraph, NeighborTable, ResampledGraph,
                                     csr_kernel_available, gather_table, symmetric_normalize)

__all__ = ["PerDevice", "replica_device", "EdgeMasker", "FusionMLP", "PairCritic",
           "ModalityProjection", "inverse_softplus", "tall_matmul", "GraphPropagation",
           "CSRGraph", "NeighborGraph", "NeighborTable", "ResampledGraph",
           "csr_kernel_available", "gather_table", "symmetric_normalize"]
