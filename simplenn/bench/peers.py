"""PyTorch, the peer a user would otherwise pick, training the very same network.

Imported only by the benchmarks, and it imports ``torch`` only when a torch peer is
probed or built: PyTorch is never a dependency of simplenn. To be a fair comparison
the peer copies simplenn's choices:

- the same parameters to start from (``TwoLayerNet(784, h, 10, seed=seed)``'s numbers),
  the same loss (mean softmax cross-entropy) and the same optimiser
  (``torch.optim.SGD`` with momentum and dampening 0 has simplenn's update rule);
- the same batches in the same order (``numpy.random.default_rng(seed).permutation``),
  taken from a uint8 tensor that lives on the device and converted to float32 one
  batch at a time (``x.float() / 255``), with no DataLoader in between;
- eager mode (no ``torch.compile``) and as many intra-op threads as NumPy's BLAS has.

Its per-step losses go into a tensor on the device and are read back once per epoch,
as :func:`simplenn.fit` does per chunk, so neither side waits for the device per step.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from ..core.model import TwoLayerNet
from .sysinfo import numpy_blas_threads
from .workloads import MOMENTUM, N_CLASSES, N_INPUTS, THROUGHPUT_LR, Contender

_INSTALL_HINT = "pip install torch (optional: a peer in the benchmark, never a dependency)"


def _import_torch() -> Any:
    return importlib.import_module("torch")


def probe(name: str) -> tuple[bool, str | None]:
    """``(available, reason)`` for ``torch-cpu`` or ``torch-cuda``; imports torch if installed."""
    if name not in ("torch-cpu", "torch-cuda"):
        raise ValueError(f"unknown peer {name!r}; valid names are: torch-cpu, torch-cuda")
    if importlib.util.find_spec("torch") is None:
        return False, f"PyTorch is not installed; {_INSTALL_HINT}"
    try:
        torch = _import_torch()
    except Exception as exc:  # a broken install raises assorted errors
        return False, f"PyTorch failed to import ({type(exc).__name__}: {exc})"
    if name == "torch-cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        return False, f"PyTorch {torch.__version__} ({build}) sees no usable CUDA device"
    return True, None


class TorchContender(Contender):
    """The 784-h-10 network and SGD with momentum in PyTorch eager mode (CPU or CUDA)."""

    is_peer = True

    def __init__(
        self,
        name: str,
        hidden: int,
        train_X: np.ndarray,
        train_y: np.ndarray,
        test_X: np.ndarray,
        seed: int = 0,
    ) -> None:
        available, reason = probe(name)
        if not available:
            raise RuntimeError(f"peer {name!r} unavailable: {reason}")
        super().__init__(hidden, train_X, train_y, test_X, seed)
        torch = self.torch = _import_torch()
        self.name = name
        self.device = torch.device("cuda" if name == "torch-cuda" else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(numpy_blas_threads())
        init = TwoLayerNet(N_INPUTS, hidden, N_CLASSES, backend="numpy", seed=seed).parameters()
        self.params = {
            k: torch.tensor(np.array(v), device=self.device, requires_grad=True)
            for k, v in init.items()
        }
        p = self.params
        # simplenn's weight decay applies to W1 and W2 only; the runs here use none.
        self.optimizer = torch.optim.SGD(
            [{"params": [p["W1"], p["W2"]]}, {"params": [p["b1"], p["b2"]], "weight_decay": 0.0}],
            lr=THROUGHPUT_LR,
            momentum=MOMENTUM,
            weight_decay=0.0,
        )
        self.X = torch.tensor(np.array(train_X, dtype=np.uint8), device=self.device)
        self.Y = torch.tensor(np.array(train_y, dtype=np.int64), device=self.device)
        self.test_X = torch.tensor(np.array(test_X, dtype=np.uint8), device=self.device)
        self._rows = torch.arange(self.n_train, device=self.device)
        self.synchronize()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _set_hyperparameters(self, lr: float, momentum: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"], group["momentum"] = lr, momentum

    def _forward(self, x: Any) -> Any:
        p = self.params
        return self.torch.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    def _step(self, rows: Any) -> Any:
        x = self.X[rows].float() / 255  # uint8 -> float32 per batch, as simplenn does
        loss = self.torch.nn.functional.cross_entropy(self._forward(x), self.Y[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train_epoch(
        self,
        batch_size: int,
        n_samples: int | None = None,
        *,
        lr: float = THROUGHPUT_LR,
        momentum: float = MOMENTUM,
    ) -> float:
        torch = self.torch
        n = self._check_n(n_samples, self.n_train)
        self._set_hyperparameters(lr, momentum)
        # A fresh momentum buffer per epoch, as simplenn.fit starts its velocities at 0.
        self.optimizer.state.clear()
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(n)).to(self.device)
        steps = (n + batch_size - 1) // batch_size
        losses = torch.empty(steps, dtype=torch.float64, device=self.device)
        for s in range(steps):
            losses[s] = self._step(order[s * batch_size : (s + 1) * batch_size])
        return float(losses.mean())  # reading it back synchronizes the device

    def train_step(
        self, batch_size: int, *, lr: float = THROUGHPUT_LR, momentum: float = MOMENTUM
    ) -> None:
        self._set_hyperparameters(lr, momentum)
        self._step(self._rows[:batch_size])  # a gather, like an epoch's batches
        self.synchronize()

    def infer(self, batch_size: int, n_samples: int | None = None) -> None:
        n = self._check_n(n_samples, self.n_test)
        with self.torch.inference_mode():
            for i in range(0, n, batch_size):
                x = self.test_X[i : min(n, i + batch_size)].float() / 255
                self._forward(x).argmax(dim=1)
        self.synchronize()
