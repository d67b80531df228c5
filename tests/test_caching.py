"""Where the preprocessed cases live: bundle.data.caching and train.json's cache keys."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose
from parameterized import parameterized

from bundle.data import cache_mode, cache_size, cached_dataset, load_datalist
from bundle.data.caching import CompactPersistentDataset
from bundle.errors import InputError
from bundle.memory import CACHED_BYTES_PER_VOXEL
from tests.helpers import CONFIGS, TINY_OVERRIDES, TinyDatasetTestCase


def _train_config(dataset: Path, output_dir: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")])
    parser.update({**TINY_OVERRIDES, "dataset_dir": str(dataset), "output_dir": output_dir, **overrides})
    return parser


class TestCacheMode(TinyDatasetTestCase):
    def setUp(self):
        datalist = load_datalist(self.dataset, val_fraction=0.25)
        self.datalist = datalist
        self.items = datalist["training"] + datalist["validation"]

    def test_size_is_read_from_the_headers(self):
        # 32^3 cases at 1 mm, 2 mm: 16^3 voxels each
        cases = len(self.datalist["training"])
        self.assertEqual(
            cache_size(self.datalist["training"], ["flair", "t1", "t1ce", "t2"], [1.0, 1.0, 1.0]),
            cases * 32**3 * CACHED_BYTES_PER_VOXEL,
        )
        self.assertEqual(
            cache_size(self.datalist["training"], ["flair", "t1", "t1ce", "t2"], [2.0, 2.0, 2.0]),
            cases * 16**3 * CACHED_BYTES_PER_VOXEL,
        )

    @parameterized.expand([(64 * 2**30, "memory"), (2**20, "disk")])
    def test_auto_chooses_by_the_machines_memory(self, memory, expected):
        with mock.patch("bundle.data.caching.device_memory", return_value=memory):
            self.assertEqual(cache_mode("auto", self.items, ["flair", "t1", "t1ce", "t2"], [1.0] * 3), expected)

    def test_explicit_modes_are_kept_and_unknown_refused(self):
        for mode in ("memory", "disk", "none"):
            self.assertEqual(cache_mode(mode, self.items, ["flair"], [1.0] * 3), mode)
        with self.assertRaisesRegex(InputError, r"cache must be one of .*'auto'.* got 'ram'"):
            cache_mode("ram", self.items, ["flair"], [1.0] * 3)


class TestCachedDataset(TinyDatasetTestCase):
    def _datasets(self, cache_dir: str, mode: str):
        parser = _train_config(self.dataset, os.path.dirname(cache_dir), cache=mode, cache_dir=cache_dir)
        return parser.get_parsed_content("train::dataset"), parser.get_parsed_content("validate::dataset")

    @parameterized.expand([("memory", CacheDataset), ("disk", CompactPersistentDataset), ("none", Dataset)])
    def test_train_json_builds_the_chosen_dataset(self, mode, kind):
        with tempfile.TemporaryDirectory() as folder:
            train, validate = self._datasets(os.path.join(folder, "cache"), mode)
            self.assertIs(type(train), kind)
            self.assertIs(type(validate), kind)
            samples = train[0]
            self.assertEqual(tuple(samples[0]["image"].shape), (4, 32, 32, 32))
            self.assertEqual(tuple(samples[0]["label"].shape), (3, 32, 32, 32))

    def test_disk_cache_holds_the_brain_crop_with_its_indices_compactly(self):
        with tempfile.TemporaryDirectory() as folder:
            train, _ = self._datasets(os.path.join(folder, "cache"), "disk")
            train[0]
            files = list(Path(folder, "cache").glob("*.pt"))
            self.assertEqual(len(files), 1)
            cached = torch.load(files[0], weights_only=True)
            self.assertIn("label_fg_indices", cached)
            self.assertIn("label_bg_indices", cached)
            self.assertEqual(
                len(cached["label_fg_indices"]) + len(cached["label_bg_indices"]),
                int((cached["image"].abs().sum(0) > 0).sum()),
            )
            # each tensor owns exactly its own voxels: not a view that would save the uncropped volume
            for key in ("image", "label"):
                tensor = cached[key]
                self.assertEqual(tensor.untyped_storage().nbytes(), tensor.numel() * tensor.element_size())

    def test_a_rewritten_file_is_preprocessed_again(self):
        with tempfile.TemporaryDirectory() as folder:
            dataset_dir = Path(folder) / "data"
            dataset_dir.mkdir()
            case = Path(self.dataset) / "SYNTH_0000"
            os.system(f"cp -r {case} {dataset_dir}")
            items = [{m: str(dataset_dir / case.name / f"{case.name}_{m}.nii.gz") for m in ("flair", "t1")}]
            cache_dir = Path(folder) / "cache"
            loader = Compose([])
            dataset = cached_dataset(items, loader, "disk", ["flair", "t1"], cache_dir)
            dataset[0]
            dataset[0]
            self.assertEqual(len(list(cache_dir.glob("*.pt"))), 1)
            image = nib.load(items[0]["flair"])
            nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 2, image.affine), items[0]["flair"])
            dataset[0]
            self.assertEqual(len(list(cache_dir.glob("*.pt"))), 2)


if __name__ == "__main__":
    unittest.main()
