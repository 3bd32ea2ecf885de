"""Audit: the trail of account changes, runs, logins and document reads, filterable."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from .auth import admin_required

bp = Blueprint("audit", __name__)


@bp.get("/audit")
@admin_required
def index():
    action = request.args.get("action", "").strip() or None
    actor = request.args.get("actor", "").strip() or None
    rows = g.state.audit_entries(500, action, actor)
    return render_template("audit/index.html", rows=rows, action=action or "", actor=actor or "")
