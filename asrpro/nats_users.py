"""Applications' NATS users and the nats-server configuration that holds them.

The repository's nats.conf is a template: it defines the actors' users; `render` adds, at its `# @...`
marker lines, one user per application, the object store subjects of each owner's audio bucket and the inboxes
actors answer into. Every user reads replies only under its own inbox prefix, `_INBOX.<user>.`.

Scopes of an application (each includes the one before):
- transcribe: send audio (inline, up to max_payload), cancel its own requests, list models and their status;
  nothing of other applications, and no JetStream (see app_permissions).
- events: also follow events and progress live (which show every application's file names).
- admin: also what the gateway's admin key may do: load/unload models, set the default, close breakers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
from pathlib import Path
from typing import Literal

import msgspec

from framework.private_files import write_private
from schemas import access, subjects

AppScope = Literal["transcribe", "events", "admin"]
APP_SCOPES: tuple[AppScope, ...] = ("transcribe", "events", "admin")
ACTOR_USERS = (*access.ACTORS, "admin")
# The application user `asrpro up` always has: the operator's own (the CLI's `transcribe --nats`, following
# events); scope `events`. Give every other application its own user.
DEFAULT_APP = "client"
_NAME = re.compile(subjects.USER_NAME)
PID_FILE = "nats-server.pid"
# Who sends requests to actors (and so whose inboxes the actors answer into), besides the applications. An
# explicit right instead of allow_responses: that lets a requester name any subject as its reply (the actor
# would publish its answer to asr.lifecycle.stop on the requester's behalf), and nats-server's config reload
# (adding a user) forgets the grants of requests in flight. Publishing into an inbox is harmless without
# knowing its random name, which only its owner (who alone may subscribe there) sees.
REQUESTERS = ("gateway", "admin", "proxy", "lifecycle", "recovery", "jobs", "live")
RENDERED = "nats-server.conf"


class AppUser(msgspec.Struct, kw_only=True):
    name: str
    scope: AppScope = "transcribe"
    password: str = ""


class Credentials(msgspec.Struct, kw_only=True):
    """What an application needs to connect: written 0600 for it by `asrpro users add`."""

    url: str
    user: str
    password: str
    inbox_prefix: str  # nats-py: nats.connect(..., inbox_prefix=...); other clients have the same option
    scope: AppScope


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in ACTOR_USERS:
        raise ValueError(
            f"'{name}' cannot be an application's name: lower-case letters, digits, '-' and '_', starting with a "
            f"letter, at most 32, and none of {', '.join(ACTOR_USERS)}"
        )
    return name


def app_permissions(user: AppUser) -> dict[str, object]:
    """No JetStream at all: a JetStream API request (a direct get, a stream info, a consumer create) is answered by
    nats-server itself, unchecked, on whatever reply subject the requester names — stored bytes published onto an
    event, a KV record or a stream's delete subject. So applications send audio inline (up to max_payload; larger
    goes through the HTTP gateway) and follow events live."""
    publish = access.publish_rights(*access.application_roles(user.scope))
    if user.scope == "admin":
        publish.append("$SRV.>")  # service discovery, as the operator's tools use it
    subscribe = [f"{subjects.inbox_prefix(user.name)}.>", *access.application_subscriptions(user.scope)]
    own_publish, own_subscribe = access.own_jobs_rights(user.name)
    publish += own_publish
    subscribe += [s for s in own_subscribe if s not in subscribe]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def render(template: str, apps: list[AppUser]) -> str:
    """The template with the applications' users and every owner's audio bucket subjects filled in."""
    owners = list(subjects.AUDIO_SENDERS)

    def quoted(items: list[str], indent: str) -> str:
        return "\n".join(f"{indent}{json.dumps(item)}" for item in items)

    out = []
    for line in template.splitlines():
        marker = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if marker == "# @audio:gateway":
            out.append(quoted(access.object_bucket_rights(subjects.audio_bucket("gateway"), write=True), indent))
        elif marker == "# @audio:jobs":  # its own bucket, which it reads too (results): a trusted actor
            own = subjects.audio_bucket("jobs")
            rights = access.object_bucket_rights(own, write=True) + access.object_bucket_rights(own, write=False)
            out.append(quoted(list(dict.fromkeys(rights)), indent))
        elif marker.startswith("# @audio-from:"):  # reads (and deletes) what another user staged in its bucket
            owner = marker.removeprefix("# @audio-from:")
            out.append(quoted(access.object_bucket_rights(subjects.audio_bucket(owner), write=False), indent))
        elif marker == "# @audio:proxy":
            reads = [
                s for owner in owners for s in access.object_bucket_rights(subjects.audio_bucket(owner), write=False)
            ]
            out.append(quoted(reads, indent))
        elif marker.startswith("# @publish:"):
            out.append(quoted(access.publish_rights(marker.removeprefix("# @publish:")), indent))
        elif marker.startswith("# @serve:"):
            out.append(quoted(access.serve_rights(marker.removeprefix("# @serve:")), indent))
        elif marker == "# @replies":
            out.append(
                quoted([f"{subjects.inbox_prefix(u)}.>" for u in [*REQUESTERS, *(a.name for a in apps)]], indent)
            )
        elif marker == "# @applications":
            for app in apps:
                entry = {"user": app.name, "password": app.password, "permissions": app_permissions(app)}
                out.append(indent + json.dumps(entry))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class UserStore:
    """The applications of one deployment: `<store_dir>/users.json` (0600), passwords in plain text like the
    actors' credentials file beside it — both are as secret as the nats-server configuration they produce."""

    def __init__(self, store_dir: str | os.PathLike[str], credentials_dir: str | os.PathLike[str] = "") -> None:
        self.dir = Path(store_dir)
        self.path = self.dir / "users.json"
        # Where each application's credentials file goes (nats.credentials_dir); only `asrpro users` writes them.
        self.credentials_dir = Path(credentials_dir) if credentials_dir else None

    def load(self) -> list[AppUser]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=list[AppUser])
        except FileNotFoundError:
            return []

    def save(self, apps: list[AppUser]) -> None:
        write_private(self.path, msgspec.json.format(msgspec.json.encode(apps)))

    def with_default(self, default_password: str) -> list[AppUser]:
        """Every application, the default `client` first (its password is the deployment's client password)."""
        return [AppUser(name=DEFAULT_APP, scope="events", password=default_password), *self.load()]

    def add(self, name: str, scope: AppScope) -> AppUser:
        check_name(name)
        if name == DEFAULT_APP:
            raise ValueError(f"'{DEFAULT_APP}' always exists (nats.client_password)")
        apps = self.load()
        if any(app.name == name for app in apps):
            raise ValueError(f"application '{name}' exists already (asrpro users remove {name} first)")
        user = AppUser(name=name, scope=scope, password="pw" + secrets.token_hex(16))
        self.save([*apps, user])
        return user

    def remove(self, name: str) -> None:
        apps = self.load()
        if not any(app.name == name for app in apps):
            raise ValueError(f"no application '{name}' (asrpro users list)")
        self.save([app for app in apps if app.name != name])
        if self.credentials_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                self.credentials_path(name).unlink()

    def credentials_path(self, name: str) -> Path:
        if self.credentials_dir is None:
            raise ValueError("no credentials directory given (nats.credentials_dir)")
        return self.credentials_dir / f"{name}.json"

    def write_credentials(self, user: AppUser, url: str) -> Path:
        creds = Credentials(
            url=url,
            user=user.name,
            password=user.password,
            inbox_prefix=subjects.inbox_prefix(user.name),
            scope=user.scope,
        )
        path = self.credentials_path(user.name)
        write_private(path, msgspec.json.format(msgspec.json.encode(creds)))
        return path


def reload_server(store_dir: str | os.PathLike[str]) -> bool:
    """Ask the running embedded nats-server to re-read its configuration (SIGHUP: connections stay, requests in
    flight go on; a removed user's connections are closed). False when none runs."""
    try:
        pid = int((Path(store_dir) / PID_FILE).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True
