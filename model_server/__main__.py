"""``python -m model_server``: flags first, then environment variables, then defaults."""

from __future__ import annotations

import argparse
import os

import uvicorn

from framework.logs import setup_logging
from model_server.app import create_app
from model_server.settings import DEFAULT_ENGINE, DEFAULT_MODEL_ID, EngineSettings


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_server",
        description="Serve one ASR model over HTTP (GET /health, POST /transcribe).",
    )
    parser.add_argument("--host", help="bind address [HOST, default 127.0.0.1]")
    parser.add_argument("--port", type=int, help="port [PORT, default 9000]")
    parser.add_argument(
        "--model-id", help=f"model id reported in replies [MODEL_ID or MODEL_NAME, default {DEFAULT_MODEL_ID}]"
    )
    parser.add_argument("--engine", help=f"faster-whisper | onnx-asr [ENGINE, default {DEFAULT_ENGINE}]")
    parser.add_argument("--weights", help="model directory, or package:<module> [WEIGHTS, default /models/<model id>]")
    parser.add_argument("--device", help="cpu | cuda | auto [DEVICE, default cpu]")
    parser.add_argument("--compute-type", help="int8, float16, int8_float16, ... [COMPUTE_TYPE, default int8]")
    parser.add_argument("--concurrency", type=int, help="transcriptions at once [CONCURRENCY, default 2]")
    parser.add_argument("--cpu-threads", type=int, help="threads per transcription, 0 = auto [CPU_THREADS, default 0]")
    parser.add_argument(
        "--cpu-cores", type=int, help="cores this server may use, 0 = all it is allowed [CPU_CORES, default 0]"
    )
    parser.add_argument(
        "--max-batch", type=int, help="short requests decoded together, 1 = never [MAX_BATCH, default 1]"
    )
    parser.add_argument(
        "--batch-window-ms", type=int, help="how long a batch waits for company [BATCH_WINDOW_MS, default 20]"
    )
    parser.add_argument("--log-level", help="server log level [LOG_LEVEL, default info]")
    return parser


def _int(parser: argparse.ArgumentParser, flag: int | None, env_name: str, default: int) -> int:
    if flag is not None:
        return flag
    raw = _env(env_name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        parser.error(f"{env_name} must be an integer, got {raw!r}")


def main(argv: list[str] | None = None) -> None:
    # The program's own setting, before anything imports huggingface_hub (see engines.base.hub_offline).
    os.environ["HF_HUB_OFFLINE"] = "1"
    parser = _parser()
    args = parser.parse_args(argv)
    settings = EngineSettings(
        model_id=args.model_id or _env("MODEL_ID", "MODEL_NAME") or DEFAULT_MODEL_ID,
        engine=args.engine or _env("ENGINE") or DEFAULT_ENGINE,
        weights=args.weights or _env("WEIGHTS") or "",
        device=args.device or _env("DEVICE") or "cpu",
        compute_type=args.compute_type or _env("COMPUTE_TYPE") or "int8",
        concurrency=_int(parser, args.concurrency, "CONCURRENCY", 2),
        cpu_threads=_int(parser, args.cpu_threads, "CPU_THREADS", 0),
        cpu_cores=_int(parser, args.cpu_cores, "CPU_CORES", 0),
        max_batch=_int(parser, args.max_batch, "MAX_BATCH", 1),
        batch_window_ms=_int(parser, args.batch_window_ms, "BATCH_WINDOW_MS", 20),
    )
    host = args.host or _env("HOST") or "127.0.0.1"
    port = _int(parser, args.port, "PORT", 9000)
    setup_logging("model-server", args.log_level or _env("LOG_LEVEL") or "info")
    # log_config=None keeps uvicorn from replacing the JSON logging set up above; its own loggers stay at warning.
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, lets in-flight requests finish, and exits 0.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", log_config=None, access_log=False)


if __name__ == "__main__":
    main()
