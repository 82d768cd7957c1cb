"""The `asrpro` command line: up, actor, gateway, transcribe."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from asrpro.jobs_command import cmd_jobs
from asrpro.listen_command import cmd_listen
from asrpro.transcribe_command import cmd_transcribe
from framework.config import Config, ConfigError, load_config
from framework.logs import setup_logging

# Looked up by name so that the command line, not any actor, knows them all.
ACTOR_CLASSES = {
    "registry": "actors.registry:Registry",
    "lifecycle": "actors.lifecycle.actor:Lifecycle",
    "gpu": "actors.gpu:GpuAllocator",
    "proxy": "actors.proxy.actor:ModelProxy",
    "recovery": "actors.recovery:Recovery",
    "metrics": "actors.metrics:Metrics",
    "jobs": "actors.jobs.actor:Jobs",
    "live": "actors.live.actor:Live",
}


def _actor_class(name: str) -> type:
    module, _, cls = ACTOR_CLASSES[name].partition(":")
    actor_class: type = getattr(importlib.import_module(module), cls)
    return actor_class


def cmd_up(config: Config, args: argparse.Namespace) -> int:
    from asrpro import nats_cluster
    from asrpro.supervisor import Supervisor

    setup_logging("supervisor")
    try:
        joining = None
        if args.join:
            nats_cluster.check_routes(args.join)
            if not args.credentials:
                raise ValueError("--join needs --credentials FILE (the cluster.json the first host wrote)")
            joining = nats_cluster.Bundle.read(args.credentials)
            config.cluster.routes = list(args.join)
            config.cluster.port = args.cluster_port or urlsplit(args.join[0]).port or 0
        elif args.cluster_port:
            config.cluster.port = args.cluster_port
        if args.cluster_host:
            config.cluster.host = args.cluster_host
        return Supervisor(config, args.config, joining=joining).run()
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"asrpro: {exc}", file=sys.stderr)
        return 1


def cmd_actor(config: Config, args: argparse.Namespace) -> int:
    setup_logging(args.name)
    actor = _actor_class(args.name)(config)
    try:
        asyncio.run(actor.run())
    except OSError as exc:  # nats.errors.NoServersError and friends: fail fast with one clear line
        logging.getLogger("asrpro").error("cannot start %s: %s", args.name, exc)
        return 1
    return 0


def cmd_gateway(config: Config, _: argparse.Namespace) -> int:
    from gateway.server import serve

    setup_logging("gateway")
    try:
        serve(config)
    except ConfigError as exc:
        logging.getLogger("asrpro.gateway").error("%s", exc)
        print(f"asrpro: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_keys(config: Config, args: argparse.Namespace) -> int:
    """API keys in gateway.api_keys_file: stored as digests, so a key is shown once, when it is made."""
    import secrets

    from gateway.auth import parse_keys_file, write_key_line

    path = Path(config.gateway.api_keys_file)
    if args.action == "add":
        key = "asr-" + secrets.token_urlsafe(32)
        write_key_line(path, key, args.scope)
        print(key)
        print(f"asrpro: {args.scope} key added to {path}; it is not stored anywhere in plain text", file=sys.stderr)
        return 0
    text = path.read_text() if path.exists() else ""
    entries = parse_keys_file(text, str(path))
    if args.action == "list":
        for hexdigest, scope in entries:
            print(f"sha256:{hexdigest[:12]}…  {scope}")
        return 0
    prefix = (args.digest or "").removeprefix("sha256:").lower()
    matching = [h for h, _ in entries if prefix and h.startswith(prefix)]
    if len(matching) != 1:
        print(
            f"asrpro: {len(matching)} keys match {args.digest!r}; give more digits (asrpro keys list)", file=sys.stderr
        )
        return 1
    from framework.private_files import write_private

    kept = [line for line in text.splitlines() if matching[0] not in line.lower()]
    write_private(path, "".join(f"{line}\n" for line in kept).encode())
    print(f"asrpro: key sha256:{matching[0][:12]}… removed from {path}", file=sys.stderr)
    return 0


def cmd_images(config: Config, args: argparse.Namespace) -> int:
    from docker.errors import DockerException

    from asrpro import images

    setup_logging("images")
    try:
        if args.action == "build":
            built = images.build(config, args.models, Path(config.docker.build_dir), cuda=args.cuda)
            print(json.dumps(built, indent=2))
        else:
            for row in images.listing(config):
                print(f"{row['model']:<22} {row['image']:<40} {row['id']:<12} {row['size_mb']:>6} MB")
    except (images.ImageBuildError, DockerException) as exc:
        print(f"asrpro: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_models(config: Config, args: argparse.Namespace) -> int:
    from framework import weights_pull

    if args.action == "list":
        rows = weights_pull.listing(config)
        print(f"{'model':<22} {'installed':<9} {'size':>9}  where")
        for row in rows:
            size = f"{row.size_mb:.0f} MB" if row.installed and row.size_mb else ""
            where = row.where + (f" (missing: {row.missing})" if row.missing else "")
            print(f"{row.model:<22} {'yes' if row.installed else 'no':<9} {size:>9}  {where}")
        return 0
    if not args.models:
        print("asrpro: name the model(s) to pull, e.g. asrpro models pull whisper-base", file=sys.stderr)
        return 2
    for model_id in args.models:
        try:
            with weights_pull.terminal_progress() as progress:
                state, pulled = weights_pull.pull(config, model_id, progress)
        except weights_pull.PullError as exc:
            print(f"asrpro: {exc}", file=sys.stderr)
            return 1
        verb = "installed" if pulled else "already installed"
        print(f"{model_id}: {verb} in {state.where} ({state.size_mb:.0f} MB)")
    return 0


def cmd_bootstrap(config: Config, _: argparse.Namespace) -> int:
    """Create the JetStream stream and bucket (what `asrpro up` does itself) for stacks started another way."""
    from asrpro.bootstrap import ensure_jetstream
    from framework import bus

    async def run() -> None:
        cfg = config.nats
        nc = await bus.connect_as_configured(cfg, "asrpro-bootstrap")
        try:
            await ensure_jetstream(nc, config)
        finally:
            await nc.close()

    setup_logging("bootstrap")
    asyncio.run(run())
    return 0


def cmd_users(config: Config, args: argparse.Namespace) -> int:
    """Applications' NATS users: each its own password, inbox and audio bucket (see asrpro.nats_users)."""
    from asrpro.nats_users import DEFAULT_APP, UserStore

    store = UserStore(config.nats.store_dir, config.nats.credentials_dir)
    if args.action == "list":
        print(f"{DEFAULT_APP:<24} events      (built in: nats.client_password)")
        for app in store.load():
            print(f"{app.name:<24} {app.scope:<11} {store.credentials_path(app.name)}")
        return 0
    if not args.name:
        print(f"asrpro: name the application, e.g. asrpro users {args.action} my-app", file=sys.stderr)
        return 2
    try:
        if args.action == "add":
            user = store.add(args.name, args.scope)
            where = store.credentials_path(user.name)
            store.write_credentials(user, config.nats.url)
            print(f"asrpro: {user.scope} user '{user.name}' added; its credentials are in {where} (mode 0600)")
        else:
            store.remove(args.name)
            print(f"asrpro: user '{args.name}' removed; its connections are closed", file=sys.stderr)
    except ValueError as exc:
        print(f"asrpro: {exc}", file=sys.stderr)
        return 1
    return _apply_users(config)


def _apply_users(config: Config) -> int:
    """A running embedded nats-server re-reads its users (connections and requests in flight stay)."""
    from asrpro.nats_server import write_config
    from asrpro.nats_users import reload_server
    from asrpro.supervisor import load_credentials

    passwords = load_credentials(config)
    if not passwords:
        print("asrpro: takes effect at the next `asrpro up`", file=sys.stderr)
        return 0
    write_config(config.nats.config_file, config.nats.store_dir, passwords["client"])

    if not reload_server(config.nats.store_dir):
        print("asrpro: no embedded nats-server runs: takes effect at the next `asrpro up`", file=sys.stderr)
        return 0
    print("asrpro: the running nats-server has re-read its users", file=sys.stderr)
    return 0


def cmd_nats(config: Config, args: argparse.Namespace) -> int:
    """nats-server with this deployment's rendered configuration (compose runs the bus this way); the actors'
    passwords come from ASRPRO_NATS_PW_<USER> as for `asrpro up`."""
    from asrpro.nats_server import binary, password_env, write_config

    client_password = os.environ.get(password_env("client")) or config.nats.client_password
    if not client_password:
        print(f"asrpro: set {password_env('client')} (asrpro passwords)", file=sys.stderr)
        return 2
    rendered = write_config(config.nats.config_file, config.nats.store_dir, client_password)
    passed = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    os.execv(binary(), [binary(), "-c", str(rendered), *passed])
    return 0


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    from asrpro import doctor

    results = doctor.collect(config)
    print(json.dumps(doctor.as_json(results), indent=2) if args.json else doctor.render(results))
    return 1 if any(r.ok is False for r in results) else 0


def cmd_certs(config: Config, args: argparse.Namespace) -> int:
    from asrpro import certs

    out = Path(args.out or Path(config.nats.store_dir) / "tls")
    try:
        files = certs.make(out, args.hosts)
    except RuntimeError as exc:
        print(f"asrpro: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({name: str(path.resolve()) for name, path in files.items()}, indent=2))
    print(
        "copy ca.pem, server.pem and server.key to every host and set cluster.tls_cert / tls_key / tls_ca (routes)"
        " and, for clients, nats.tls_cert / tls_key / tls_ca; keep ca.key elsewhere",
        file=sys.stderr,
    )
    return 0


def cmd_passwords(_: Config, __: argparse.Namespace) -> int:
    from asrpro.nats_server import USERS, new_password, password_env

    for user in USERS:
        print(f"{password_env(user)}={new_password()}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asrpro", description="ASR Pro: speech-to-text over NATS")
    p.add_argument("--config", help="TOML configuration file (default: $ASRPRO_CONFIG or asrpro.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start nats-server, every actor and the gateway")
    up.add_argument("--cluster-port", type=int, default=0, help="listen for other hosts' routes (a cluster)")
    up.add_argument("--cluster-host", help="address to listen on for routes (cluster.host; default 127.0.0.1)")
    up.add_argument("--join", action="append", default=[], metavar="nats-route://HOST:PORT", help="join a cluster")
    up.add_argument("--credentials", help="with --join: the cluster.json the first host wrote")
    up.set_defaults(fn=cmd_up)
    actor = sub.add_parser("actor", help="run one actor")
    actor.add_argument("name", choices=sorted(ACTOR_CLASSES))
    actor.set_defaults(fn=cmd_actor)
    sub.add_parser("gateway", help="run the HTTP gateway").set_defaults(fn=cmd_gateway)
    sub.add_parser("bootstrap", help="create the JetStream stream and bucket").set_defaults(fn=cmd_bootstrap)
    sub.add_parser("passwords", help="print new NATS passwords as KEY=VALUE lines").set_defaults(fn=cmd_passwords)
    certs = sub.add_parser("certs", help="a self-signed CA and a server certificate for a small cluster (openssl)")
    certs.add_argument("hosts", nargs="*", help="the hosts' names or addresses (localhost and 127.0.0.1 always)")
    certs.add_argument("--out", help="directory (default <nats.store_dir>/tls)")
    certs.set_defaults(fn=cmd_certs)
    doc = sub.add_parser("doctor", help="what this machine can do and what is missing, with the fixes")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(fn=cmd_doctor)
    keys = sub.add_parser("keys", help="add, list or remove HTTP API keys (gateway.api_keys_file)")
    keys.add_argument("action", choices=["add", "list", "remove"])
    keys.add_argument("digest", nargs="?", help="remove: the key's digest or its first digits (from list)")
    keys.add_argument("--scope", choices=["transcribe", "admin"], default="transcribe")
    keys.set_defaults(fn=cmd_keys)
    server = sub.add_parser("nats", help="run nats-server with the rendered configuration (arguments after -- pass on)")
    server.add_argument("server_args", nargs=argparse.REMAINDER)
    server.set_defaults(fn=cmd_nats)
    users = sub.add_parser("users", help="add, list or remove applications' NATS users")
    users.add_argument("action", choices=["add", "list", "remove"])
    users.add_argument("name", nargs="?")
    users.add_argument("--scope", choices=["transcribe", "events", "admin"], default="transcribe")
    users.set_defaults(fn=cmd_users)
    img = sub.add_parser("images", help="build or list the model server images")
    img.add_argument("action", choices=["build", "list"])
    img.add_argument("models", nargs="*", help="model ids, or 'stack' for the compose stack (default: all models)")
    img.add_argument("--cuda", action="store_true", help="the CUDA variants (<image>-cuda), for servers on a GPU")
    img.set_defaults(fn=cmd_images)
    models = sub.add_parser("models", help="list models and whether their weights are here, or pull weights")
    models.add_argument("action", choices=["list", "pull"])
    models.add_argument("models", nargs="*", help="model ids to pull")
    models.set_defaults(fn=cmd_models)
    tr = sub.add_parser("transcribe", help="transcribe an audio file and print the result")
    tr.add_argument("file")
    tr.add_argument("--model", default="whisper-1")
    tr.add_argument("--format", default="text", choices=["json", "text", "srt", "vtt", "verbose_json"])
    tr.add_argument("--language")
    tr.add_argument("--url", help="gateway URL (default from the configuration)")
    tr.add_argument("--api-key", default=os.environ.get("ASRPRO_API_KEY"), help="gateway API key ($ASRPRO_API_KEY)")
    tr.add_argument("--nats", action="store_true", help="send straight over NATS instead of through the gateway")
    tr.set_defaults(fn=cmd_transcribe)
    ls = sub.add_parser("listen", help="live transcription: a file at real time, or a microphone")
    ls.add_argument("--file", help="an audio file, sent at the pace it would be spoken")
    ls.add_argument("--device", type=int, help="a microphone (PortAudio device number; needs the mic extra)")
    ls.add_argument("--model", default="whisper-1")
    ls.add_argument("--language")
    ls.add_argument("--url", help="gateway URL (default from the configuration)")
    ls.add_argument("--api-key", default=os.environ.get("ASRPRO_API_KEY"), help="gateway API key ($ASRPRO_API_KEY)")
    ls.set_defaults(fn=cmd_listen)
    jobs = sub.add_parser("jobs", help="durable jobs: submit a file (--wait for its result), list, get, cancel")
    jobs.add_argument("action", choices=["submit", "list", "get", "cancel", "webhook-secret"])
    jobs.add_argument("id", nargs="?", help="the file to submit, or the job id")
    jobs.add_argument("--wait", action="store_true", help="submit: wait for the result, with a progress bar")
    jobs.add_argument("--model", default="whisper-1")
    jobs.add_argument("--language")
    jobs.add_argument("--webhook-url", help="submit: POSTed the job's final record when it ends (signed)")
    jobs.add_argument("--format", choices=["json", "text", "srt", "vtt", "verbose_json"], help="the result's format")
    jobs.add_argument("--url", help="gateway URL (default from the configuration)")
    jobs.add_argument("--api-key", default=os.environ.get("ASRPRO_API_KEY"), help="gateway API key ($ASRPRO_API_KEY)")
    jobs.set_defaults(fn=cmd_jobs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"asrpro: {exc}", file=sys.stderr)
        return 2
    return int(args.fn(config, args))


if __name__ == "__main__":
    sys.exit(main())
