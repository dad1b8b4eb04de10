"""The dashboard's actions on a run: Cancel, Resume, Delete.

Each is a ``POST`` (a ``GET`` to the same address answers 405) and changes
nothing unless all of these hold:

* **Writable.** The dashboard is not read-only (``iterflow ui --read-only``,
  or a store this process cannot write); then the buttons are disabled and
  the security middleware refuses every ``POST`` anyway.
* **Same origin.** The ``Origin`` header (else ``Referer``) names the host
  the request was sent to: a form on another site cannot post here.
* **CSRF token.** The form's ``csrf`` field equals the ``iterflow_csrf``
  cookie (``HttpOnly``, ``SameSite=Strict``), set with the first page a
  browser gets; compared in constant time.

The outcome is shown on the page the action redirects to (``303``) by a
fixed message chosen by a short code in the query string — never text from
the query itself — and, for Cancel and Resume, live on the run page as its
state changes.

* **Cancel** calls :func:`iterflow.store.request_cancel` when this iterflow
  has it; otherwise the message gives the command to type (``iterflow cancel
  RUN``).
* **Resume** starts ``iterflow resume RUN`` as a detached process when the
  run's source is known and its state is resumable; otherwise the message
  gives the command.
* **Delete** asks first (a confirmation page, itself a plain ``GET``), then
  calls :func:`iterflow.store.delete_run`.
* **Rewind to here**, on the iteration page of a looping task (or loop
  block) of a run that is not live, starts ``iterflow resume RUN
  --from-iteration K --task NAME`` as a detached process when the run's
  source is known; otherwise the message gives the command.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from iterflow.errors import StoreError

if TYPE_CHECKING:
    from iterflow.ui.app import Dashboard

__all__ = ["CSRF_COOKIE", "NOTICES", "cancel", "delete", "delete_page", "page_context",
           "resume", "rewind", "rewind_context", "set_csrf_cookie"]

CSRF_COOKIE = "iterflow_csrf"
_SLUG = re.compile(r"[\w.-]{1,200}")
LIVE = frozenset({"Running", "Pending"})
RESUMABLE = frozenset({"Failed", "Cancelled", "Crashed", "TimedOut", "TriggerFailed"})

#: What a redirect's ``done`` code says; ``{run}`` and ``{pid}`` are filled in (escaped).
NOTICES = {
    "cancel-requested": "Cancel requested: the process driving the run stops it at its next "
                        "iteration.",
    "cancel-command": "This dashboard cannot cancel runs; type: iterflow cancel {run}",
    "not-live": "The run is not running: nothing to cancel.",
    "resume-started": "Resuming: iterflow resume {run} started (process {pid}).",
    "resume-command": "The run's source is unknown here; type: iterflow resume {run}",
    "not-resumable": "Only a failed, cancelled or crashed run can be resumed.",
    "cancelled-dead": "The run's process had gone: the run is marked Cancelled.",
    "cancel-refused": "The run could not be cancelled (it has finished meanwhile).",
    "rewind-started": "Rewinding: iterflow resume {run} --from-iteration {k} --task {task} "
                      "started (process {pid}).",
    "rewind-command": "The run's source is unknown here; type: iterflow resume {run} "
                      "--from-iteration {k} --task {task}",
    "rewind-live": "The run is still running: cancel it before rewinding it.",
    "delete-refused": "The run could not be deleted (it may still be running).",
    "deleted": "Deleted run {run}.",
}


def _dash(request: Request) -> Dashboard:
    return request.app.state.dash  # type: ignore[no-any-return]


def csrf_token(request: Request) -> str:
    """The browser's CSRF token: its cookie, or a new one (set on the response)."""
    given = request.cookies.get(CSRF_COOKIE, "")
    if len(given) == 43 and given.replace("-", "").replace("_", "").isalnum():
        return given
    new = getattr(request.state, "csrf_new", None)
    if new is None:
        new = request.state.csrf_new = secrets.token_urlsafe(32)
    return new  # type: ignore[no-any-return]


def set_csrf_cookie(request: Request, response: Response) -> Response:
    """Give the response the CSRF cookie when this request made a new token."""
    new = getattr(request.state, "csrf_new", None)
    if new is not None:
        response.set_cookie(CSRF_COOKIE, new, path="/", httponly=True, samesite="strict")
    return response


def page_context(request: Request, dash: Dashboard, run: Any) -> dict[str, Any]:
    """What the run page's action buttons need: the token, what is allowed, a notice."""
    code = request.query_params.get("done", "")
    notice = NOTICES.get(code)
    if notice is not None:
        q = request.query_params
        pid, k, task = q.get("pid", ""), q.get("k", ""), q.get("task", "")
        # Only digits and task slugs come from the query (never free text).
        notice = notice.format(run=run.run_id, pid=pid if pid.isdigit() else "?",
                               k=k if k.isdigit() else "K",
                               task=task if _SLUG.fullmatch(task) else "NAME")
    return {
        "csrf": csrf_token(request),
        "writable": dash.writable,
        "can_cancel": run.state in LIVE,
        "can_resume": run.state in RESUMABLE,
        "can_delete": run.state not in LIVE,
        "notice": notice,
    }


async def _checked(request: Request) -> Any:
    """The run named in the path, once the request passed every check (module doc)."""
    dash = _dash(request)
    if not dash.writable:
        raise HTTPException(403, "The dashboard is read-only: it changes nothing.")
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "")
    if not origin or origin == "null" or urlsplit(origin).netloc != host:
        raise HTTPException(403, "Refused: the request does not come from this dashboard's "
                                 "own pages (Origin/Referer). Use the buttons on the run page.")
    sent = await _form_field(request, "csrf")
    kept = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        raise HTTPException(403, "Refused: the form's security token is missing or stale. "
                                 "Reload the run page and try again.")
    from iterflow.store import get_run

    try:
        return get_run(request.path_params["run_id"], store=dash.store)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from None


async def _form_field(request: Request, name: str) -> str:
    """One field of a small urlencoded form (our forms carry the token and nothing big)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 8192:
            raise HTTPException(413, "Refused: the form is too large.")
    try:
        values = parse_qs(body.decode("latin-1"), max_num_fields=8).get(name)
    except ValueError:  # more fields than any of our forms has
        raise HTTPException(400, "Refused: unexpected form fields.") from None
    return values[0] if values else ""


#: Outcomes after which the run page follows a run that is about to start.
STARTING = frozenset({"resume-started", "rewind-started"})


def _back(run_id: str, code: str, **extra: Any) -> RedirectResponse:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in {"done": code, **extra}.items())
    return RedirectResponse(f"/runs/{quote(run_id)}?{query}", status_code=303)


async def cancel(request: Request) -> Response:
    """``POST /runs/<run>/cancel``: ask the driving process to cancel the run."""
    run = await _checked(request)
    if run.state not in LIVE:
        return _back(run.run_id, "not-live")
    import iterflow.store

    request_cancel = getattr(iterflow.store, "request_cancel", None)
    if request_cancel is None:
        return _back(run.run_id, "cancel-command")
    try:
        outcome = request_cancel(run.run_id, store=_dash(request).store)
    except StoreError:  # it finished between the page and the click
        return _back(run.run_id, "cancel-refused")
    return _back(run.run_id, "cancel-requested" if outcome == "requested" else "cancelled-dead")


async def resume(request: Request) -> Response:
    """``POST /runs/<run>/resume``: start ``iterflow resume RUN`` in its own process."""
    run = await _checked(request)
    if run.state not in RESUMABLE:
        return _back(run.run_id, "not-resumable")
    if not run.source:
        return _back(run.run_id, "resume-command")
    pid = _detached(request, ["resume", run.run_id])
    return _back(run.run_id, "resume-started", pid=pid)


def _detached(request: Request, args: list[str]) -> int:
    """Start ``iterflow ARGS`` in its own session, on this dashboard's store; its pid."""
    env = dict(os.environ, ITERFLOW_STORE_URL=_dash(request).store.url, NO_COLOR="1")
    # Its own session: the resumed run outlives this request and the dashboard.
    process = subprocess.Popen(
        [sys.executable, "-m", "iterflow", *args], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    # Reap it when it ends, so no zombie stays behind while the dashboard runs.
    threading.Thread(target=process.wait, daemon=True, name="iterflow-resume").start()
    return process.pid


def rewind_context(request: Request, dash: Dashboard, run: Any, row: Any) -> dict[str, Any]:
    """What the iteration page's "rewind to here" button needs (None: not offered).

    Offered for a task run of the run's own flow (not a mapped child, not a
    task inside a loop block's iteration) that looped or is a loop block.
    """
    top = row.map_index is None and row.task_run_id == f"{run.run_id}/{row.task_slug}"
    if not top or row.looped_index is None:  # what a rewind can start again
        return {}
    return {"csrf": csrf_token(request), "writable": dash.writable,
            "can_rewind": run.state not in LIVE}


async def rewind(request: Request) -> Response:
    """``POST /runs/<run>/rewind/<k>/<task>``: ``iterflow resume RUN --from-iteration K``."""
    run = await _checked(request)
    index, task = request.path_params["index"], request.path_params["task"]
    if not _SLUG.fullmatch(task):
        raise HTTPException(404, f"Run {run.run_id} has no looping task {task!r}.")
    from iterflow.store import task_run_row

    row = task_run_row(_dash(request).store, f"{run.run_id}/{task}")
    if row is None or not rewind_context(request, _dash(request), run, row):
        raise HTTPException(404, f"Run {run.run_id} has no looping task {task!r} to rewind.")
    where = {"k": index, "task": row.task_slug}
    if run.state in LIVE:
        return _back(run.run_id, "rewind-live", **where)
    if not run.source:
        return _back(run.run_id, "rewind-command", **where)
    pid = _detached(request, ["resume", run.run_id, "--from-iteration", str(index),
                              "--task", row.task_slug])
    return _back(run.run_id, "rewind-started", pid=pid, **where)


def delete_page(request: Request) -> Response:
    """``GET /runs/<run>/delete``: ask before deleting (changes nothing)."""
    from iterflow.store import get_run

    dash = _dash(request)
    try:
        run = get_run(request.path_params["run_id"], store=dash.store)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from None
    body = dash.render("delete.html", run=run, csrf=csrf_token(request),
                       writable=dash.writable, live=run.state in LIVE)
    from starlette.responses import HTMLResponse

    return set_csrf_cookie(request, HTMLResponse(body))


async def delete(request: Request) -> Response:
    """``POST /runs/<run>/delete``: delete the run, then show the runs list."""
    run = await _checked(request)
    from iterflow.store import delete_run

    try:
        delete_run(run.run_id, store=_dash(request).store)
    except StoreError:
        return _back(run.run_id, "delete-refused")
    return RedirectResponse(f"/?deleted={quote(run.run_id)}", status_code=303)
