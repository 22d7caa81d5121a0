"""DataModules with dict batches: embedded defaults and real-data loaders."""

from lit_repr.data.base import ArrayDataModule, TensorDictDataset, split_indices
from lit_repr.data.digits import DigitsDataModule
from lit_repr.data.medmnist import MedMNISTDataModule

__all__ = ["ArrayDataModule", "TensorDictDataset", "split_indices", "DigitsDataModule", "MedMNISTDataModule"]
