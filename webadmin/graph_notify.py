"""Microsoft Graph change notifications: the endpoint Graph calls (``/graph/notify``), reachable without a login.

Graph first validates the URL (a POST with ``?validationToken=...`` that must be echoed as text/plain
within 10 seconds), then posts notifications, and lifecycle notifications to the same URL. Nothing
in a notification is trusted for content: one that names a subscription of ours with its
clientState only tells the watch service to read that folder's delta (watch.py). Anything else is
answered the same way and dropped, so the endpoint tells a stranger nothing.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, g, request

from . import csrf

bp = Blueprint("graph_notify", __name__)
TOKEN_MAX = 1024
BODY_MAX = 1 << 20  # Graph batches up to some hundred notifications; far below this
EVENTS = {"created", "updated", "missed", "subscriptionRemoved", "reauthorizationRequired"}


@bp.post("/graph/notify")
@csrf.exempt
def notify():
    token = request.args.get("validationToken")
    if token is not None:
        if len(token) > TOKEN_MAX:
            abort(400)
        return Response(token, 200, mimetype="text/plain")
    if (request.content_length or 0) > BODY_MAX:
        abort(413)
    try:
        items = json.loads(request.get_data(cache=False) or b"{}").get("value", [])
    except (ValueError, AttributeError):
        abort(400)
    if not isinstance(items, list):
        abort(400)
    for item in items[:1000]:
        if not isinstance(item, dict):
            continue
        sid, state = item.get("subscriptionId"), item.get("clientState")
        kind = item.get("lifecycleEvent") or item.get("changeType")
        if isinstance(sid, str) and isinstance(state, str) and kind in EVENTS:
            g.state.graph_notification(sid, state, kind)
    return Response("", 202)
