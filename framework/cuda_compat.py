"""Can this build of an engine run its CUDA code on this GPU with this driver? Read from the build, not assumed.

CTranslate2's library carries, per kernel, compiled code (SASS) for some GPU architectures and PTX for the newest.
A GPU with no SASS of its major architecture (Hopper, compute capability 9.0, with a build for sm_53-sm_86) runs
the PTX, compiled at load time by the driver, which must then know the PTX's ISA version: a CUDA 12.8 PTX needs
an R570 driver, and on R535/R550 every warm-up decode fails. These facts are read from the library's `.nv_fatbin`
containers (the format cuobjdump reads; no CUDA toolkit needed), from an installed library for local servers and
from a wheel when an image is built (written into the image's labels).

Standard library only: scripts/gpu_check.py runs this on a bare GPU machine."""

from __future__ import annotations

import importlib.util
import re
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FATBIN_MAGIC = b"\x50\xed\x55\xba"  # 0xBA55ED50, little endian
FATBIN_PTX, FATBIN_ELF = 1, 2
# PTX ISA version -> the CUDA release that introduced it (the driver must support that CUDA version to JIT it).
PTX_CUDA = {
    (7, 0): (11, 0), (7, 1): (11, 1), (7, 2): (11, 2), (7, 3): (11, 3), (7, 4): (11, 4), (7, 5): (11, 5),
    (7, 6): (11, 6), (7, 7): (11, 7), (7, 8): (11, 8), (8, 0): (12, 0), (8, 1): (12, 1), (8, 2): (12, 2),
    (8, 3): (12, 3), (8, 4): (12, 4), (8, 5): (12, 5), (8, 6): (12, 7), (8, 7): (12, 8), (8, 8): (12, 9),
    (9, 0): (13, 0),
}  # fmt: skip
# The first driver branch that supports each CUDA version (NVIDIA's release notes): named in the fix.
DRIVER_BRANCH = {
    (11, 8): "R520", (12, 0): "R525", (12, 1): "R530", (12, 2): "R535", (12, 3): "R545", (12, 4): "R550",
    (12, 5): "R555", (12, 6): "R560", (12, 7): "R565", (12, 8): "R570", (12, 9): "R575", (13, 0): "R580",
}  # fmt: skip
# Labels `asrpro images build --cuda` writes into a CUDA image: what its engine's CUDA code needs.
LABEL_SASS = "org.asrpro.cuda.sass"  # "53,60,...,86": the architectures with compiled code
LABEL_PTX = "org.asrpro.cuda.ptx"  # "86:8.7": the PTX's target architecture and ISA version
LABEL_RUNTIME = "org.asrpro.cuda.runtime"  # "12.4": the CUDA version a runtime-linked build (onnxruntime) needs


@dataclass(frozen=True)
class CudaBuild:
    """What a library's CUDA code needs: SASS architectures (86 = sm_86), the PTX target and ISA, or (for a build
    that links the CUDA runtime dynamically) the CUDA version it was built for."""

    sass: tuple[int, ...] = ()
    ptx_arch: int = 0
    ptx_version: tuple[int, int] = (0, 0)
    runtime: tuple[int, int] = (0, 0)

    def labels(self) -> dict[str, str]:
        labels = {}
        if self.sass or self.ptx_arch:
            labels[LABEL_SASS] = ",".join(map(str, self.sass))
            labels[LABEL_PTX] = f"{self.ptx_arch}:{self.ptx_version[0]}.{self.ptx_version[1]}" if self.ptx_arch else ""
        if self.runtime != (0, 0):
            labels[LABEL_RUNTIME] = version_text(self.runtime)
        return labels

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> CudaBuild | None:
        """None for an image built before these labels existed (nothing known: not checked)."""
        if LABEL_SASS not in labels and LABEL_RUNTIME not in labels:
            return None
        sass = tuple(int(a) for a in labels.get(LABEL_SASS, "").split(",") if a)
        arch, _, ptx = labels.get(LABEL_PTX, "").partition(":")
        return cls(
            sass=sass,
            ptx_arch=int(arch or 0),
            ptx_version=parse_version(ptx) if ptx else (0, 0),
            runtime=parse_version(labels[LABEL_RUNTIME]) if labels.get(LABEL_RUNTIME) else (0, 0),
        )

    def describe(self) -> str:
        parts = []
        if self.sass:
            parts.append("kernels for " + ", ".join(f"sm_{a}" for a in self.sass))
        if self.ptx_arch:
            parts.append(f"PTX {version_text(self.ptx_version)} for sm_{self.ptx_arch}")
        if self.runtime != (0, 0):
            parts.append(f"built for CUDA {version_text(self.runtime)}")
        return "; ".join(parts) or "no CUDA code"


def parse_version(text: str) -> tuple[int, int]:
    """'12.2' or NVML's 12020 -> (12, 2); '' -> (0, 0)."""
    text = text.strip()
    if not text:
        return (0, 0)
    if "." not in text:
        number = int(text)
        return (number // 1000, number % 1000 // 10)
    major, _, minor = text.partition(".")
    return (int(major), int(minor.split(".")[0] or 0))


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def read_fatbins(data: bytes) -> CudaBuild:
    """The architectures of a library's fatbin containers: each a 16-byte header (magic, version, header size,
    payload size), then entries with their own headers (kind 1 = PTX, 2 = ELF; ISA version; target sm)."""
    sass: set[int] = set()
    ptx: set[tuple[int, tuple[int, int]]] = set()
    start = data.find(FATBIN_MAGIC)
    while 0 <= start <= len(data) - 16:
        _, version, header_size, payload_size = struct.unpack_from("<IHHQ", data, start)
        if version != 1 or header_size != 16:  # the magic's bytes by chance, not a container
            start = data.find(FATBIN_MAGIC, start + 4)
            continue
        entry, end = start + header_size, min(start + header_size + payload_size, len(data))
        while entry + 32 <= end:
            kind, _, entry_header, size, _, _, minor, major, arch = struct.unpack_from("<HHIQIIHHI", data, entry)
            if entry_header == 0:
                break  # the rest of this container is padding
            if kind == FATBIN_ELF:
                sass.add(arch)
            elif kind == FATBIN_PTX:
                ptx.add((arch, (major, minor)))
            entry += entry_header + size
        start = data.find(FATBIN_MAGIC, max(end, start + 16))
    newest = max(ptx, default=(0, (0, 0)))
    return CudaBuild(sass=tuple(sorted(sass)), ptx_arch=newest[0], ptx_version=newest[1])


def ctranslate2_library() -> Path | None:
    """The installed libctranslate2 (in the wheel's ctranslate2.libs/, or beside the package), None without it."""
    spec = importlib.util.find_spec("ctranslate2")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    for directory in (package.parent / "ctranslate2.libs", package):
        found = sorted(directory.glob("libctranslate2*.so*"))
        if found:
            return found[0]
    return None


@lru_cache(maxsize=4)
def _library_build(path: str, mtime: float) -> CudaBuild:
    return read_fatbins(Path(path).read_bytes())


def installed_ctranslate2() -> CudaBuild | None:
    library = ctranslate2_library()
    return None if library is None else _library_build(str(library), library.stat().st_mtime)


ORT_CUDA = re.compile(r"""^cuda_version\s*=\s*['"]([0-9.]+)['"]""", re.MULTILINE)


def installed_onnxruntime() -> CudaBuild | None:
    """The CUDA version the installed onnxruntime was built for; None for the CPU build (no cuda_version)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    info = Path(next(iter(spec.submodule_search_locations))) / "capi" / "build_and_package_info.py"
    found = ORT_CUDA.search(info.read_text()) if info.is_file() else None
    return CudaBuild(runtime=parse_version(found.group(1))) if found else None


def wheel_build(wheel: Path) -> CudaBuild | None:
    """What a ctranslate2 or onnxruntime-gpu wheel's CUDA code needs (for an image's labels), None for others."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if re.search(r"/libctranslate2[^/]*\.so", name):
                return read_fatbins(archive.read(name))
            if name.endswith("onnxruntime/capi/build_and_package_info.py"):
                found = ORT_CUDA.search(archive.read(name).decode())
                return CudaBuild(runtime=parse_version(found.group(1))) if found else None
    return None


def problem(build: CudaBuild, capability: str, driver_cuda: str, what: str) -> str:
    """'' when `build` can run on a GPU of this compute capability ("9.0") with a driver supporting this CUDA
    version ("12.2"); else why not and the fix. An unknown capability or driver ('') is not checked."""
    driver = parse_version(driver_cuda)
    if build.runtime != (0, 0):
        if driver != (0, 0) and driver[0] < build.runtime[0]:
            return (
                f"{what} is built for CUDA {version_text(build.runtime)} and this driver supports CUDA "
                f"{version_text(driver)}: install a driver for CUDA {build.runtime[0]} "
                f"({DRIVER_BRANCH.get((build.runtime[0], 0), 'newer')} or newer) or a build for CUDA {driver[0]}"
            )
        return ""
    if not capability or not (build.sass or build.ptx_arch):
        return ""
    major, minor = parse_version(capability)
    arch = major * 10 + minor
    ptx_needs = PTX_CUDA.get(build.ptx_version) if build.ptx_arch else None
    if build.ptx_arch and ptx_needs is None:
        return f"{what} carries PTX {version_text(build.ptx_version)}, newer than any CUDA this check knows"
    # Compiled code runs on GPUs of its major architecture with the same or a higher minor number.
    if any(a // 10 == major and a <= arch for a in build.sass):
        needs = ptx_needs or (0, 0)  # no PTX: the toolkit's CUDA major is not in the build; not checked
        if driver != (0, 0) and driver[0] < needs[0]:
            return (
                f"{what} needs a driver for CUDA {needs[0]} and this one supports CUDA {version_text(driver)}: "
                f"install {DRIVER_BRANCH.get((needs[0], 0), 'a newer driver')} or newer"
            )
        return ""
    kernels = build.describe()
    if not build.ptx_arch or build.ptx_arch > arch:
        return f"{what} has no code for this GPU (compute capability {capability}; {kernels})"
    assert ptx_needs is not None
    needs = ptx_needs
    if driver != (0, 0) and driver < needs:
        branch = DRIVER_BRANCH.get(needs, "a newer driver")
        return (
            f"{what} has no compiled kernels for this GPU (compute capability {capability}; {kernels}): the driver "
            f"must compile its PTX, which needs CUDA {version_text(needs)}, and this driver supports CUDA "
            f"{version_text(driver)}: install an NVIDIA driver {branch} or newer"
        )
    return ""


def needs_jit(build: CudaBuild | None, capability: str) -> bool:
    """Whether this GPU has no compiled code in `build`, so the driver compiles its PTX at the first start (minutes
    on Hopper without a kernel cache). False when unknown."""
    if build is None or not capability or not build.ptx_arch:
        return False
    major, minor = parse_version(capability)
    return not any(a // 10 == major and a <= major * 10 + minor for a in build.sass)


# CTranslate2's own message when the driver cannot load its PTX, and when no code fits the GPU: raised by the
# warm-up decode. The model server's /health then says `cause: gpu`, and the start fails with it.
TOOLCHAIN_ERRORS = re.compile(
    r"unsupported toolchain|no kernel image is available|PTX JIT compil|invalid device function|"
    r"CUDA driver version is insufficient",
    re.IGNORECASE,
)
