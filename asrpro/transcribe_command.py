"""`asrpro transcribe FILE`: one file through the HTTP gateway, or straight over NATS with the client library
(`--nats`), printed as the chosen response format."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from asrpro import client
from asrpro.jobs_command import print_http_error
from framework.config import Config


def cmd_transcribe(config: Config, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"asrpro: no such file: {path}", file=sys.stderr)
        return 2
    if args.nats:
        return asyncio.run(_transcribe_nats(config, args, path))
    import httpx

    url = args.url or f"http://{config.gateway.host}:{config.gateway.port}"
    data = {"model": args.model, "response_format": args.format}
    if args.language:
        data["language"] = args.language
    with path.open("rb") as fh:
        response = httpx.post(
            f"{url}/v1/audio/transcriptions",
            files={"file": (path.name, fh)},
            data=data,
            headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else None,
            timeout=config.gateway.request_timeout,
        )
    if response.status_code != 200:
        return print_http_error(response)
    print(response.text if args.format in ("text", "srt", "vtt") else json.dumps(response.json(), indent=2))
    return 0


async def _transcribe_nats(config: Config, args: argparse.Namespace, path: Path) -> int:
    import msgspec

    from asrpro.nats_server import password_env
    from asrpro.supervisor import load_credentials
    from framework import bus
    from schemas.errors import AsrError
    from schemas.transcribe import TranscribeRequest

    user = config.nats.user or "client"
    password = config.nats.password or os.environ.get(password_env(user)) or load_credentials(config).get(user, "")
    nc = await bus.connect(config.nats.url, name="asrpro-cli", user=user, password=password, tls_ca=config.nats.tls_ca)
    try:
        message = TranscribeRequest(
            audio=await asyncio.to_thread(path.read_bytes),
            filename=path.name,
            language=args.language,
            response_format=args.format,
        )
        result = await client.transcribe(nc, args.model, message, timeout=config.gateway.request_timeout)
    except AsrError as exc:
        print(f"asrpro: error {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    print(
        result.formatted if result.formatted is not None else msgspec.json.format(msgspec.json.encode(result)).decode()
    )
    return 0
