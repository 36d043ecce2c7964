from setuptools import find_packages, setup

setup(
    name="ibmrec_tf",
    version="0.3.1",
    description="IBMRec (information-bottleneck denoised multimedia recommendation) in TensorFlow 2 / Keras",
    packages=find_packages(include=["ibmrec_tf", "ibmrec_tf.*", "runners", "runners.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Compatible ranges; constraints.txt holds the exact versions CI installs.
        # TensorFlow, tf-keras and TensorBoard move together (one minor version); TFP follows
        # TensorFlow's releases.
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.21,<2.22",  # imported by tensorflow-probability; the models use Keras 3
        "tensorboard>=2.21,<2.22",  # no longer pulled in by TensorFlow 2.21
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "absl-py>=2.1,<3",
    ],
    entry_points={"console_scripts": [
        f"ibmrec-{name.replace('_', '-')}=runners.{name}:console_main"
        for name in ("train", "evaluate", "export", "benchmark", "prepare_data",
                     "extract_features")]},
    extras_require={
        # the features and serving extras' packages are in the test extra too, so CI tests them
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "keras-hub>=0.32,<0.33",
                 "tensorflow-text==2.21.*", "scikit-learn>=1.4",
                 "tensorflow-serving-api>=2.21,<2.22", "faiss-cpu>=1.8", "optuna>=4.9,<6"],
        "plots": ["matplotlib>=3.8"],
        # --knn_method=ivf: approximate kNN item-item graphs
        "knn": ["faiss-cpu>=1.8"],
        # runners.benchmark --study=tune: the seeded hyper-parameter search
        "tune": ["optuna>=4.9,<6"],
        # runners.extract_features: KerasHub text encoders (and tensorflow-text, their
        # tokenizers, pinned to TensorFlow's minor version), TF-IDF with scikit-learn
        "features": ["keras-hub>=0.32,<0.33", "tensorflow-text==2.21.*", "scikit-learn>=1.4"],
        # the SavedModel's TF Serving warm-up requests (PredictionLog protos)
        "serving": ["tensorflow-serving-api>=2.21,<2.22"],
    },
)
