"""ibmrec_tf: IBMRec (information-bottleneck denoised multimedia recommendation) in TensorFlow 2 / Keras."""

__version__ = "0.1.0"
