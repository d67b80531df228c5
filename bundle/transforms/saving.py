"""Saving segmentations so that a failed write is an error and never leaves an empty file under the final name."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.data import NibabelWriter
from monai.transforms import SaveImaged

from bundle.conventions import case_name
from bundle.errors import InputError
from bundle.io import atomic_save

__all__ = ["AtomicNibabelWriter", "AtomicSaveImaged"]

logger = logging.getLogger(__name__)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`bundle.io.atomic_save`: temporary file, fsync, rename."""

    def write(self, filename: Any, verbose: bool = False, **obj_kwargs: Any) -> None:
        atomic_save(filename, lambda temp_name: super(AtomicNibabelWriter, self).write(temp_name, False, **obj_kwargs))
        if verbose:
            logger.info(f"wrote {filename}")


class AtomicSaveImaged(SaveImaged):
    """MONAI's ``SaveImaged`` writing NIfTI atomically, with a one-line error on failure, optionally named by case.

    ``SaveImage`` turns a failed write into a ``RuntimeError`` holding the tracebacks of every writer it
    tried; this transform raises an :class:`InputError` naming the case, the folder and the reason instead,
    and nothing is left under the output's name.

    Args:
        args: as MONAI's ``SaveImaged``.
        name_key: when given, a case is written as ``<output_dir>/<its name_key entry>[_<output_postfix>]<ext>``
            (the BraTS challenge's ``<case_id>.nii.gz`` with an empty postfix) instead of after its input file.
        kwargs: as MONAI's ``SaveImaged``.
    """

    def __init__(self, *args: Any, name_key: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("writer", AtomicNibabelWriter)
        super().__init__(*args, **kwargs)
        self.name_key = name_key

    def _save_by_name(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        layout = self.saver.folder_layout  # MONAI's: output_dir and postfix as given
        name = case_name(d, case_key=self.name_key) + (f"_{layout.postfix}" if layout.postfix else "")
        os.makedirs(layout.output_dir, exist_ok=True)
        for key in self.key_iterator(d):
            self.saver(d[key], filename=str(Path(layout.output_dir, name)))
        return d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        try:
            if self.name_key is not None and self.name_key in data:
                return self._save_by_name(data)
            return super().__call__(data)
        except (RuntimeError, OSError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            source = next(
                (getattr(data[key], "meta", {}).get("filename_or_obj") for key in self.keys if key in data), None
            )
            raise InputError(
                f"could not write the segmentation of {source or 'a case'} to {self.saver.folder_layout.output_dir} "
                f"({lines[-1] if lines else error}); free disk space or point --output_dir at a writable folder, then "
                "run again. Nothing was written under its name."
            ) from None
