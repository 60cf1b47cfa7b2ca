"""advinv_jax: sensitivity and invariance in adversarial vulnerability, in JAX."""
from setuptools import find_packages, setup

setup(
    name="advinv_jax",
    version="0.1.0",
    description=("Invertible networks, iCE and differential training, compiled "
                 "attacks: the two sides of adversarial vulnerability in JAX."),
    # configs, experiments and benchmarks are packages too, so `python -m
    # experiments.<name>` (and `python experiments/<name>.py`) work anywhere.
    packages=find_packages(include=["advinv_jax", "advinv_jax.*", "configs",
                                    "experiments", "benchmarks"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7.0",
        "flax>=0.10.0",
        "optax>=0.2.4",
        "chex>=0.1.88",
        "ml_collections>=1.0.0",
        "tensorflow-datasets>=4.9.6",
        "importlib_resources>=6.0",  # tfds 4.9.10 imports it without declaring it
        "orbax-checkpoint>=0.11.0",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "tensorboardX>=2.6",
        "tqdm>=4.60",
        "numpy>=1.26",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100"],
    },
)
