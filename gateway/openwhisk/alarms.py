"""OpenWhisk's alarms package: the feeds `/whisk.system/alarms/alarm` (cron), `interval` and
`once`, as the npm client's `feeds.create/get/delete` invoke them.

A feed call is a blocking invoke of the feed action with `lifecycleEvent` (`CREATE`, `READ`,
`UPDATE`, `DELETE`), `triggerName` (`/ns/name`, `_` for the caller's namespace) and `authKey`
(never stored: the caller's own key authorises the call), plus the feed's parameters. CREATE
stores an event schedule (`eventbus.scheduler`) for the trigger; the dispatchers' scheduler
publishes one `openwhisk.alarm.tick` event per tick, claimed once across dispatchers, and the
gateway fires the trigger from it through `fire` (`AlarmFires`), as a manual fire does: each
active rule's action with the trigger's parameters under the payload. Deleting the trigger
deletes its alarm.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from eventbus.errors import NotFoundError
from eventbus.namespaces import local_name
from eventbus.scheduler import (
    EventSchedule,
    delete_event_schedule,
    get_event_schedule,
    put_event_schedule,
)
from eventbus.schedules import Schedule, create_clock
from gateway.auth import ForbiddenError
from gateway.auth.access import namespace
from gateway.openwhisk import shapes
from gateway.openwhisk.common import ACTIVATION_HEADER, as_json, entity, ow_store, qualified
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.invoking import parameters
from gateway.state import state_of
from runtimes.activations import new_activation_id

#: the event type suffix of an alarm's tick (`gateway.openwhisk.alarm_fires` fires on it)
ALARM_TYPE_SUFFIX: Final = "openwhisk.alarm.tick"
FEEDS: Final = ("alarm", "interval", "once")
LIFECYCLE: Final = ("CREATE", "READ", "UPDATE", "DELETE")

router = APIRouter(prefix="/api/v1/namespaces/whisk.system/actions/alarms", tags=["openwhisk"])


def _date(params: dict[str, Any], key: str) -> datetime | None:
    """A date as the alarms package takes it: RFC 3339 text or milliseconds since the epoch."""
    value = params.get(key)
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, UTC)
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise BadRequestError(f"{key} {value!r} is not a date (use ISO 8601)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _payload(params: dict[str, Any]) -> dict[str, Any]:
    value = params.get("trigger_payload", {})
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(f"trigger_payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequestError("trigger_payload must be a JSON object")
    return value


def schedule_of(feed: str, params: dict[str, Any], now: datetime) -> Schedule:
    """The schedule a feed's parameters describe; 400 with the reason when they describe none."""
    start, stop = _date(params, "startDate"), _date(params, "stopDate")
    fields: dict[str, Any] = {"payload": _payload(params)}
    if feed == "alarm":
        if not params.get("cron"):
            raise BadRequestError("the alarm feed needs `cron`")
        fields |= {"cron": params["cron"], "timezone": params.get("timezone") or "UTC"}
    elif feed == "interval":
        minutes = params.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise BadRequestError("the interval feed needs `minutes`, a whole number over 0")
        # without startDate the first fire is now, then every `minutes`
        fields |= {"interval_s": minutes * 60}
        start = start or now
    else:
        date = _date(params, "date")
        if date is None:
            raise BadRequestError("the once feed needs `date`")
        if date <= now:
            raise BadRequestError(f"date {params['date']!r} is in the past")
        fields |= {"interval_s": 60}
        start, stop = date, date + timedelta(seconds=30)  # one tick, at `date`
    if start is not None:
        fields["start"] = start
    if stop is not None:
        fields["stop"] = stop
    try:
        return Schedule.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise BadRequestError(f"invalid alarm: {reasons}") from exc


def config_of(found: EventSchedule) -> dict[str, Any]:
    """The alarm's configuration as the alarms package's READ answers it."""
    schedule = found.schedule
    config: dict[str, Any] = {"name": local_name(found.name), "payload": found.data}
    if schedule.cron is not None:
        config |= {"cron": schedule.cron, "timezone": schedule.timezone}
    else:
        config["minutes"] = (schedule.interval_s or 0) // 60
    for key, value in (("startDate", schedule.start_at), ("stopDate", schedule.stop_at)):
        if value is not None:
            config[key] = value.isoformat()
    return config


_PARAMETERS: Final = {
    "alarm": ("cron", "timezone", "trigger_payload", "startDate", "stopDate"),
    "interval": ("minutes", "trigger_payload", "startDate", "stopDate"),
    "once": ("date", "trigger_payload", "deleteAfterFire"),
}


def _feed(feed: str) -> str:
    if feed not in FEEDS:
        raise NotFoundError(f"the action /whisk.system/alarms/{feed} does not exist")
    return feed


@router.get("/{feed}")
async def get_feed(feed: str) -> Response:
    """The feed action's document (the alarms package is the system's, shared by everyone)."""
    feed = _feed(feed)
    return as_json(
        {
            "namespace": "whisk.system/alarms",
            "name": feed,
            "version": "0.0.1",
            "publish": True,
            "exec": {"kind": "nodejs:default", "binary": False},
            "annotations": [{"key": "feed", "value": f"/whisk.system/alarms/{feed}"}],
            "parameters": [{"key": k, "value": ""} for k in _PARAMETERS[feed]],
            "limits": {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1},
        }
    )


@router.put("/{feed}")
@router.delete("/{feed}")
async def change_feed(feed: str) -> Response:
    """The alarms package belongs to `whisk.system`: nobody changes it (403)."""
    _feed(feed)
    raise ForbiddenError("the action /whisk.system/alarms/" + feed + " is the system's: read only")


@router.post("/{feed}")
async def feed_action(request: Request, feed: str) -> Response:
    """Invoke a feed action of the alarms package (blocking): its activation as the answer."""
    feed = _feed(feed)
    params = parameters(await request.body())
    event = params.get("lifecycleEvent")
    if event not in LIFECYCLE:
        raise BadRequestError(f"lifecycleEvent must be one of {', '.join(LIFECYCLE)}")
    trigger_ref = params.get("triggerName")
    if not isinstance(trigger_ref, str) or not trigger_ref:
        raise BadRequestError("triggerName is required (`/namespace/name`)")
    ns = namespace(request)
    qname = qualified(ns, entity(trigger_ref, ns, "trigger"), "trigger")
    if await ow_store(request).get("trigger", qname) is None and event != "DELETE":
        raise NotFoundError(f"trigger {local_name(qname)!r} does not exist")
    state = state_of(request)
    bus = state.bus
    result: dict[str, Any]
    if event in ("CREATE", "UPDATE"):
        # the schedulers' clock: the alarm is armed from this moment on, whenever they see it
        now = create_clock(state.settings.schedule_clock).now()
        schedule = schedule_of(feed, params, now)
        alarm = EventSchedule(
            name=qname,
            schedule=schedule,
            type=bus.event_type(ALARM_TYPE_SUFFIX),
            subject=qname,
            data=schedule.payload,
            created=now,
        )
        await put_event_schedule(bus, alarm)
        result = {"status": "success", "nextFires": [t.isoformat() for t in schedule.upcoming(now)]}
    elif event == "READ":
        found = await get_event_schedule(bus, qname)
        if found is None:
            raise NotFoundError(f"trigger {local_name(qname)!r} has no alarm")
        result = {"config": config_of(found), "status": {"active": True}}
    else:
        if not await delete_event_schedule(bus, qname):
            raise NotFoundError(f"trigger {local_name(qname)!r} has no alarm")
        result = {"status": "success"}
    return _activation(feed, ns, result)


def _activation(feed: str, ns: str, result: dict[str, Any]) -> Response:
    """A successful blocking activation of the feed action, as OpenWhisk answers one."""
    activation_id = new_activation_id()
    now = shapes.ms(datetime.now(UTC))
    doc = {
        "namespace": ns,
        "name": feed,
        "activationId": activation_id,
        "version": "0.0.1",
        "subject": ns,
        "start": now,
        "end": now,
        "duration": 0,
        "publish": False,
        "annotations": [{"key": "path", "value": f"whisk.system/alarms/{feed}"}],
        "response": {"status": "success", "statusCode": 0, "success": True, "result": result},
        "logs": [],
    }
    return as_json(doc, 200, {ACTIVATION_HEADER: activation_id})
