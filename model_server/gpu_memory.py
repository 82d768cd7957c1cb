"""How many 30-s windows a Whisper model may decode at once on its GPU: from the memory free there, not a constant.

A batch's memory grows with the number of windows in it, the beam and the model's width and depth: one window of
large-v3 at beam 5 holds about 740 MB (mostly the decoder's cross-attention keys and values over the encoder's 1500
positions, in every layer), one of tiny.en about 80 MB (mostly the encoder's attention scores). A constant batch
size either wastes an 80-GB card or runs a 16-GB one out of memory. So each batch is sized by what is free on the
device when it starts (NVML: other processes and models count), less a reserve for CUDA's own workspaces, divided
among the server's workers; a batch that still meets CUDA's out-of-memory error is split (model_server/batcher.py).

Standard library only: scripts/gpu_check.py's offline check imports it beside a bare ctranslate2."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("model_server")

ENCODER_POSITIONS = 1500  # a 30-s window's encoder output
TEXT_POSITIONS = 448  # the decoder's longest text
HEAD_WIDTH = 64  # every Whisper size: heads = width / 64
SAFETY = 1.25  # the caching allocator rounds blocks up, cuBLAS takes workspaces: estimated low is the costly side
RESERVE_MB = 512  # left free on the device whatever the batch: CUDA's context growth, another process's next step
# CTranslate2's "CUDA failed with error out of memory", and cuBLAS's "... CUBLAS_STATUS_ALLOC_FAILED".
OUT_OF_MEMORY = ("out of memory", "alloc_failed")
BINARY_VERSION = 6  # CTranslate2's model.bin since 2022, every Whisper conversion: byte counts, not element counts


@dataclass(frozen=True)
class WhisperDims:
    width: int
    encoder_layers: int
    decoder_layers: int
    vocabulary: int


def read_dims(model_bin: Path) -> WhisperDims:
    """A CTranslate2 Whisper's dimensions, from the variable table of its model.bin (names and shapes, the weights
    skipped): the converted model carries no config of them. ValueError for a file that is not one."""
    layers = {"encoder": set(), "decoder": set()}  # type: dict[str, set[str]]
    width = vocabulary = 0
    with model_bin.open("rb") as f:
        version = _unpack(f, "I")[0]
        if version != BINARY_VERSION:
            raise ValueError(f"{model_bin}: not a CTranslate2 model of binary version {BINARY_VERSION} ({version})")
        _string(f)  # the spec's name
        _unpack(f, "I")  # its revision
        for _ in range(_unpack(f, "I")[0]):  # the variables; the aliases after them are not needed
            name = _string(f)
            rank = _unpack(f, "B")[0]
            shape = _unpack(f, "I" * rank) if rank else ()
            _unpack(f, "B")  # dtype
            f.seek(_unpack(f, "I")[0], 1)  # the weights themselves
            part, _, rest = name.partition("/")
            layer = rest.split("/", 1)[0]
            if part in layers and layer.startswith("layer_") and layer[6:].isdigit():  # not layer_norm
                layers[part].add(layer)
            elif name == "decoder/embeddings/weight" and len(shape) == 2:
                vocabulary, width = shape
    if not (width and layers["encoder"] and layers["decoder"]):
        raise ValueError(f"{model_bin}: no Whisper encoder and decoder in its variables")
    return WhisperDims(width, len(layers["encoder"]), len(layers["decoder"]), vocabulary)


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated CTranslate2 model file")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO) -> str:
    length = _unpack(f, "H")[0]
    return f.read(length).rstrip(b"\0").decode("utf-8", "replace")


def activation_bytes(compute_type: str) -> int:
    """Bytes of one activation: float32 where the compute type computes in it, else half precision."""
    return 4 if compute_type.endswith("float32") or compute_type in ("int8", "int16", "default", "auto") else 2


def window_mb(dims: WhisperDims, beam_size: int, compute_type: str, tokens: int = TEXT_POSITIONS) -> float:
    """The memory one 30-s window takes in a batch, at its peak, for a text of up to `tokens`: the larger of the
    encoder's (the attention scores of a layer, heads x 1500 x 1500, and its projections) and the decoder's (the
    cross-attention's keys and values over the encoder's output in every layer, once a window: CTranslate2 folds the
    beams into the queries rather than copy them, since 3.6; and for each beam the self-attention's over the text
    and the logits), beside the encoder's output, which lives through both."""
    e = activation_bytes(compute_type)
    d, frames, beams, layers = dims.width, ENCODER_POSITIONS, max(1, beam_size), dims.decoder_layers
    heads = max(1, d // HEAD_WIDTH)
    encoder = e * (2 * heads * frames * frames + 11 * frames * d)  # scores and softmax; q, k, v, ffn (4d), norms
    decoder = e * layers * 2 * frames * d + e * beams * layers * 2 * tokens * d
    decoder += beams * dims.vocabulary * (e + 8)  # logits, then float32 log-probabilities and their sort
    output = e * frames * d
    return SAFETY * (output + max(encoder, decoder)) / 2**20


@dataclass
class GpuBatchLimit:
    """The largest batch that fits now: the device's free memory (`free_mb`, None when it cannot be read) less
    `reserve_mb`, shared by `runners` batches at once, over one window's memory."""

    dims: WhisperDims
    compute_type: str
    runners: int
    free_mb: Callable[[], int | None]
    reserve_mb: int = RESERVE_MB
    _lowered_to: int = field(default=0, init=False)  # the last size free memory lowered a batch to

    def window_mb(self, beam_size: int, tokens: int = TEXT_POSITIONS) -> float:
        return window_mb(self.dims, beam_size, self.compute_type, tokens)

    def fits(self, beam_size: int) -> int | None:
        """How many windows fit now (at least one: a lone decode is never refused here); None when NVML cannot
        say."""
        free = self.free_mb()
        if free is None:
            return None
        room = max(0, free - self.reserve_mb) / max(1, self.runners)
        return max(1, int(room // self.window_mb(beam_size)))

    def __call__(self, wanted: int, beam_size: int) -> int:
        if wanted <= 1:
            return wanted
        fits = self.fits(beam_size)
        if fits is None or fits >= wanted:  # unreadable: the size asked for, with the out-of-memory split behind it
            return wanted
        if fits != self._lowered_to:  # said once per new size, not for every batch of a busy server
            self._lowered_to = fits
            log.info(
                "batches of %d lowered to %d by free GPU memory (~%.0f MB a window at beam %d)",
                wanted,
                fits,
                self.window_mb(beam_size),
                beam_size,
                extra={"batch": fits, "wanted": wanted},
            )
        return fits


def out_of_memory(exc: BaseException) -> bool:
    """Whether an engine error is the device running out of memory (CTranslate2 raises RuntimeError with CUDA's
    message), which a smaller batch may avoid."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and any(sign in text for sign in OUT_OF_MEMORY)
