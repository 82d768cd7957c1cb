"""A recording read as 16-bit mono samples at a chosen rate: what the Realtime protocol streams.

One home for the CLI's `listen --file`, the realtime tests and the realtime bench. numpy and PyAV are imported
when called: the control plane's image imports the CLI without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def read_pcm16(path: Path, rate: int) -> np.ndarray:
    import av
    import numpy as np

    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        frames = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)
