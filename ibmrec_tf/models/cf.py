"""Collaborative-filtering backbones: BPR-MF and LightGCN."""

from __future__ import annotations

import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import CSRGraph, GraphPropagation
from ibmrec_tf.models.base import ForwardResult, ModelConfig, Recommender, node_rows, rows_of


class BPRMF(Recommender):
    """Matrix factorization trained with BPR: ``r_ai = <p_a, q_i>``."""

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        self.user_embedding = self._embedding(self.num_users, "P")
        self.item_embedding = self._embedding(self.num_items, "Q")

    def forward(self, users=None, items=None, training=False):
        user_ego = rows_of(self.user_embedding, users)
        item_ego = rows_of(self.item_embedding, items)
        return ForwardResult(users=user_ego, items=item_ego, user_ego=user_ego, item_ego=item_ego)


class LightGCN(Recommender):
    """LightGCN: ``[X; Y] = mean_l (D^-1/2 A D^-1/2)^l [P; Q]`` (Eq. 4-7), ``r_ai = <x_a, y_i>``."""

    SETTINGS = Recommender.SETTINGS + ("n_layers",)

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        self.user_item_graph = CSRGraph(graph_lib.normalized_adjacency(
            dataset.num_users, dataset.num_items, dataset.train), symmetric=True)
        # [P; Q] in one variable: the propagation reads it whole, with no concat or split.
        self.node_embedding = self._embedding(self.num_users + self.num_items, "P_Q")
        self.propagation = GraphPropagation(num_layers=config.n_layers, name="user_item_propagation")

    def forward(self, users=None, items=None, training=False):
        ego = tf.convert_to_tensor(self.node_embedding)
        final = self.propagation(ego, graph=self.user_item_graph)
        user_rows, item_rows = node_rows(self.num_users, self.num_items, users, items)
        return ForwardResult(users=tf.gather(final, user_rows), items=tf.gather(final, item_rows),
                             user_ego=tf.gather(ego, user_rows), item_ego=tf.gather(ego, item_rows))
