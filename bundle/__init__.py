"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

import importlib
import pkgutil
import sys
from pathlib import Path

from bundle.errors import InputError, InputFileError, install_excepthook

__version__ = "0.1.0"
__all__ = ["BUNDLE_ROOT", "InputError", "InputFileError", "__version__"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
"""The bundle this package belongs to (its ``configs/``, ``models/``, ``jobs/``): the repository root, or an unpacked package."""

_SUBMODULES = frozenset(module.name for module in pkgutil.iter_modules(__path__))


def __getattr__(name: str):
    """``bundle.<module>`` imported on first use, so a config's one ``$import bundle`` reaches all of them."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


UNDER_MONAI_BUNDLE = Path(sys.argv[0]).parts[-3:] == ("monai", "bundle", "__main__.py")
if UNDER_MONAI_BUNDLE:
    # any `python -m monai.bundle <command>` (run, ckpt_export, verify_net_in_out) that imports the bundle's code:
    # a bad file or setting is one line, not a traceback through MONAI's config parser
    install_excepthook()

# a package verified into this folder: its configs and code must still be what its publisher signed; then the
# command line of `python -m monai.bundle run`, whose misspelt keys MONAI would add silently. Every config imports this
# package first, so no other expression of a config has run yet.
from bundle.signing import check_unchanged  # noqa: E402

try:
    check_unchanged(BUNDLE_ROOT)
    if UNDER_MONAI_BUNDLE and sys.argv[1:2] == ["run"]:
        from bundle.settings import check_command_line

        check_command_line()
except InputError as error:
    if not UNDER_MONAI_BUNDLE:
        raise
    # MONAI's config parser imports through optional_import, which would keep only the message and run on; stop here
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(1) from None
