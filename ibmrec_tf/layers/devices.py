"""Device placement under ``tf.distribute``: constants with one copy per replica device."""

from __future__ import annotations

import contextlib

import tensorflow as tf


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
