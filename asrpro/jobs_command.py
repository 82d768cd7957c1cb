"""`asrpro jobs submit FILE [--wait] | list | get ID [--format F] | cancel ID`: durable jobs through the HTTP gateway,
with a progress line on stderr while `--wait` waits."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from framework.config import Config

POLL_S = 1.0


def print_http_error(response: httpx.Response) -> int:
    """The gateway's error message (OpenAI's shape) on stderr; exit status 1."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    print(f"asrpro: HTTP {response.status_code}: {message}", file=sys.stderr)
    return 1


def cmd_jobs(config: Config, args: argparse.Namespace) -> int:
    url = (args.url or f"http://{config.gateway.host}:{config.gateway.port}") + "/v1/audio/jobs"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    with httpx.Client(headers=headers, timeout=60) as http:
        if args.action == "submit":
            return _submit(http, url, args)
        if args.action == "list":
            response = http.get(url, params={"limit": 100})
            if response.status_code != 200:
                return print_http_error(response)
            for job in response.json()["data"]:
                print(f"{job['id']}  {job['status']:<9}  {job['progress'] * 100:5.1f}%  {job['model']}")
            return 0
        if args.action == "webhook-secret":  # to verify the signatures of this key's webhooks
            response = http.get(f"{url}/webhook_secret")
            if response.status_code != 200:
                return print_http_error(response)
            print(response.json()["secret"])
            return 0
        if not args.id:
            print(f"asrpro: jobs {args.action} needs a job id", file=sys.stderr)
            return 2
        if args.action == "get":
            return _get(http, f"{url}/{args.id}", args.format)
        response = http.delete(f"{url}/{args.id}")
        if response.status_code != 200:
            return print_http_error(response)
        print(json.dumps(response.json(), indent=2))
        return 0


def _submit(http: httpx.Client, url: str, args: argparse.Namespace) -> int:
    path = Path(args.id or "")
    if not path.is_file():
        print(f"asrpro: no such file: {path}", file=sys.stderr)
        return 2
    data = {"model": args.model, "response_format": args.format or "text"}
    if args.language:
        data["language"] = args.language
    if args.webhook_url:
        data["webhook_url"] = args.webhook_url
    with path.open("rb") as fh:
        response = http.post(url, files={"file": (path.name, fh)}, data=data, timeout=None)
    if response.status_code != 202:
        return print_http_error(response)
    job: dict[str, Any] = response.json()
    if not args.wait:
        print(job["id"])
        return 0
    print(f"asrpro: job {job['id']} queued", file=sys.stderr)
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(POLL_S)
        polled = http.get(f"{url}/{job['id']}")
        if polled.status_code != 200:  # the jobs actor restarting: the job goes on
            continue
        job = polled.json()
        done = int(job["progress"] * 30)
        print(
            f"\r[{'#' * done}{'.' * (30 - done)}] {job['progress'] * 100:5.1f}% {job['status']:<9}",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    if job["status"] != "completed":
        print(
            f"asrpro: job {job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}", file=sys.stderr
        )
        return 1
    return _get(http, f"{url}/{job['id']}", args.format)


def _get(http: httpx.Client, job_url: str, fmt: str | None) -> int:
    """The job's state, or with --format its result in that format."""
    if fmt is None:
        response = http.get(job_url)
        if response.status_code != 200:
            return print_http_error(response)
        print(json.dumps(response.json(), indent=2))
        return 0
    response = http.get(f"{job_url}/result", params={"format": fmt})
    if response.status_code != 200:
        return print_http_error(response)
    print(response.text if fmt in ("text", "srt", "vtt") else json.dumps(response.json(), indent=2))
    return 0
