"""Every actor that may watch a KV bucket in nats.conf may also read its keys one by one: a view whose watch's
end-of-values marker came first reads the bucket (framework/kv_view.py), and a read refused for want of the right
waits out JetStream's timeout and leaves the view as it was."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_every_user_that_watches_a_bucket_may_read_it() -> None:
    conf = (REPO / "nats.conf").read_text()
    users = re.split(r"\n  ([A-Z_]+) = \{", conf)
    checked = 0
    for name, body in zip(users[1::2], users[2::2], strict=True):
        watched = set(re.findall(r'CONSUMER\.\*\.(KV_[A-Z_]+)"', body))
        read = set(re.findall(r'DIRECT\.GET\.(KV_[A-Z_]+)\.>"', body))
        assert watched <= read, f"{name} watches {sorted(watched - read)} but may not read them"
        checked += bool(watched)
    assert checked >= 5  # the parse found the actors' users
