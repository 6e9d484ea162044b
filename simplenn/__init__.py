"""simplenn: a two-layer neural network for MNIST, written once against an
array-backend interface on the Python array API standard, and run on NumPy, Numba
(JIT), CuPy (GPU), PyTorch, JAX or any backend a package registers.

Importing simplenn imports NumPy only; a backend's library is imported when that
backend is selected or probed, and onnx when :func:`export_onnx` runs.
"""

from __future__ import annotations

from ._version import __version__
from .backends import BackendInfo, Ops, available_backends, get_backend
from .core.callbacks import CallbackList, CSVLogger, StopOnPlateau, StopTraining
from .core.model import TwoLayerNet, UnscaledPixelsWarning
from .core.training import EpochStats, History, TrainConfig, fit
from .data.datasets import DataSplit, load_idx_dataset, load_mnist
from .errors import (
    BackendUnavailableError,
    DataError,
    DownloadError,
    ModelFileError,
    SimplennError,
    TrainingDivergedError,
    UnknownBackendError,
)
from .io.backend_choice import BackendFallbackWarning
from .io.models import load_model, save_model
from .io.onnx import export_onnx

__all__ = [
    "BackendFallbackWarning",
    "BackendInfo",
    "BackendUnavailableError",
    "CSVLogger",
    "CallbackList",
    "DataError",
    "DataSplit",
    "DownloadError",
    "EpochStats",
    "History",
    "ModelFileError",
    "Ops",
    "SimplennError",
    "StopOnPlateau",
    "StopTraining",
    "TrainConfig",
    "TrainingDivergedError",
    "TwoLayerNet",
    "UnknownBackendError",
    "UnscaledPixelsWarning",
    "__version__",
    "available_backends",
    "export_onnx",
    "fit",
    "get_backend",
    "load_idx_dataset",
    "load_mnist",
    "load_model",
    "save_model",
]
