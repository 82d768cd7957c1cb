"""The CUDA libraries CTranslate2 opens at its first GPU call, made loadable by the model server itself.

CTranslate2 4.x (the wheel faster-whisper installs) links CUDA's runtime statically and opens cuBLAS by soname,
`libcublas.so.12` (which needs `libcublasLt.so.12`); it does not use cuDNN (checked with `strings` on
libctranslate2: no cudnn). The driver's `libcuda.so.1` comes from the host. The `gpu` extra installs cuBLAS as
NVIDIA's wheel (`nvidia-cublas-cu12`), whose directory is on no library path: setting LD_LIBRARY_PATH inside a
running process does not change its own dlopen, so the libraries are loaded here by absolute path, RTLD_GLOBAL,
before CTranslate2 asks for them — the dynamic loader then finds them by soname. Standard library only: the
test of the `gpu` extra imports this from a bare venv."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

# In load order: libcublas.so.12 needs libcublasLt.so.12.
SONAMES = ("libcublasLt.so.12", "libcublas.so.12")
WHEEL_PACKAGES = ("nvidia.cublas",)
INSTALL_HINT = "pip install -e '.[gpu]' on the host, or the CUDA image (asrpro images build MODEL --cuda)"


class CudaLibrariesMissing(RuntimeError):
    pass


def wheel_dirs() -> list[Path]:
    """The lib/ directories of NVIDIA's CUDA wheels installed in this environment."""
    found = []
    for name in WHEEL_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            lib = Path(location) / "lib"
            if lib.is_dir():
                found.append(lib)
    return found


def locate() -> dict[str, str]:
    """soname -> where it would load from ("" when nowhere), without loading it (cuBLAS maps ~1 GB)."""
    import ctypes.util

    dirs = wheel_dirs()
    found = {}
    for soname in SONAMES:
        in_wheel = [str(d / soname) for d in dirs if (d / soname).is_file()]
        system = ctypes.util.find_library(soname.removeprefix("lib").split(".so")[0])
        # find_library names one version; another version there does not mean this one is missing: try it.
        found[soname] = in_wheel[0] if in_wheel else ("system" if system and _loadable(soname) else "")
    return found


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def probe() -> dict[str, str]:
    """soname -> the file it loads from ("system" for the loader's own search), or "missing: why"; loads them."""
    result: dict[str, str] = {}
    dirs = wheel_dirs()
    for soname in SONAMES:
        candidates = [str(d / soname) for d in dirs if (d / soname).is_file()] + [soname]
        errors = []
        for candidate in candidates:
            try:
                ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                errors.append(str(exc))
                continue
            result[soname] = candidate if candidate != soname else "system"
            break
        else:
            result[soname] = "missing: " + "; ".join(errors)
    return result


def preload() -> dict[str, str]:
    """Load what CTranslate2 will need on CUDA, or say clearly what is missing and how to get it."""
    loaded = probe()
    missing = [soname for soname, where in loaded.items() if where.startswith("missing")]
    if missing:
        raise CudaLibrariesMissing(f"CUDA libraries not loadable: {', '.join(missing)} ({INSTALL_HINT})")
    return loaded
