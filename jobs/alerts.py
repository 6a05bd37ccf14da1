"""Run alerts: one JSON POST to a Slack/Mattermost-compatible webhook when a run ends badly.

`alert_run(config, result)` is called by Pipeline.run_nightly (the daemon, its start-up resume and
`run-once`) after the run is finished and its lock released; backfills never alert (an operator
watches them, and one alert per as-of date would flood the channel). Delivery is synchronous but
bounded in wall-clock time: at most 3 attempts, each with a total deadline of 5 s (a receiver that
trickles bytes cannot stretch it), 1 s and 2 s apart, all within DELIVERY_BUDGET_S (20 s); so a
process that exits right after its run still sends. A stop signal (SIGTERM/SIGINT: the pipeline's
stop flag) during delivery abandons it within POLL_S. It never raises and never changes the run's
status or exit code. A webhook URL with `user:password@` is sent with HTTP basic auth.
`alert_stale` is the scheduler daemon's periodic check: when no run succeeded within
`[schedule] stale_after_hours` of the run last due, one alert per due time.
Only the webhook's scheme://host is ever logged: Slack and Mattermost URLs carry a token in their
path.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from jobs.config import AlertsConfig, Config
from jobs.text import one_line

if TYPE_CHECKING:
    from db.health import Readiness
    from jobs.run_result import RunResult

log = logging.getLogger("candlecast.alerts")

RUN_EVENTS = ("failed", "partial")  # run statuses that alert ("stale": alert_stale, the daemon)
ATTEMPTS = 3
BACKOFF_S = (1.0, 2.0)  # sleeps before the 2nd and 3rd attempts
TIMEOUT_S = 5.0  # per attempt: total deadline for connect, request and response
DELIVERY_BUDGET_S = 20.0  # all attempts and pauses of one delivery
STOPPING_TIMEOUT_S = 2.0  # the one attempt made when the stop flag is already set
POLL_S = 0.1  # how often a waiting delivery looks at the stop flag
TEXT_TICKERS = 10  # failed tickers named in `text` (all of them are in `failed`)
TEXT_ERROR_CHARS = 160  # one error's length in `text`


def should_alert(alerts: AlertsConfig, status: str) -> bool:
    """Whether a run that ended with `status` is alerted under this [alerts] section."""
    return bool(alerts.webhook_url) and status in RUN_EVENTS and status in alerts.on


def run_payload(result: RunResult, runs_url: str = "") -> dict[str, Any]:
    """The JSON body for a finished run: Slack/Mattermost `text` plus structured fields."""
    failed = [
        {"ticker": o.ticker, "error": one_line(o.error or "failed")}
        for o in result.outcomes
        if o.status != "succeeded"
    ]
    when = f"as of {result.as_of.isoformat()}" if result.as_of else "(no as-of date)"
    text = f"candlecast run {result.run_id} {when}: {result.status}"
    if failed:
        named = ", ".join(
            f"{f['ticker']} ({_clip(f['error'], TEXT_ERROR_CHARS)})" for f in failed[:TEXT_TICKERS]
        )
        more = f" and {len(failed) - TEXT_TICKERS} more" if len(failed) > TEXT_TICKERS else ""
        text += f", {len(failed)} of {len(result.outcomes)} tickers failed: {named}{more}"
    elif result.message:  # the run itself failed (an unexpected error), no ticker outcomes
        text += f": {_clip(one_line(result.message), 2 * TEXT_ERROR_CHARS)}"
    if runs_url:
        text += f" {runs_url}"
    return {
        "text": text,
        "run_id": result.run_id,
        "as_of": result.as_of.isoformat() if result.as_of else None,
        "status": result.status,
        "message": result.message,
        "tickers": len(result.outcomes),
        "failed": failed,
        "runs_url": runs_url or None,
    }


def alert_run(config: Config, result: RunResult, stop: threading.Event | None = None) -> bool:
    """POST the run's alert if [alerts] asks for its status; True when one was delivered.

    Never raises: an alert is a courtesy, the run's outcome stands without it. `stop` (the
    pipeline's stop flag) set during delivery abandons it promptly.
    """
    alerts = config.alerts
    try:
        if not should_alert(alerts, result.status):
            return False
        payload = run_payload(result, alerts.runs_url)
        return deliver(alerts.webhook_url, payload, what=f"run {result.run_id}", stop=stop)
    except Exception as exc:  # a bug here must not turn into the run's failure
        log.warning("alert for run %s not sent: %s", result.run_id, type(exc).__name__)
        return False


def alert_stale(config: Config, verdict: Readiness) -> bool:
    """POST a "stale" alert when no run succeeded since one was due and [alerts] asks for it;
    True when one was delivered. Never raises. The scheduler daemon calls it (once per due time).
    """
    alerts = config.alerts
    try:
        if not (alerts.webhook_url and "stale" in alerts.on and verdict.stale):
            return False
        return deliver(alerts.webhook_url, stale_payload(verdict, alerts.runs_url), what="stale")
    except Exception as exc:  # never let monitoring break the daemon
        log.warning("stale alert not sent: %s", type(exc).__name__)
        return False


def stale_payload(verdict: Readiness, runs_url: str = "") -> dict[str, Any]:
    """The JSON body of a stale alert: `text` plus the due time, last success and reasons."""
    success = verdict.last_success
    due = verdict.due_at.isoformat() if verdict.due_at else None
    last = (
        f"run {success.id} at {success.finished_at.isoformat()}"
        if success is not None and success.finished_at is not None
        else "never"
    )
    text = f"candlecast is stale: no run succeeded since the run due at {due}"
    text += f" (last success: {last})"
    if runs_url:
        text += f" {runs_url}"
    return {
        "text": text,
        "status": "stale",
        "due_at": due,
        "last_success_run_id": success.id if success is not None else None,
        "reasons": list(verdict.reasons),
        "runs_url": runs_url or None,
    }


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    what: str = "alert",
    attempts: int | None = None,
    backoff_s: tuple[float, ...] | None = None,
    timeout_s: float | None = None,
    budget_s: float | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """POST `payload` as JSON to `url`, retrying 5xx, 408, 429 and network errors with backoff.

    Every attempt has a total deadline (`timeout_s`) and the whole delivery `budget_s`; `stop`
    set while it waits or sleeps ends it at once (already set: one short attempt). Returns
    whether it was accepted (2xx). Logs one warning when it was not, naming only the URL's
    scheme://host. Never raises.
    """
    attempts = attempts or ATTEMPTS
    backoff = BACKOFF_S if backoff_s is None else backoff_s
    timeout = timeout_s or TIMEOUT_S
    budget = budget_s or DELIVERY_BUDGET_S
    if stop is not None and stop.is_set():  # stopping already: one short try, no retries
        attempts, timeout, stop = 1, min(timeout, STOPPING_TIMEOUT_S), None
    end = time.monotonic() + budget
    origin = safe_origin(url)
    target, headers = _target(url)
    body = json.dumps(payload).encode("utf-8")
    error = "not attempted"
    attempt = 0
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            pause = backoff[min(attempt - 2, len(backoff) - 1)] if backoff else 0.0
            if time.monotonic() + pause >= end:
                break
            if stop is not None and stop.wait(pause):
                error = "stopped by a signal"
                break
            if stop is None:
                time.sleep(pause)
        deadline = min(timeout, end - time.monotonic())
        if deadline <= 0:
            break
        retry, error = _post_within(target, headers, body, deadline, stop)
        if error is None:
            log.info("alert for %s sent to %s", what, origin)
            return True
        error = _scrub(error, url)
        log.debug("alert for %s: attempt %d to %s failed: %s", what, attempt, origin, error)
        if not retry:
            break
    log.warning(
        "alert for %s not delivered to %s after %d attempt(s): %s", what, origin, attempt, error
    )
    return False


def _target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without `user:password@` and the request headers (basic auth when it had one)."""
    headers = {"Content-Type": "application/json", "User-Agent": "candlecast-alerts"}
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url, headers
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
    except ValueError:
        return url, headers  # the POST fails with a clear error, not retried
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    headers["Authorization"] = f"Basic {token}"
    return urlunsplit(parts._replace(netloc=netloc)), headers


def _post_within(
    url: str,
    headers: dict[str, str],
    body: bytes,
    deadline: float,
    stop: threading.Event | None,
) -> tuple[bool, str | None]:
    """One POST with a total wall-clock `deadline`: urllib's timeout is per socket operation,
    so a receiver sending a byte now and then could hold it for minutes. The POST runs in a
    daemon thread (it never keeps the process alive) and is abandoned at the deadline or stop."""
    outcome: list[tuple[bool, str | None]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(_post_once(url, headers, body, deadline)),
        name="candlecast-alert",
        daemon=True,
    )
    worker.start()
    end = time.monotonic() + deadline
    while worker.is_alive():
        left = end - time.monotonic()
        if left <= 0:
            return True, f"no complete answer within {deadline:.1f} s"
        if stop is not None and stop.is_set():
            return False, "stopped by a signal"
        worker.join(min(left, POLL_S))
    return outcome[0] if outcome else (False, "the POST ended without a result")


def safe_origin(url: str) -> str:
    """scheme://host[:port] of `url`: what may be logged (no credentials, path or query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}"


def _post_once(
    url: str, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[bool, str | None]:
    """One POST: (retryable, error) where error is None on a 2xx answer."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(4096)
            return False, None
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code >= 500 or exc.code in (408, 429), f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return True, str(exc.reason)
    except (TimeoutError, OSError) as exc:
        return True, str(exc) or type(exc).__name__
    except Exception as exc:  # e.g. a malformed URL: not worth retrying
        return False, f"{type(exc).__name__}: {exc}"


def _scrub(text: str, url: str) -> str:
    """`text` without the URL or its path/query (an error message could echo them)."""
    try:
        parts = urlsplit(url)
        secrets = (url, parts.path, parts.query, parts.password or "")
    except ValueError:
        secrets = (url,)
    for secret in secrets:
        if len(secret) > 1:
            text = text.replace(secret, "***")
    return one_line(text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
