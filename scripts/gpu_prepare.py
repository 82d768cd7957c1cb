"""`scripts/gpu-check.sh --prepare DIR --python 3.X`, on a connected machine: everything `--offline DIR` needs on a
GPU machine that has no network and only what travels with the repository (64 MiB):

- DIR/wheels: ctranslate2 with its dependencies (numpy, pyyaml), nvidia-ml-py and msgspec, for that one Python (about
  58 MiB for 3.11, so nothing else fits). They stay compressed here; --offline unpacks them into DIR/site and puts that
  on PYTHONPATH (an offline venv may lack ensurepip, and nothing is installed).
- DIR/tiny-whisper: a randomly initialised Whisper (int8, width 64, under 1 MB) built with CTranslate2's WhisperSpec and
  numpy, no PyTorch: real weights are not needed to prove the kernels run.
- DIR/manifest.json: the Python it was prepared for, the files and their sizes.

Exit 0 when DIR is ready, 2 when it cannot be made here (no pip index, no ctranslate2 to build the model with), 1 when
it would not fit in 64 MiB."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIMIT = 64 * 2**20
PACKAGES = ["ctranslate2>=4.6.3", "nvidia-ml-py", "msgspec"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


@dataclass(frozen=True)
class Shape:
    """A Whisper's size: Whisper's own layout (80 mel bins, 1500 encoder positions, 448 decoder positions)."""

    width: int
    heads: int
    layers: int  # each of the encoder and the decoder
    ffn: int
    vocabulary: int = 0  # 0: only the special and timestamp tokens with 256 others; a real size pads to it
    mels: int = 80  # large-v3's input has 128 mel bins


TINY = Shape(width=64, heads=4, layers=2, ffn=128)  # what travels in DIR, under 1 MB
# Real models' shapes, built on the GPU machine itself by the batched-decode check (random weights, no download).
BASE = Shape(width=512, heads=8, layers=6, ffn=2048, vocabulary=51865)
LARGE_V3 = Shape(width=1280, heads=20, layers=32, ffn=5120, vocabulary=51866, mels=128)
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


def download(wheels: Path, python: str) -> None:
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python]
    command += ["--implementation", "cp", *platforms, "-d", str(wheels), *PACKAGES]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-check --prepare: pip download failed (no index?):\n{done.stderr[-1500:]}") from None


def build_whisper(target: Path, shape: Shape = TINY, quantization: str = "int8") -> None:
    """Random weights in Whisper's shapes; the vocabulary has Whisper's special tokens, so generate() runs as it
    does for a real model."""
    width, heads, layers, ffn = shape.width, shape.heads, shape.layers, shape.ffn
    import numpy as np
    from ctranslate2.specs import whisper_spec

    rng = np.random.default_rng(20261206)

    def weights(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims) * 0.05).astype(np.float32)

    def linear(spec: object, out: int, inp: int) -> None:
        spec.weight, spec.bias = weights(out, inp), weights(out)  # type: ignore[attr-defined]

    def norm(spec: object) -> None:
        spec.gamma, spec.beta = np.ones(width, np.float32), np.zeros(width, np.float32)  # type: ignore[attr-defined]

    def attention(spec: object, cross: bool) -> None:
        norm(spec.layer_norm)  # type: ignore[attr-defined]
        linears = spec.linear  # type: ignore[attr-defined]
        # Cross-attention: query, fused key and value (of the encoder's output), output; self: fused q/k/v, output.
        shapes = [(width, width), (2 * width, width), (width, width)] if cross else [(3 * width, width), (width, width)]
        for layer, (out, inp) in zip(linears, shapes, strict=True):
            linear(layer, out, inp)

    def feed_forward(spec: object) -> None:
        norm(spec.layer_norm)  # type: ignore[attr-defined]
        linear(spec.linear_0, ffn, width)  # type: ignore[attr-defined]
        linear(spec.linear_1, width, ffn)  # type: ignore[attr-defined]

    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    fillers = max(256, shape.vocabulary - len(SPECIALS) - len(timestamps))
    vocabulary = [f"t{i}" for i in range(fillers)] + SPECIALS + timestamps
    spec = whisper_spec.WhisperSpec(layers, heads, layers, heads)
    encoder, decoder = spec.encoder, spec.decoder
    encoder.conv1.weight, encoder.conv1.bias = weights(width, shape.mels, 3), weights(width)
    encoder.conv2.weight, encoder.conv2.bias = weights(width, width, 3), weights(width)
    encoder.position_encodings.encodings = weights(1500, width)
    norm(encoder.layer_norm)
    for layer in encoder.layer:
        attention(layer.self_attention, cross=False)
        feed_forward(layer.ffn)
    decoder.embeddings.weight = weights(len(vocabulary), width)
    decoder.position_encodings.encodings = weights(448, width)
    decoder.projection.weight = decoder.embeddings.weight
    norm(decoder.layer_norm)
    for layer in decoder.layer:
        attention(layer.self_attention, cross=False)
        attention(layer.attention, cross=True)
        feed_forward(layer.ffn)
    spec.register_vocabulary(vocabulary)
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.config.alignment_heads = [(layers - 1, 0)]
    spec.validate()
    spec.optimize(quantization=quantization)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    spec.save(str(target))


def main() -> int:
    parser = argparse.ArgumentParser(prog="gpu-check.sh --prepare")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    args = parser.parse_args()
    out: Path = args.dir.resolve()
    try:
        import ctranslate2  # noqa: F401  (builds the tiny model: the project's venv has it)
    except ImportError:
        print(
            "gpu-check --prepare: ctranslate2 is needed here to build the tiny model (use .venv/bin/python)",
            file=sys.stderr,
        )
        return 2
    try:
        download(out / "wheels", args.python)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    build_whisper(out / "tiny-whisper")
    shutil.rmtree(out / "site", ignore_errors=True)  # unpacked again, for these wheels, on the GPU machine
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    files.pop("manifest.json", None)
    total = sum(files.values())
    manifest = {"python": args.python, "packages": PACKAGES, "files": files, "total_bytes": total}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps({"dir": str(out), "python": args.python, "total_mib": round(total / 2**20, 1)}))
    if total > LIMIT:
        print(f"gpu-check --prepare: {total / 2**20:.1f} MiB does not fit in 64 MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
