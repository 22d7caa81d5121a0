"""DataModules with dict batches: embedded defaults, ground-truth generators and real-data loaders."""

from lit_repr.data.activations import ActivationsDataModule, ChunkedActivationsDataset
from lit_repr.data.base import ArrayDataModule, EpochSeededSampler, TensorDictDataset, split_indices
from lit_repr.data.cifar10 import Cifar10DataModule
from lit_repr.data.digits import DigitsDataModule
from lit_repr.data.isic import ISIC2019DataModule
from lit_repr.data.latent import InvertibleMLP, LatentVariableDataModule
from lit_repr.data.medmnist import MedMNISTDataModule
from lit_repr.data.modular import ModularArithmeticDataModule
from lit_repr.data.sparse_coding import SparseCodingDataModule
from lit_repr.data.sprites import SpritesDataModule, render_sprites
from lit_repr.data.teacher_student import TeacherStudentDataModule

__all__ = [
    "ActivationsDataModule", "ChunkedActivationsDataset",
    "ArrayDataModule", "EpochSeededSampler", "TensorDictDataset", "split_indices",
    "DigitsDataModule", "MedMNISTDataModule", "Cifar10DataModule", "ISIC2019DataModule",
    "LatentVariableDataModule", "InvertibleMLP",
    "SpritesDataModule", "render_sprites",
    "SparseCodingDataModule",
    "TeacherStudentDataModule", "ModularArithmeticDataModule",
]
