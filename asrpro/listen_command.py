"""`asrpro listen --file F | --device N`: live transcription in the terminal, through the gateway's Realtime
WebSocket (WS /v1/realtime): a file is sent at real time as if spoken (what CI tests), a microphone through
PortAudio (the optional `mic` extra: pip install 'asrpro[mic]'). Completed utterances print one per line; the words
of the one being spoken show as they become stable."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from asrpro.pcm import read_pcm16
from framework.config import Config

RATE = 24000  # what the Realtime API's audio/pcm is
CHUNK_S = 0.1


def cmd_listen(config: Config, args: argparse.Namespace) -> int:
    if not args.file and args.device is None:
        print("asrpro: listen needs --file FILE or --device N", file=sys.stderr)
        return 2
    if args.file and not Path(args.file).is_file():
        print(f"asrpro: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_listen(config, args))
    except KeyboardInterrupt:
        return 0


async def _listen(config: Config, args: argparse.Namespace) -> int:
    import websockets

    base = args.url or f"http://{config.gateway.host}:{config.gateway.port}"
    url = base.replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?intent=transcription"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    source = _file_chunks(Path(args.file)) if args.file else _device_chunks(args.device)
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        first = json.loads(await ws.recv())
        if first["type"] == "error":
            print(f"asrpro: {first['error']['message']}", file=sys.stderr)
            return 1
        transcription: dict[str, Any] = {"model": args.model}
        if args.language:
            transcription["language"] = args.language
        update = {"type": "transcription", "audio": {"input": {"transcription": transcription}}}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        sender = asyncio.ensure_future(_send(ws, source))
        pending: set[str] = set()
        partial = ""
        try:
            while True:
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 2.0 if sender.done() else None))
                except TimeoutError:
                    if not pending:
                        break  # the file is over and every utterance is printed
                    continue
                kind = event["type"]
                if kind == "input_audio_buffer.committed":
                    pending.add(event["item_id"])
                elif kind.endswith("input_audio_transcription.delta"):
                    partial += event["delta"]
                    print(f"\r{partial}", end="", flush=True, file=sys.stderr)
                elif kind.endswith("input_audio_transcription.completed"):
                    pending.discard(event["item_id"])
                    if partial:
                        print("\r" + " " * len(partial) + "\r", end="", file=sys.stderr)
                    partial = ""
                    print(event["transcript"], flush=True)
                elif kind.endswith("input_audio_transcription.failed") or kind == "error":
                    pending.discard(event.get("item_id", ""))
                    print(f"asrpro: {event['error'].get('message')}", file=sys.stderr)
        finally:
            sender.cancel()
    return 0


async def _send(ws: Any, chunks: AsyncIterator[bytes]) -> None:
    import numpy as np  # here: the command line is imported where numpy is not installed (the stack image)

    async for pcm in chunks:
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
    # Silence after the file, so that the voice activity detector hears its last utterance end.
    silence = np.zeros(int(RATE * CHUNK_S), dtype="<i2").tobytes()
    for _ in range(15):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()}))
        await asyncio.sleep(CHUNK_S)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file as 24-kHz 16-bit mono, 100 ms at a time, at the pace it would be spoken."""
    samples = read_pcm16(path, RATE)
    step = int(RATE * CHUNK_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n, i in enumerate(range(0, len(samples), step)):
        yield samples[i : i + step].astype("<i2").tobytes()
        await asyncio.sleep(max(0.0, started + (n + 1) * CHUNK_S - loop.time()))


async def _device_chunks(device: int) -> AsyncIterator[bytes]:
    """The microphone (PortAudio through sounddevice, the `mic` extra)."""
    try:
        import sounddevice  # type: ignore[import-not-found, unused-ignore]
    except (ImportError, OSError) as exc:
        message = f"asrpro: --device needs PortAudio and sounddevice: pip install 'asrpro[mic]' ({exc})"
        raise SystemExit(message) from None
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def captured(data: Any, *_: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

    with sounddevice.RawInputStream(
        samplerate=RATE, channels=1, dtype="int16", device=device, blocksize=int(RATE * CHUNK_S), callback=captured
    ):
        while True:
            yield await queue.get()
