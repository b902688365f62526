"""The staff panels (pages). The fleet panels arrive with the staff web app."""

from __future__ import annotations

from flask import Blueprint, render_template

from server.auth import current_principal, require_role

bp = Blueprint("web", __name__)


@bp.get("/")
@require_role("viewer", page=True)
def home():
    return render_template("home.html", principal=current_principal())
