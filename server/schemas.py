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


MAX_ID = 2**31 - 1  # group ids are 32-bit integers
MAX_SHOT_ID = 2**63 - 1

# Far beyond any real list; keeps OFFSET within the 64-bit integers databases accept.
MAX_PAGE = 1_000_000


class ErrorSchema(Schema):
    """Every error's body (server/app.py): what went wrong, in words, and for a refused
    request, which parameter or field and why."""

    error = fields.String(required=True, metadata={"description": "the HTTP status' name"})
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "per location, per field: the reasons"})


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    perPage = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ClientListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(["alive", "stale", "down"]))
    search = fields.String(validate=[validate.Length(min=1, max=100), NO_NUL])
    groupId = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    sort = fields.String(load_default="hostname", validate=validate.OneOf(list(SORTS)))


class EventListArgs(PageArgs):
    clientUuid = fields.String(validate=CLIENT_ID)


class AuditListArgs(PageArgs):
    perPage = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class PagedSchema(Schema):
    """Where a page stands in the whole list."""

    total = fields.Integer()
    page = fields.Integer()
    perPage = fields.Integer()


class ServiceFailedSchema(Schema):
    unit = fields.String(allow_none=True)
    failedAt = fields.String(allow_none=True)
    acknowledgedAt = fields.String(allow_none=True)
    acknowledgedBy = fields.String(allow_none=True)


ACTIONS = ["reboot_host", "shutdown_host", "restart_app"]
ACTION_LIST = fields.List(fields.String(validate=validate.OneOf(ACTIONS)),
                          validate=validate.Length(max=len(ACTIONS)), allow_none=True)


class PowerStateSchema(Schema):
    appliedState = fields.String(metadata={"enum": ["on", "off"]})
    source = fields.String(allow_none=True, metadata={
        "description": "mqtt_intent or local_fallback, as the screen reported"})
    result = fields.String(metadata={"enum": ["ok", "skipped", "error"]})
    detail = fields.String(allow_none=True)
    reportedAt = fields.String(allow_none=True)


class ClientSchema(Schema):
    uuid = fields.String()
    hostname = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    softwareVersion = fields.String(allow_none=True)
    groupId = fields.Integer(allow_none=True, metadata={"description": "the group staff set"})
    groupName = fields.String(allow_none=True)
    reportedGroupId = fields.String(allow_none=True, metadata={
        "description": "the group the screen named in discovery; never overrides groupId"})
    supportedActions = fields.List(fields.String(validate=validate.OneOf(ACTIONS)))
    supportedActionsSource = fields.String(metadata={
        "enum": ["admin", "group", "discovery", "learned", "default"]})
    powerState = fields.Nested(PowerStateSchema, allow_none=True)
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


class ActivityBucketSchema(Schema):
    start = fields.String()
    heartbeats = fields.Integer()
    messages = fields.Integer()
    state = fields.String(metadata={
        "enum": ["online", "offline", "no_data"],
        "description": "online: some message; offline: none while the client was known; "
                       "no_data: before it was first seen, or the current bucket so far"})


class ActivitySchema(Schema):
    clientUuid = fields.String()
    bucketSeconds = fields.Integer()
    start = fields.String()
    end = fields.String(metadata={"description": "end of the current bucket (exclusive)"})
    onlineSeconds = fields.Integer()
    heartbeats = fields.Integer()
    messages = fields.Integer()
    buckets = fields.List(fields.Nested(ActivityBucketSchema), metadata={
        "description": "every bucket of the window, oldest first, zero-filled"})


class CrashedClientSchema(ClientSchema):
    reason = fields.String(metadata={"enum": ["process_crashed", "heartbeat_stale"]})


class ClientPageSchema(PagedSchema):
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
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    perPage = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class ReconnectFiguresSchema(Schema):
    uuid = fields.String()
    hostname = fields.String(allow_none=True)
    mqttReconnectCount = fields.Integer(allow_none=True)
    mqttLastDisconnectAt = fields.String(allow_none=True)
    latestScreenshotType = fields.String(allow_none=True)
    priorityScreenshotType = fields.String(allow_none=True)
    priorityScreenshotReceivedAt = fields.String(allow_none=True)
    hasActivePriorityScreenshot = fields.Boolean()


class OverviewSummarySchema(Schema):
    activePriorityScreenshots = fields.Integer(metadata={
        "description": "screens whose event_start/event_stop capture is still active"})


class OverviewSchema(PagedSchema):
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    clients = fields.List(fields.Nested(ReconnectFiguresSchema),
                          metadata={"description": "reconnect figures, most reconnects first"})
    summary = fields.Nested(OverviewSummarySchema)


class EventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    severity = fields.String()
    clientUuid = fields.String(allow_none=True)
    occurredAt = fields.String()
    details = fields.Dict(allow_none=True)


class EventPageSchema(PagedSchema):
    items = fields.List(fields.Nested(EventSchema))


class CommandRequestSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500), NO_NUL])
    force = fields.Boolean(load_default=False, metadata={
        "description": "admin only: issue despite the lockout (audited)"})


class ShortcutRequestSchema(Schema):
    """Body of the compatible routes /restart, /shutdown and /restart_app (optional)."""

    reason = fields.String(load_default="requested by staff",
                           validate=[validate.Length(min=1, max=500), NO_NUL])
    force = fields.Boolean(load_default=False)


class TransitionSchema(Schema):
    state = fields.String()
    at = fields.String()
    source = fields.String()


class CommandSchema(Schema):
    commandId = fields.String()
    clientUuid = fields.String()
    action = fields.String()
    state = fields.String(metadata={"enum": [
        "queued", "sent", "accepted", "execution_started", "completed", "failed", "expired",
        "timed_out", "cancelled"]})
    reason = fields.String()
    requestedBy = fields.String()
    forced = fields.Boolean()
    issuedAt = fields.String()
    expiresAt = fields.String()
    sentAt = fields.String(allow_none=True)
    acceptedAt = fields.String(allow_none=True)
    executionStartedAt = fields.String(allow_none=True)
    completedAt = fields.String(allow_none=True)
    failedAt = fields.String(allow_none=True)
    finishedAt = fields.String(allow_none=True)
    completionDueAt = fields.String(allow_none=True)
    errorCode = fields.String(allow_none=True)
    errorMessage = fields.String(allow_none=True)
    groupId = fields.Integer(allow_none=True, metadata={
        "description": "issued through this group's command"})
    held = fields.Boolean(metadata={
        "description": "a group command waiting (queued) for its turn"})
    history = fields.List(fields.Nested(TransitionSchema))


class CommandEnvelopeSchema(Schema):
    command = fields.Nested(CommandSchema)


class CommandPageSchema(PagedSchema):
    items = fields.List(fields.Nested(CommandSchema))


class LockedSchema(Schema):
    error = fields.String()
    message = fields.String()
    retryAfter = fields.Integer()
    blockingCommand = fields.Dict()


class GroupSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String(allow_none=True)
    supportedActions = ACTION_LIST
    members = fields.Integer()
    createdAt = fields.String()


class GroupListSchema(Schema):
    items = fields.List(fields.Nested(GroupSchema))


class GroupEnvelopeSchema(Schema):
    group = fields.Nested(GroupSchema)


GROUP_NAME = [validate.Length(min=1, max=64), NO_NUL]
GROUP_DESCRIPTION = [validate.Length(max=500), NO_NUL]


class GroupCreateSchema(Schema):
    name = fields.String(required=True, validate=GROUP_NAME)
    description = fields.String(load_default=None, allow_none=True, validate=GROUP_DESCRIPTION)
    supportedActions = fields.List(
        fields.String(validate=validate.OneOf(ACTIONS)), load_default=None, allow_none=True,
        metadata={"description": "an admin's setting for every member without its own"})


class GroupPatchSchema(Schema):
    name = fields.String(validate=GROUP_NAME)
    description = fields.String(allow_none=True, validate=GROUP_DESCRIPTION)
    supportedActions = ACTION_LIST


class GroupAssignmentSchema(Schema):
    groupId = fields.Integer(required=True, allow_none=True,
                             validate=validate.Range(min=1, max=MAX_ID))


class SupportedActionsSchema(Schema):
    supportedActions = fields.List(
        fields.String(validate=validate.OneOf(ACTIONS)), required=True, allow_none=True,
        metadata={"description": "null: back to the group's setting, discovery or default"})


class GroupCommandRequestSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500), NO_NUL])


class GroupCommandRefusalSchema(Schema):
    clientUuid = fields.String()
    hostname = fields.String(allow_none=True)
    code = fields.String(metadata={"enum": ["unsupported_action", "locked"]})
    message = fields.String()
    retryAfter = fields.Integer(allow_none=True)


class GroupCommandResultSchema(Schema):
    groupId = fields.Integer()
    action = fields.String()
    maxParallel = fields.Integer()
    issued = fields.List(fields.Nested(CommandSchema))
    refused = fields.List(fields.Nested(GroupCommandRefusalSchema))


class PictureArgs(Schema):
    size = fields.String(load_default="full", validate=validate.OneOf(["full", "thumb"]),
                         metadata={"description": "thumb: the thumbnail made at ingest"})


class ScreenshotSchema(Schema):
    id = fields.Integer()
    capturedAt = fields.String()
    receivedAt = fields.String()
    type = fields.String(metadata={"enum": ["periodic", "event_start", "event_stop"]})
    bytes = fields.Integer()
    width = fields.Integer()
    height = fields.Integer()
    url = fields.String()
    thumbUrl = fields.String()


class ScreenshotPageSchema(PagedSchema):
    items = fields.List(fields.Nested(ScreenshotSchema))


# Notifications -----------------------------------------------------------------------------

CHANNEL_NAME = [validate.Length(min=1, max=64), NO_NUL]
CHANNEL_URL = [validate.Length(min=4, max=2000), NO_NUL]
CHANNEL_TAGS = fields.List(fields.String(validate=[validate.Length(min=1, max=32), NO_NUL]),
                           validate=validate.Length(max=10))
SEVERITY_NAMES = ["info", "warning", "error", "critical"]


class ChannelSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    url = fields.String(metadata={"description": "redacted: scheme, user and host only"})
    tags = fields.List(fields.String())
    enabled = fields.Boolean()
    source = fields.String(metadata={"description": "env (NOTIFY_URLS) or admin"})
    createdAt = fields.String()
    updatedAt = fields.String()


class ChannelListSchema(Schema):
    items = fields.List(fields.Nested(ChannelSchema))


class ChannelEnvelopeSchema(Schema):
    channel = fields.Nested(ChannelSchema)


class ChannelCreateSchema(Schema):
    name = fields.String(required=True, validate=CHANNEL_NAME)
    url = fields.String(required=True, validate=CHANNEL_URL,
                        metadata={"description": "an Apprise URL; stored encrypted"})
    tags = CHANNEL_TAGS
    enabled = fields.Boolean(load_default=True)


class ChannelPatchSchema(Schema):
    name = fields.String(validate=CHANNEL_NAME)
    url = fields.String(validate=CHANNEL_URL)
    tags = CHANNEL_TAGS
    enabled = fields.Boolean()


class ChannelTestSchema(Schema):
    ok = fields.Boolean()
    error = fields.String(allow_none=True)
    notificationId = fields.Integer()


class NotificationSchema(Schema):
    id = fields.Integer()
    createdAt = fields.String()
    sentAt = fields.String(allow_none=True)
    channelId = fields.Integer(allow_none=True)
    channel = fields.String(metadata={"description": "redacted"})
    eventId = fields.Integer(allow_none=True)
    clientUuid = fields.String(allow_none=True)
    eventType = fields.String()
    severity = fields.String()
    kind = fields.String(metadata={"description": "alert, resolution, reminder, escalation, "
                                                  "digest, quiet_summary or test"})
    state = fields.String(metadata={"description": "pending, held, sent, failed or folded"})
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    title = fields.String()
    foldedInto = fields.Integer(allow_none=True)


class NotificationPageSchema(PagedSchema):
    items = fields.List(fields.Nested(NotificationSchema))


class RuleSchema(Schema):
    id = fields.Integer()
    eventTypes = fields.List(fields.String())
    minSeverity = fields.String()
    channelIds = fields.List(fields.Integer())
    groupId = fields.Integer(allow_none=True)
    createdAt = fields.String(allow_none=True, metadata={"description": "null: a default"})


class RuleListSchema(Schema):
    items = fields.List(fields.Nested(RuleSchema))
    defaults = fields.Boolean(metadata={"description": "no rule is stored: the defaults apply"})


class RuleCreateSchema(Schema):
    eventTypes = fields.List(fields.String(validate=[validate.Length(min=1, max=48), NO_NUL]),
                             load_default=list, validate=validate.Length(max=50),
                             metadata={"description": "empty: any event type"})
    minSeverity = fields.String(load_default="info", validate=validate.OneOf(SEVERITY_NAMES))
    channelIds = fields.List(fields.Integer(validate=validate.Range(min=1, max=MAX_ID)),
                             load_default=list, validate=validate.Length(max=50),
                             metadata={"description": "empty: every enabled channel"})
    groupId = fields.Integer(load_default=None, allow_none=True,
                             validate=validate.Range(min=1, max=MAX_ID))


class RuleEnvelopeSchema(Schema):
    rule = fields.Nested(RuleSchema)
