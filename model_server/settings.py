"""What the server was asked to load, from command-line flags or the environment."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL_ID = "whisper-tiny.en"
DEFAULT_ENGINE = "faster-whisper"
MODELS_DIR = "/models"


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    model_id: str = DEFAULT_MODEL_ID
    engine: str = DEFAULT_ENGINE
    # Empty means the container convention: a volume mounted at /models/<model id>.
    weights: str = ""
    device: str = "cpu"
    compute_type: str = "int8"
    # Transcriptions that may run at once; faster-whisper gets as many workers so they really run in parallel.
    concurrency: int = 2
    cpu_threads: int = 0  # threads per worker on the CPU; 0: planned from the cores (framework/cores.py)
    cpu_cores: int = 0  # the cores this server may use beside other model servers; 0: all it is allowed
    # Dynamic batching (model_server/batcher.py): short requests that arrive together decode as one batch of at
    # most max_batch (1: never), the first waiting at most batch_window_ms for company.
    max_batch: int = 1
    batch_window_ms: float = 0.0

    @property
    def weights_spec(self) -> str:
        return self.weights or f"{MODELS_DIR}/{self.model_id}"
