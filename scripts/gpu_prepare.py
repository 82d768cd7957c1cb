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
from pathlib import Path

LIMIT = 64 * 2**20
PACKAGES = ["ctranslate2>=4.6.3", "nvidia-ml-py", "msgspec"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# The tiny Whisper: Whisper's own layout (80 mel bins, 1500 encoder positions, 448 decoder positions), shrunk.
WIDTH, HEADS, LAYERS, MELS, FFN = 64, 4, 2, 80, 128
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


def build_tiny_whisper(target: Path) -> None:
    """Random weights in Whisper's shapes; the vocabulary has Whisper's special tokens, so generate() runs as it
    does for a real model."""
    import numpy as np
    from ctranslate2.specs import whisper_spec

    rng = np.random.default_rng(20261206)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def linear(spec: object, out: int, inp: int) -> None:
        spec.weight, spec.bias = weights(out, inp), weights(out)  # type: ignore[attr-defined]

    def norm(spec: object) -> None:
        spec.gamma, spec.beta = np.ones(WIDTH, np.float32), np.zeros(WIDTH, np.float32)  # type: ignore[attr-defined]

    def attention(spec: object, cross: bool) -> None:
        norm(spec.layer_norm)  # type: ignore[attr-defined]
        linears = spec.linear  # type: ignore[attr-defined]
        # Cross-attention: query, fused key and value (of the encoder's output), output; self: fused q/k/v, output.
        shapes = [(WIDTH, WIDTH), (2 * WIDTH, WIDTH), (WIDTH, WIDTH)] if cross else [(3 * WIDTH, WIDTH), (WIDTH, WIDTH)]
        for layer, (out, inp) in zip(linears, shapes, strict=True):
            linear(layer, out, inp)

    def feed_forward(spec: object) -> None:
        norm(spec.layer_norm)  # type: ignore[attr-defined]
        linear(spec.linear_0, FFN, WIDTH)  # type: ignore[attr-defined]
        linear(spec.linear_1, WIDTH, FFN)  # type: ignore[attr-defined]

    vocabulary = [f"t{i}" for i in range(256)] + SPECIALS + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    spec = whisper_spec.WhisperSpec(LAYERS, HEADS, LAYERS, HEADS)
    encoder, decoder = spec.encoder, spec.decoder
    encoder.conv1.weight, encoder.conv1.bias = weights(WIDTH, MELS, 3), weights(WIDTH)
    encoder.conv2.weight, encoder.conv2.bias = weights(WIDTH, WIDTH, 3), weights(WIDTH)
    encoder.position_encodings.encodings = weights(1500, WIDTH)
    norm(encoder.layer_norm)
    for layer in encoder.layer:
        attention(layer.self_attention, cross=False)
        feed_forward(layer.ffn)
    decoder.embeddings.weight = weights(len(vocabulary), WIDTH)
    decoder.position_encodings.encodings = weights(448, WIDTH)
    decoder.projection.weight = decoder.embeddings.weight
    norm(decoder.layer_norm)
    for layer in decoder.layer:
        attention(layer.self_attention, cross=False)
        attention(layer.attention, cross=True)
        feed_forward(layer.ffn)
    spec.register_vocabulary(vocabulary)
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.config.alignment_heads = [(LAYERS - 1, 0)]
    spec.validate()
    spec.optimize(quantization="int8")
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
    build_tiny_whisper(out / "tiny-whisper")
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
