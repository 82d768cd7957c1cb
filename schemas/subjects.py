"""Every NATS subject the system uses, in one place.

Model ids may contain dots (``whisper-tiny.en``), so a model id is always the
*last* part of a subject and wildcards over models use ``>``.
"""

from __future__ import annotations

PREFIX = "asr"

REGISTRY_LIST = "asr.registry.list"
REGISTRY_GET = "asr.registry.get"
REGISTRY_SET_DEFAULT = "asr.registry.set_default"

LIFECYCLE_ENSURE = "asr.lifecycle.ensure"
LIFECYCLE_STOP = "asr.lifecycle.stop"
LIFECYCLE_STATUS = "asr.lifecycle.status"
LIFECYCLE_PULL = "asr.lifecycle.pull"  # per node: weights are per host

# nats.micro discovery: each actor is a service named SERVICE_PREFIX + its name, its metadata {node, pid};
# SERVICE_INFO asks every service for its info (name, id, metadata).
SERVICE_PREFIX = "asrpro-"
SERVICE_INFO = "$SRV.INFO"

GPU_ALLOCATE = "asr.gpu.allocate"
GPU_RELEASE = "asr.gpu.release"
GPU_STATUS = "asr.gpu.status"
GPU_BIND = "asr.gpu.bind"

METRICS_SNAPSHOT = "asr.metrics.snapshot"

RECOVERY_CLOSE_BREAKER = "asr.recovery.close_breaker"

TRANSCRIBE_PREFIX = "asr.transcribe."
TRANSCRIBE_ALL = "asr.transcribe.>"

EVENTS_PREFIX = "asr.events."
EVENTS_ALL = "asr.events.>"

# Progress of a transcription (asr.progress.<model>): live only, outside the stream — progress is not history.
PROGRESS_PREFIX = "asr.progress."
PROGRESS_ALL = "asr.progress.>"
# A requester that gave up (asr.cancel.<request id>): the proxy serving it stops, freeing its slot.
CANCEL_PREFIX = "asr.cancel."
CANCEL_ALL = "asr.cancel.>"

# A request a proxy hands to the proxies of another node (asr.forward.<node>.<model>): that node has the model
# ready, or was chosen to start it. Only proxies publish or serve it.
FORWARD_PREFIX = "asr.forward."
FORWARD_ALL = "asr.forward.>"
# The HTTP gateway's way in, through its own node's proxies (asr.via.<node>.<model>): routed like
# asr.transcribe.<model>, without crossing to another host first (NATS spreads a queue group over the cluster).
VIA_PREFIX = "asr.via."
VIA_ALL = "asr.via.>"

EVENTS_STREAM = "ASR_EVENTS"

# Live sessions (schemas/live.py): the gateway opens them on asr.live.open (its node's live actor:
# asr.live.open.<node>) and sends its clients' events on asr.live.in.<session>; an application on NATS opens its own
# on asr.live.app.<user>.open and sends on asr.live.app.<user>.in.<session>, which only it may publish.
LIVE_OPEN = "asr.live.open"
LIVE_IN_PREFIX = "asr.live.in."
LIVE_IN_ALL = "asr.live.in.>"
LIVE_APP_PREFIX = "asr.live.app."
LIVE_APP_IN_ALL = "asr.live.app.*.in.>"

# Durable jobs: requests the gateway makes of the jobs actor, and the work queue only the jobs actor touches (one
# subject per owner, so that owners are served in turn).
JOBS_SUBMIT = "asr.jobs.submit"
JOBS_GET = "asr.jobs.get"
JOBS_LIST = "asr.jobs.list"
JOBS_CANCEL = "asr.jobs.cancel"
JOBS_RESULT = "asr.jobs.result"
JOBS_SECRET = "asr.jobs.webhook_secret"
# A job's end, queued for its webhook's delivery (work queue: retried with back-off until a 2xx or given up).
JOBS_WEBHOOKS = "asr.jobs.webhooks"
JOBS_WEBHOOK_STREAM = "ASR_JOB_WEBHOOKS"
# Applications over NATS: requests on asr.jobs.app.<user>.<op>, which only <user> may publish (its owner is
# "nats-<user>"), and its jobs' state changes on asr.jobs.state.<owner>.<job id>, which only it (and admin
# applications) may read: not on the shared asr.events.>.
JOBS_APP_PREFIX = "asr.jobs.app."
JOBS_STATE_PREFIX = "asr.jobs.state."
JOBS_STATE_ALL = "asr.jobs.state.>"
JOBS_QUEUE_PREFIX = "asr.jobs.queue."
JOBS_QUEUE_ALL = "asr.jobs.queue.>"
JOBS_STREAM = "ASR_JOB_QUEUE"  # work-queue retention: a job's message is gone once its job ended
JOBS_BUCKET = "ASR_JOBS"  # key <job id>: the job's record (state, progress, checkpoint)
JOBS_AUDIO_OWNER = "jobs"  # ASR_AUDIO_jobs holds jobs' audio and results, without a time-to-live
# Audio too large for one message goes to its sender's own object store bucket ASR_AUDIO_<user> (the gateway's,
# see AUDIO_SENDERS); the proxy reads it by the unguessable name the request carries.
AUDIO_BUCKET_PREFIX = "ASR_AUDIO_"
USER_NAME = r"[a-z][a-z0-9_-]{0,31}"  # a NATS user of this system: one subject token, one bucket name suffix
OWNER_NAME = r"[a-z][a-z0-9_-]{0,39}"  # a job's owner: one subject token (key-<digest>, nats-<user>, local)
# The users whose large audio may sit in a bucket of theirs: only the gateway (applications get no JetStream).
AUDIO_SENDERS = ("gateway", "jobs")
INBOX_ROOT = "_INBOX"  # each NATS user's replies arrive under _INBOX.<user>. and only it may subscribe there
GPU_BUCKET = "ASR_GPU"  # key <node>: that node's AllocationTable (its devices, compare-and-set)
SERVERS_BUCKET = "ASR_SERVERS"  # key <node>.<model id>: a node's lifecycle actor's record of a server it runs
NODES_BUCKET = "ASR_NODES"  # key <node name>: its lifecycle actor's heartbeat (NodeRecord), expires with the TTL
# Applications' NATS users and HTTP API keys mirrored to every host (asrpro/access_sync.py): admin only.
ACCESS_BUCKET = "ASR_ACCESS"
SETTINGS_BUCKET = "ASR_SETTINGS"  # key "default_model": what whisper-1 means


def audio_bucket(user: str) -> str:
    return AUDIO_BUCKET_PREFIX + user


def job_queue(owner: str) -> str:
    return JOBS_QUEUE_PREFIX + owner


def inbox_prefix(user: str) -> str:
    return f"{INBOX_ROOT}.{user}"


def jobs_app(user: str, op: str) -> str:
    """An application's own jobs request subject: asr.jobs.app.<user>.submit (and .get, .list, ...)."""
    return f"{JOBS_APP_PREFIX}{user}.{op}"


def jobs_app_all(op: str) -> str:
    """What the jobs actor serves: asr.jobs.app.*.<op>."""
    return f"{JOBS_APP_PREFIX}*.{op}"


def app_of_jobs_subject(subject: str) -> str:
    """The application (NATS user) that published on asr.jobs.app.<user>...: only it may (nats.conf)."""
    return subject[len(JOBS_APP_PREFIX) :].split(".", 1)[0]


def live_in(session_id: str) -> str:
    return LIVE_IN_PREFIX + session_id


def live_app(user: str, op: str) -> str:
    """An application's own live subjects: asr.live.app.<user>.open, asr.live.app.<user>.in.<session>."""
    return f"{LIVE_APP_PREFIX}{user}.{op}"


def app_of_live_subject(subject: str) -> str:
    """The application (NATS user) that published on asr.live.app.<user>...: only it may (nats.conf)."""
    return subject[len(LIVE_APP_PREFIX) :].split(".", 1)[0]


def nats_owner(user: str) -> str:
    """The owner of an application's NATS jobs: never an API key's (`key-...`) nor the loopback one (`local`)."""
    return f"nats-{user}"


def job_state(owner: str, job_id: str) -> str:
    return f"{JOBS_STATE_PREFIX}{owner}.{job_id}"


def transcribe(model: str) -> str:
    return TRANSCRIBE_PREFIX + model


def progress(model: str) -> str:
    return PROGRESS_PREFIX + model


def forward(node: str, model: str) -> str:
    return f"{FORWARD_PREFIX}{node}.{model}"


def node_and_model(subject: str) -> tuple[str, str]:
    """(node, model) of a per-node transcription subject: asr.forward.<node>.<model>, asr.via.<node>.<model>."""
    _asr, _verb, node, model = subject.split(".", 3)
    return node, model


def on_node(subject: str, node: str) -> str:
    """A node's own copy of a per-node request subject: asr.lifecycle.ensure.<node>; for a wildcard one the node
    comes before the wildcard (asr.forward.<node>.>)."""
    if subject.endswith(".>"):
        return f"{subject[:-1]}{node}.>"
    return f"{subject}.{node}"


def cancel(request_id: str) -> str:
    return CANCEL_PREFIX + request_id


def model_from_transcribe(subject: str) -> str:
    return subject[len(TRANSCRIBE_PREFIX) :]


def event(kind: str, model: str) -> str:
    return f"{EVENTS_PREFIX}{kind}.{model}"


def events_of_model(model: str) -> str:
    return f"{EVENTS_PREFIX}*.{model}"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching (of subjects, and of KV keys): `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)
