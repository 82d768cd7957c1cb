"""Permissions are rendered from the declarations in schemas/: every declaration names real users, and the
rendered nats.conf grants each actor exactly what is declared for it."""

from __future__ import annotations

from pathlib import Path

from asrpro import nats_users
from schemas import access, endpoints, subjects
from schemas.endpoints import ADMIN_APPS, APPS, OWN_APP
from schemas.events import EVENT_TYPES, subject_of

ROLES = {*access.ACTORS, APPS, ADMIN_APPS, OWN_APP, access.EVENT_READERS}


def test_every_declaration_names_known_users() -> None:
    assert {t.owner for t in EVENT_TYPES} <= set(access.ACTORS)
    for rpc in endpoints.ALL:
        assert rpc.server in access.ACTORS, rpc
        assert rpc.callers and set(rpc.callers) <= ROLES, rpc
    for topic in access.TOPICS:
        assert set(topic.publishers) | set(topic.subscribers) <= ROLES


def test_an_actor_publishes_its_own_events_and_calls_only_what_it_is_declared_to_call() -> None:
    assert access.publish_rights("registry") == [subject_of(t) for t in EVENT_TYPES if t.owner == "registry"]
    proxy = access.publish_rights("proxy")
    assert "asr.forward.*.>" in proxy and subjects.PROGRESS_ALL in proxy and "asr.lifecycle.ensure.*" in proxy
    assert "asr.lifecycle.stop" not in proxy and subjects.TRANSCRIBE_ALL not in proxy
    assert access.publish_rights("gpu") == [] and access.publish_rights("metrics") == []
    assert access.serve_rights("gpu") == [
        s for r in ("allocate", "release", "bind", "status") for s in (f"asr.gpu.{r}", f"asr.gpu.{r}.*")
    ]


def test_applications_by_scope() -> None:
    plain = nats_users.app_permissions(nats_users.AppUser(name="app", scope="transcribe"))
    admin = nats_users.app_permissions(nats_users.AppUser(name="ops", scope="admin"))
    plain_pub = plain["publish"]["allow"]  # type: ignore[index]
    admin_pub = admin["publish"]["allow"]  # type: ignore[index]
    assert subjects.TRANSCRIBE_ALL in plain_pub and subjects.CANCEL_ALL in plain_pub
    assert "asr.lifecycle.stop" not in plain_pub and "asr.via.*.>" not in plain_pub
    assert "asr.lifecycle.stop" in admin_pub and "asr.recovery.close_breaker" in admin_pub
    # Its inbox and its own jobs' states; its own jobs' requests, never another application's.
    assert plain["subscribe"]["allow"] == ["_INBOX.app.>", "asr.jobs.state.nats-app.>"]  # type: ignore[index]
    assert "asr.jobs.app.app.>" in plain_pub and not any(p.startswith("asr.jobs.app.*") for p in plain_pub)
    # Its own live sessions (open and feed), never another application's nor the gateway's.
    assert "asr.live.app.app.>" in plain_pub and not any(
        p.startswith(("asr.live.app.*", "asr.live.in")) for p in plain_pub
    )
    assert "asr.jobs.state.>" in admin["subscribe"]["allow"]  # type: ignore[index]
    assert subjects.PROGRESS_ALL in admin["subscribe"]["allow"]  # type: ignore[index]


def test_the_rendered_configuration_has_no_marker_left_and_every_actor_its_rights() -> None:
    template = (Path(__file__).parents[2] / "nats.conf").read_text()
    rendered = nats_users.render(template, [])
    assert not [line for line in rendered.splitlines() if line.strip().startswith("# @")]
    for actor in access.ACTORS:
        for subject in access.publish_rights(actor) + access.serve_rights(actor):
            assert f'"{subject}"' in rendered, (actor, subject)
