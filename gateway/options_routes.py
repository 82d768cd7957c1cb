"""`GET /v1/options`: what this service offers, in the shape the original asrpro app reads — generated from the
routes really mounted, the formats the model server's decoder (PyAV, FFmpeg inside) really opens, and the
models really installed."""

from __future__ import annotations

import importlib.util
from typing import Any

from fastapi import APIRouter, Request

from gateway.connection import Connection, Settings
from gateway.status import system_status
from schemas import endpoints
from schemas.errors import AsrError
from schemas.gpu import GpuStatusRequest
from schemas.transcribe import RESPONSE_FORMATS

router = APIRouter()

# Container formats by file extension and MIME type; offered when the decoder knows the container.
_AUDIO = {
    ".wav": ("wav", "audio/wav"),
    ".mp3": ("mp3", "audio/mpeg"),
    ".flac": ("flac", "audio/flac"),
    ".ogg": ("ogg", "audio/ogg"),
    ".opus": ("ogg", "audio/opus"),
    ".m4a": ("mov", "audio/mp4"),
    ".aac": ("aac", "audio/aac"),
    ".aiff": ("aiff", "audio/aiff"),
    ".wma": ("asf", "audio/x-ms-wma"),
}
_VIDEO = {
    ".mp4": ("mov", "video/mp4"),
    ".mov": ("mov", "video/quicktime"),
    ".mkv": ("matroska", "video/x-matroska"),
    ".webm": ("matroska", "video/webm"),
    ".avi": ("avi", "video/x-msvideo"),
    ".flv": ("flv", "video/x-flv"),
    ".ts": ("mpegts", "video/mp2t"),
    ".wmv": ("asf", "video/x-ms-wmv"),
}


def _decodable(table: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    known: set[str] | None = None
    if importlib.util.find_spec("av") is not None:
        import av

        known = set(av.formats_available)
    chosen = {ext: mime for ext, (demuxer, mime) in table.items() if known is None or demuxer in known}
    return {"extensions": sorted(chosen), "mime_types": sorted(set(chosen.values()))}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part, {})
        return target if isinstance(target, dict) else {}
    return schema


def _parameter(name: str, schema: dict[str, Any], required: bool, description: str) -> dict[str, Any]:
    options = schema.get("enum") or (list(RESPONSE_FORMATS) if name == "response_format" else None)
    binary = schema.get("format") == "binary" or any(
        alt.get("format") == "binary" or alt.get("contentMediaType") for alt in schema.get("anyOf", [])
    )
    return {
        "type": "file" if binary or name == "file" else str(schema.get("type") or "string"),
        "required": required,
        "description": description or str(schema.get("description") or schema.get("title") or ""),
        "options": options,
        "default": schema.get("default"),
    }


def _endpoints(request: Request) -> dict[str, Any]:
    """The mounted routes as FastAPI's own OpenAPI document describes them."""
    spec: dict[str, Any] = request.app.openapi()
    listed: dict[str, Any] = {}
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            parameters = {
                p["name"]: _parameter(p["name"], p.get("schema", {}), bool(p.get("required")), p.get("description", ""))
                for p in operation.get("parameters", [])
            }
            for media in operation.get("requestBody", {}).get("content", {}).values():
                body = _resolve(spec, media.get("schema", {}))
                needed = set(body.get("required", []))
                for name, schema in body.get("properties", {}).items():
                    parameters.setdefault(name, _parameter(name, schema, name in needed, ""))
            key = path if path not in listed else f"{method.upper()} {path}"
            listed[key] = {
                "method": method.upper(),
                "description": str(operation.get("summary") or operation.get("description") or "").split("\n")[0],
                "parameters": parameters,
                "responses": {
                    code: {"description": str(r.get("description", "")), "schema": {}}
                    for code, r in operation.get("responses", {}).items()
                },
            }
    return listed


@router.get("/v1/options")
async def options(request: Request, conn: Connection, config: Settings) -> dict[str, Any]:
    status = await system_status(conn)
    listing = conn.catalogue.listing
    models = listing.models if listing is not None else []
    # A diarizer is no transcription model: the app is offered the models it may transcribe with.
    installed = [m.id for m in models if m.installed and m.family != "diarizer"]
    diarizers = [m.id for m in models if m.installed and m.family == "diarizer"]
    try:
        gpu = await conn.request(endpoints.GPU_STATUS, GpuStatusRequest(), timeout=2.0)
        gpu_available = bool(gpu.devices) and not config.gpu.accounting_only
    except AsrError:
        gpu_available = False
    base = f"http://{config.gateway.host}:{config.gateway.port}"
    return {
        "api_version": "1.0.0",
        "server": "ASR Pro",
        "endpoints": _endpoints(request),
        "supported_formats": {"audio": _decodable(_AUDIO), "video": _decodable(_VIDEO)},
        "response_formats": list(RESPONSE_FORMATS),
        "available_models": installed,
        "default_model": conn.catalogue.default_model or None,
        "capabilities": {
            "ffmpeg_support": True,  # PyAV carries FFmpeg's decoders
            "video_processing": True,
            "audio_extraction": True,
            "gpu_acceleration": gpu_available,
            "current_device": status.get("device") or "unknown",
            "websocket_support": True,
            "real_time_progress": True,
            "streaming": True,
            "translation": True,
            "word_timestamps": True,
            "speaker_diarization": bool(diarizers),  # diarize=speakers (docs/diarization.md)
            "channel_diarization": True,  # diarize=channels
        },
        "diarizers": diarizers,
        "examples": {
            "curl_transcription": f"curl -F file=@audio.mp3 '{base}/v1/audio/transcriptions?model=whisper-base'",
            "curl_video": f"curl -F file=@video.mp4 '{base}/v1/audio/transcriptions?model=whisper-base'",
            "websocket": f"ws://{config.gateway.host}:{config.gateway.port}/ws",
        },
    }
