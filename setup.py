"""Package of the youtube-8m NetVLAD ensemble (usable as a cloud job's --package-path).

TensorFlow itself is an extra so that the GPU build can be chosen:
  pip install .[cpu]   # tensorflow-cpu
  pip install .[gpu]   # tensorflow with CUDA
(cloud runtimes that ship TensorFlow need neither).
"""

from setuptools import setup

setup(
    name="yt8m-netvlad-ensemble",
    version="0.1.0",
    description="Gated NetVLAD ensembles for YouTube-8M (2nd challenge, 10th place), "
                "tf.compat.v1 rebuild",
    packages=["youtube-8m"],
    package_data={"youtube-8m": ["vocabulary.csv"]},
    python_requires=">=3.9",
    install_requires=["numpy>=1.23", "absl-py>=1.0", "google-cloud-storage>=2.0"],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.15"],
        "gpu": ["tensorflow[and-cuda]>=2.15"],
        "test": ["pytest", "gcp-storage-emulator"],
    },
)
