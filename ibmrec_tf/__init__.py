"""ibmrec_tf: IBMRec (information-bottleneck denoised multimedia recommendation) in TensorFlow 2 / Keras."""

# 0.2.0: checkpoints of IBMRec without GIB hold the sampling seed; the HSIC sample changed.
__version__ = "0.2.0"
