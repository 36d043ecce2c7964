"""ibmrec_tf: IBMRec (information-bottleneck denoised multimedia recommendation) in TensorFlow 2 / Keras."""

# 0.3.1: the training step is traced once; synthetic data at large shapes (data.scaled).
# 0.3.0: every model holds its seed and step counter (checkpoints of 0.2.0 are refused with a
# one-line error), the denoisers are parts with their own checkpoint paths, the sampling seed
# comes from the model's seed instead of NumPy's global state, evaluation scores in float32.
# 0.2.0: checkpoints of IBMRec without GIB hold the sampling seed; the HSIC sample changed.
__version__ = "0.3.1"


def __getattr__(name):
    # ``ibmrec_tf.run`` (ibmrec_tf.orchestration.run), imported on first use: importing the
    # package (its configs, for the runners' flags) does not import TensorFlow.
    if name == "run":
        from ibmrec_tf.orchestration import run

        return run
    raise AttributeError(f"module 'ibmrec_tf' has no attribute {name!r}")
