"""Teacher-student regression: inputs on the sphere, labels from a small random ReLU teacher.

The generative process:

1. inputs ``x`` uniform on the sphere of radius ``radius`` in ``R^d`` (``radius = √d`` gives
   ``E[x xᵀ] = I``, whitened inputs);
2. a teacher ``y = V relu(U x) + noise_std · ε`` with ``num_teacher_neurons`` unit-norm rows ``u_j``
   in ``U`` (uniform on ``S^{d−1}``), output weights ``V ~ N(0, 1/num_teacher_neurons)`` and
   ``ε ~ N(0, I)``.

Batches are ``{"x": (B, d), "y": (B, out_features), "latents": (B, num_teacher_neurons), "index": (B,)}``
where ``"latents"`` holds the teacher's hidden activations ``relu(U x)``: the ground-truth features a
student should recover. The teacher's weights are the DataModule attributes
:attr:`TeacherStudentDataModule.teacher_hidden_weight` (``U``) and
:attr:`TeacherStudentDataModule.teacher_output_weight` (``V``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lit_repr.data.base import ArrayDataModule
from lit_repr.data.latent import uniform_on_sphere

__all__ = ["TeacherStudentDataModule"]


def _is_number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


class TeacherStudentDataModule(ArrayDataModule):
    """Inputs on the sphere labelled by a random ReLU teacher, with the teacher's activations as ground truth.

    Everything (teacher, inputs, noise) is a deterministic function of ``seed``; the teacher is
    built at construction, the samples in :meth:`setup`.

    Args:
        in_features: input dimension ``d``.
        num_teacher_neurons: hidden neurons of the teacher.
        out_features: teacher outputs.
        noise_std: standard deviation of the Gaussian label noise (``>= 0``).
        radius: radius of the input sphere (``> 0``); default ``1``, the unit sphere.
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        batch_size: samples per batch (``num_train`` or more gives full-batch training).
        eval_batch_size: batch size of evaluation loaders (default ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of the teacher, the inputs and the noise.

    Example:
        >>> dm = TeacherStudentDataModule(in_features=5, num_teacher_neurons=3, num_train=64, batch_size=16)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> b["x"].shape, b["y"].shape, b["latents"].shape
        (torch.Size([16, 5]), torch.Size([16, 1]), torch.Size([16, 3]))
    """

    def __init__(
        self,
        in_features: int = 10,
        num_teacher_neurons: int = 4,
        out_features: int = 1,
        noise_std: float = 0.0,
        radius: float = 1.0,
        num_train: int = 1024,
        num_val: int = 256,
        num_test: int = 256,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=eval_batch_size)
        for name, v, lo in (("in_features", in_features, 1), ("num_teacher_neurons", num_teacher_neurons, 1),
                            ("out_features", out_features, 1), ("num_train", num_train, 1),
                            ("num_val", num_val, 0), ("num_test", num_test, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        if not _is_number(noise_std) or not noise_std >= 0:
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        if not _is_number(radius) or not radius > 0:
            raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
        self._in_features = in_features
        self.num_teacher_neurons = num_teacher_neurons
        self.out_features = out_features
        self.noise_std = float(noise_std)
        self.radius = float(radius)
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        rng = np.random.default_rng([seed, 0])
        U = uniform_on_sphere(num_teacher_neurons, in_features, rng)
        V = rng.standard_normal((out_features, num_teacher_neurons)) / math.sqrt(num_teacher_neurons)
        self.teacher_hidden_weight = torch.from_numpy(U)
        self.teacher_output_weight = torch.from_numpy(V)

    def teacher(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The noiseless teacher on inputs ``x``: ``(outputs V relu(U x), hidden activations relu(U x))``."""
        h = torch.relu(x.to(torch.float64) @ self.teacher_hidden_weight.T)
        return h @ self.teacher_output_weight.T, h

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """Draw ``n`` fresh samples ``{"x", "y", "latents"}``."""
        x = torch.from_numpy(self.radius * uniform_on_sphere(n, self._in_features, rng))
        y, h = self.teacher(x)
        if self.noise_std > 0:
            y = y + self.noise_std * torch.from_numpy(rng.standard_normal(y.shape))
        return {"x": x.float(), "y": y.float(), "latents": h.float()}

    def build_splits(self) -> dict[str, dict[str, Tensor]]:
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
        return {
            name: self.sample(n, np.random.default_rng([self.seed, 1, i]))
            for i, (name, n) in enumerate(sizes.items())
            if n > 0
        }
