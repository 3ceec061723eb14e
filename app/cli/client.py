"""The CLI's HTTP client: one session, errors turned into one-line messages.

A refused connection names the URL; a 401 says whether the token is missing or wrong;
a route this store does not serve (404 "no such endpoint" or 405) says so; any other
4xx/5xx prints the API's own `error` text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8082"
DEFAULT_TOKEN = "iamalive"  # the store's own default ADMIN_TOKEN (app.config)
TIMEOUT_S = 10.0
# What app/errors.py answers for a path or method the API does not route.
NO_ROUTE = "not found: no such endpoint"


class CliError(Exception):
    """A failure worth one line on stderr; `exit_code` is what the process returns."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class NotOffered(CliError):
    """The store answers 404/405 for a route it lacks (an older or newer build)."""


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def target(url: str | None, token: str | None, environ: dict[str, str] | None = None) -> Target:
    """--url/--token, else STORE_URL/ADMIN_TOKEN from the environment, else `.env`, else defaults."""
    env = dict(os.environ if environ is None else environ)
    dotenv_path = Path.cwd() / ".env"
    if dotenv_path.is_file():
        from dotenv import dotenv_values

        for key, value in dotenv_values(dotenv_path).items():
            if value is not None:
                env.setdefault(key, value)
    url = (url or env.get("STORE_URL") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"STORE_URL must start with http:// or https://, got {url[:80]!r}")
    chosen = token if token is not None else env.get("ADMIN_TOKEN", DEFAULT_TOKEN)
    return Target(url=url, token=chosen)


class Client:
    def __init__(self, target: Target, timeout: float = TIMEOUT_S):
        self.url = target.url
        self.timeout = timeout
        self.session = requests.Session()
        self.has_token = bool(target.token)
        if target.token:
            self.session.headers["Authorization"] = f"Bearer {target.token}"
        self.session.headers["User-Agent"] = "mds-cli"

    def request(
        self, method: str, path: str, *, what: str | None = None, accept: tuple[int, ...] = (), **kw: Any
    ) -> requests.Response:
        """Send one request; raise CliError with one line for anything but 2xx (or `accept`)."""
        try:
            resp = self.session.request(method, self.url + path, timeout=kw.pop("timeout", self.timeout), **kw)
        except requests.ConnectionError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else _first_line(exc)
            raise CliError(
                f"cannot reach the store at {self.url}: {reason} (is it running? set STORE_URL or --url)"
            ) from None
        except requests.Timeout:
            raise CliError(
                f"the store at {self.url} did not answer {method} {path} within {self.timeout:g} s"
            ) from None
        except requests.RequestException as exc:
            raise CliError(f"request to {self.url}{path} failed: {_first_line(exc)}") from None
        if resp.status_code < 400 or resp.status_code in accept:
            return resp
        error = _error_text(resp)
        if resp.status_code == 401:
            if not self.has_token:
                raise CliError("the store wants a token: set ADMIN_TOKEN or pass --token")
            raise CliError("the store refused the token (wrong ADMIN_TOKEN or --token)")
        if resp.status_code == 405 or (resp.status_code == 404 and error == NO_ROUTE):
            raise NotOffered(f"this store does not offer {what or f'{method} {path}'}")
        raise CliError(f"{error} (HTTP {resp.status_code})")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, body: dict | None = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, **kw).json()

    def put(self, path: str, body: dict, **kw: Any) -> Any:
        return self.request("PUT", path, json=body, **kw).json()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = resp.text.strip().splitlines()
    return (text[0] if text else resp.reason or "error")[:300]
