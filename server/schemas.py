"""Request and response schemas of the API (camelCase, as the deployed system uses).

flask-smorest validates requests with them and generates /api/openapi.json from them.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from core.contract import CLIENT_ID_RE
from core.fleet import SORTS

# Postgres cannot hold NUL in text, so a NUL in a query parameter would fail in the database.
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="must not contain NUL characters")
CLIENT_ID = validate.Regexp(CLIENT_ID_RE.pattern, error="must be a client uuid")


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    perPage = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ClientListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(["alive", "stale", "down"]))
    search = fields.String(validate=[validate.Length(min=1, max=100), NO_NUL])
    sort = fields.String(load_default="hostname", validate=validate.OneOf(list(SORTS)))


class EventListArgs(PageArgs):
    clientUuid = fields.String(validate=CLIENT_ID)


class ServiceFailedSchema(Schema):
    unit = fields.String(allow_none=True)
    failedAt = fields.String(allow_none=True)
    acknowledgedAt = fields.String(allow_none=True)
    acknowledgedBy = fields.String(allow_none=True)


class ClientSchema(Schema):
    uuid = fields.String()
    hostname = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    softwareVersion = fields.String(allow_none=True)
    groupId = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["alive", "stale", "down"]})
    lastSeenAt = fields.String(allow_none=True)
    lastSeenSecondsAgo = fields.Float()
    lastHeartbeatAt = fields.String(allow_none=True)
    processStatus = fields.String(allow_none=True)
    presence = fields.String(allow_none=True)
    mqttReconnectCount = fields.Integer(allow_none=True)
    mqttLastDisconnectAt = fields.String(allow_none=True)
    serviceFailed = fields.Nested(ServiceFailedSchema, allow_none=True)
    serviceFailedOpen = fields.Boolean()


class ClientDetailSchema(ClientSchema):
    health = fields.Dict(allow_none=True)
    firstSeenAt = fields.String()


class CrashedClientSchema(ClientSchema):
    reason = fields.String(metadata={"enum": ["process_crashed", "heartbeat_stale"]})


class ClientPageSchema(Schema):
    total = fields.Integer()
    page = fields.Integer()
    perPage = fields.Integer()
    items = fields.List(fields.Nested(ClientSchema))


class ClientListSchema(Schema):
    items = fields.List(fields.Nested(ClientSchema))


class CrashedListSchema(Schema):
    items = fields.List(fields.Nested(CrashedClientSchema))


class AcknowledgedSchema(Schema):
    client = fields.Nested(ClientSchema)
    retainedCleared = fields.Boolean(
        metadata={"description": "whether the broker confirmed clearing the retained report"})


class OverviewArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    perPage = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class ReconnectFiguresSchema(Schema):
    uuid = fields.String()
    hostname = fields.String(allow_none=True)
    mqttReconnectCount = fields.Integer(allow_none=True)
    mqttLastDisconnectAt = fields.String(allow_none=True)


class OverviewSchema(Schema):
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    total = fields.Integer()
    page = fields.Integer()
    perPage = fields.Integer()
    clients = fields.List(fields.Nested(ReconnectFiguresSchema),
                          metadata={"description": "reconnect figures, most reconnects first"})


class EventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    severity = fields.String()
    clientUuid = fields.String(allow_none=True)
    occurredAt = fields.String()
    details = fields.Dict(allow_none=True)


class EventPageSchema(Schema):
    total = fields.Integer()
    page = fields.Integer()
    perPage = fields.Integer()
    items = fields.List(fields.Nested(EventSchema))
