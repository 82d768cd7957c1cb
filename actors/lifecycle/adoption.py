"""Adoption: servers of this deployment that outlived a previous lifecycle actor are taken over at start (checked,
admitted again, their idle clocks resumed from their records); one that is not healthy or not in the catalogue is
stopped, and the records of servers that are gone are dropped."""

from __future__ import annotations

import time

from actors.lifecycle.server import Server
from actors.lifecycle.starter import Starter
from framework.catalogue import Catalogue


async def adopt(starter: Starter, catalogue: Catalogue) -> None:
    """Take over servers of this deployment that outlived a previous lifecycle actor."""
    handles = await starter.runtime.adopt()
    if handles and catalogue.listing is None:
        # Without the catalogue we cannot tell an orphan from a server to keep: fail, the supervisor retries.
        raise RuntimeError("the model catalogue is not known (is the registry running?): cannot adopt servers")
    records = await starter.records.load()
    for handle in handles:
        model = catalogue.find(handle.model)
        problem = f"{handle.model} is not in the catalogue" if model is None else ""
        problem = problem or await starter.probe.problem(handle)
        if problem or model is None:
            starter.log.warning("stopping %s instead of adopting it: %s", handle.model, problem)
            await starter.runtime.stop(handle)
            continue
        record = records.pop(model.id, None)
        allocation = await starter.placement.admit(model, time.monotonic())
        server = Server(model=model, handle=handle, allocation=allocation, state="ready")
        if record is not None:  # resume its idle clock rather than restart it
            server.keep_alive = record.keep_alive
            server.ran_on, server.compute_type = record.device, record.compute_type
            # Serving when recorded: requests may still run (the proxies do not need us for warm requests),
            # and their end was reported to the actor that died: the clock starts now.
            if not record.inflight:
                server.last_activity = record.last_activity or server.last_activity
        starter.servers[model.id] = server
        await starter.ready(server, adopted=True)
    for model_id in records:  # recorded, but gone (e.g. local processes die with their lifecycle actor)
        await starter.forget(model_id)
