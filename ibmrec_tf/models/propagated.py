"""VLightGCN's fast training path: the raw features propagated once, the batch's rows projected.

The user-item propagation ``G`` is linear and so is an affine projection, so the content
columns of the propagated items are ``G [0; M W + 1 b] = (G [0; M]) W + (G [0; 1]) b``: with
``G [0; M]`` computed once, a training step projects only its batch's rows instead of every
item. :class:`PropagatedRawFeatures` is that path, mixed into
:class:`~ibmrec_tf.models.multimodal.MultimodalRecommender` (it reads the backbone's user-item
graph, embeddings and item content); ``--straightforward`` turns it off, and
``tests/test_formulations.py`` checks it against the straightforward formulation.
"""

from __future__ import annotations

import tensorflow as tf

from ibmrec_tf.layers import PerDevice
from ibmrec_tf.models.base import ForwardResult, node_rows


class PropagatedRawFeatures:
    """The propagated-raw-features path of a multimodal backbone (see the module docstring)."""

    _propagated_features = None

    def propagates_raw_features(self, users=None, items=None, z_all=None,
                                training=False) -> bool:
        """Whether a forward pass for these rows propagates raw features instead of ``Z``.

        The user-item propagation ``G`` is linear and so is an affine projection, so the
        content columns of the propagated items are ``G [0; M W + 1 b] = (G [0; M]) W +
        (G [0; 1]) b``: with ``G [0; M]`` computed once, a training step projects only its
        batch's rows instead of every item. That holds for VLightGCN (and IBMRec on it); the
        item-item graph reads every item's ``Z`` (and its edge weights change each step), and a
        hidden projection layer is not linear, so those project every item. Nor does it hold for
        sampled projections (each item's noise would have to be propagated) or a fusion MLP.
        """
        return (self.content and self.user_item_graph and not self.item_item_graph
                and users is not None and items is not None and z_all is None
                and self.projection.is_affine and not self.config.straightforward
                and not (self.item_content.stochastic and training) and self.item_content.fusion is None)

    def propagated_features(self, chunk_columns: int = 512):
        """``([G [0; M^1], ..., G [0; M^K]], G [0; 1])``: raw features through the user-item graph.

        Computed once, eagerly, on first use (``[num_users + num_items, dim_k]`` per modality,
        in column chunks to bound the temporary memory).
        """
        if self._propagated_features is None:
            with tf.init_scope():
                def propagate(item_columns):
                    padded = tf.concat([tf.zeros([self.num_users, item_columns.shape[1]]),
                                        item_columns], axis=0)
                    return self.ui_propagation(padded, graph=self.ui_graph)

                features = [tf.concat([propagate(m[:, c:c + chunk_columns])
                                       for c in range(0, int(m.shape[1]), chunk_columns)], axis=1)
                            for m in self.raw_features]
                bias_weight = propagate(tf.ones([self.num_items, 1]))
            self._propagated_features = PerDevice((features, bias_weight))
        return self._propagated_features.get()

    def _forward_propagated_features(self, users, items) -> ForwardResult:
        """The training forward pass of VLightGCN that projects only the batch's rows.

        The ID and user-content columns are propagated as usual, with the items' content
        columns left at zero; the propagated item content is added to the batch's rows from
        :meth:`propagated_features` (see :meth:`propagates_raw_features`).
        """
        d = self.config.embedding_dim
        user_ego = tf.concat([self.user_embedding, self.user_content], axis=1)
        item_ego = tf.concat([self.item_embedding,
                              tf.zeros([self.num_items, self.content_dim])], axis=1)
        final = self.ui_propagation(tf.concat([user_ego, item_ego], axis=0), graph=self.ui_graph)
        user_rows, item_rows = node_rows(self.num_users, self.num_items, users, items)
        rows = tf.concat([user_rows, item_rows], axis=0)
        features, bias_weight = self.propagated_features()
        weight_rows = tf.gather(bias_weight, rows)
        content = tf.concat([self.projection.project_with_bias_weight(k, tf.gather(f, rows), weight_rows)
                             for k, f in enumerate(features)], axis=1)
        final_rows = tf.gather(final, rows) + tf.pad(content, [[0, 0], [d, 0]])
        num_users = tf.shape(users)[0]
        z_rows = self.item_content.rows(items)[0]
        user_ego_rows, item_ego_rows = self.batch_ego(users, items, z_rows=z_rows)
        return ForwardResult(users=final_rows[:num_users], items=final_rows[num_users:],
                             user_ego=user_ego_rows, item_ego=item_ego_rows,
                             item_base=final_rows[num_users:], z_items=z_rows)
