"""The model's life in the server: loading in the background, then loaded or failed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from framework import cuda_compat
from framework.cores import ThreadPlan, server_plan
from model_server.batcher import BatchCapable, BatchingEngine
from model_server.cuda_libs import CudaLibrariesMissing
from model_server.engines import Engine, load_engine
from model_server.settings import EngineSettings
from schemas.model_server import Health, HealthStatus

log = logging.getLogger("model_server")

Loader = Callable[[EngineSettings], Engine]


def load_from_settings(settings: EngineSettings) -> Engine:
    concurrency, threads = settings.concurrency, settings.cpu_threads
    if settings.device == "cpu":
        # Workers x threads from the cores this server may use (its affinity, its container's quota, the share the
        # lifecycle actor gave it beside other loaded models): CTranslate2 alone would start a thread per host core
        # in each worker.
        cores, source, plan = server_plan(settings.concurrency, settings.cpu_cores, settings.cpu_threads)
        if settings.max_batch > 1 and settings.cpu_threads <= 0:
            # A batching server keeps every worker busy with a batch: threads beyond its share of the cores only
            # contend (measured: 2 runners x 1 thread 1.06x the best sequential setting, 2 x 2 0.89x).
            plan = ThreadPlan(plan.workers, max(1, cores // plan.workers))
        concurrency, threads = plan.workers, plan.threads
        log.info(
            "%s on the CPU: %d cores usable (%s): %s",
            settings.model_id,
            cores,
            source,
            plan,
            extra={"cores": cores, "workers": plan.workers, "cpu_threads": plan.threads},
        )
    engine = load_engine(
        settings.engine,
        settings.weights_spec,
        settings.device,
        settings.compute_type,
        settings.model_id,
        concurrency=concurrency,
        cpu_threads=threads,
    )
    if settings.max_batch > 1 and isinstance(engine, BatchCapable):
        log.info(
            "%s batches up to %d short requests, waiting up to %g ms",
            settings.model_id,
            settings.max_batch,
            settings.batch_window_ms,
        )
        # A runner per CTranslate2 worker: each decodes a batch while the others gather theirs.
        return BatchingEngine(
            engine, max_batch=settings.max_batch, window_s=settings.batch_window_ms / 1000, runners=concurrency
        )
    return engine


class ModelState:
    def __init__(self, settings: EngineSettings, loader: Loader = load_from_settings) -> None:
        self.settings = settings
        self._loader = loader
        self.status: HealthStatus = "loading"
        self.engine: Engine | None = None
        self.error: str | None = None
        self.cause: Literal["gpu"] | None = None
        self.load_s: float | None = None

    def start_loading(self) -> threading.Thread:
        # A daemon thread, so that SIGTERM during a slow load (large weights) is not held up by it.
        thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            engine = self._loader(self.settings)
        # Whatever stops the load (missing weights, unknown engine, CUDA absent, a corrupt file) must reach
        # /health as the reason rather than kill the thread silently.
        except Exception as exc:
            self.error = str(exc) or type(exc).__name__
            self.status = "error"
            # The GPU's fault, not the model's: CUDA libraries missing, or kernels this driver cannot load (raised
            # by CTranslate2's warm-up decode, e.g. "the provided PTX was compiled with an unsupported toolchain").
            if isinstance(exc, CudaLibrariesMissing) or cuda_compat.TOOLCHAIN_ERRORS.search(self.error):
                self.cause = "gpu"
            log.error(
                "model load failed", extra={"model": self.settings.model_id, "error": self.error, "cause": self.cause}
            )
            return
        self.load_s = round(time.perf_counter() - started, 3)
        self.engine = engine
        self.status = "ok"
        log.info("model loaded", extra={"model": self.settings.model_id, "load_s": self.load_s})

    def health(self) -> Health:
        engine = self.engine
        batcher = engine.batcher if isinstance(engine, BatchingEngine) else None
        return Health(
            batches=batcher.batches if batcher else None,
            batched=batcher.batched if batcher else None,
            status=self.status,
            model=self.settings.model_id,
            engine=self.settings.engine,
            device=engine.device if engine else self.settings.device,
            compute_type=engine.compute_type if engine else self.settings.compute_type,
            load_s=self.load_s,
            error=self.error,
            cause=self.cause,
        )
