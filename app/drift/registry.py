"""Client of the platform's schema registry (docs/contracts.md, "The schema registry"), over requests.

Every call has a connect and a read timeout. Connection failures, timeouts, 5xx and 429
are retried a bounded number of times with exponential backoff; then `RegistryUnreachable`
(it never answered) or `RegistryUnavailable` (it kept answering 5xx/429) is raised.
A 404 on a schema is an answer (`None`), not an error. Anything else the registry
answers that we cannot use raises `RegistryBadResponse`.

Only the drift job calls the registry; health probes read the last persisted check.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from app import logs, retry

RETRY_STATUSES = {429, 500, 502, 503, 504}


class RegistryError(Exception):
    """The registry could not give a usable answer."""


class RegistryUnavailable(RegistryError):
    """The registry kept failing (5xx, 429) through the retries."""


class RegistryUnreachable(RegistryUnavailable):
    """The registry could not be reached at all (connection refused, DNS, timeout)."""


class RegistryBadResponse(RegistryError):
    """The registry answered, but not in the shape docs/contracts.md describes."""


class _Failed(Exception):
    """One attempt failed in a way worth another try (`reached`: the registry answered)."""

    def __init__(self, message: str, reached: bool = False):
        super().__init__(message)
        self.reached = reached


def safe_url(url: str) -> str:
    """The URL without credentials, fit for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


class Registry:
    def __init__(
        self,
        base_url: str,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.25,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.log = logs.get("registry")

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------
    def _get(self, path: str, params: dict | None = None) -> requests.Response:
        """GET with bounded retries; returns the final response (2xx or a non-retried 4xx)."""
        url = self.base_url + path
        shown = safe_url(url)

        def attempt() -> requests.Response:
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout, allow_redirects=False)
            except requests.Timeout:
                raise _Failed(f"timed out after {self.timeout[0]:g}s connect / {self.timeout[1]:g}s read") from None
            except requests.ConnectionError as exc:
                raise _Failed(f"connection failed: {type(exc).__name__}") from None
            except requests.RequestException as exc:
                raise _Failed(f"request failed: {type(exc).__name__}: {str(exc)[:120]}") from None
            if resp.status_code in RETRY_STATUSES:
                resp.close()
                raise _Failed(f"HTTP {resp.status_code}", reached=True)
            return resp

        def before_pause(n: int, exc: BaseException, pause: float) -> None:
            self.log.debug("registry request failed", url=shown, attempt=n, error=str(exc))

        try:
            return retry.call(
                attempt, on=_Failed, attempts=self.retries + 1, first_pause=self.backoff, before_pause=before_pause
            )
        except _Failed as failed:
            error = RegistryUnavailable if failed.reached else RegistryUnreachable
            raise error(f"registry {shown} failed {self.retries + 1} attempts: {failed}") from None

    def _json(self, resp: requests.Response, what: str) -> Any:
        if resp.status_code != 200:
            raise RegistryBadResponse(f"{what}: unexpected HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise RegistryBadResponse(f"{what}: the body is not JSON") from None

    # -- API ----------------------------------------------------------------------------------
    def health(self) -> bool:
        """True when GET /health answers 200."""
        try:
            return self._get("/health").status_code == 200
        except RegistryUnavailable:
            return False

    def index(self) -> dict:
        body = self._json(self._get("/index"), "GET /index")
        if not isinstance(body, dict) or not isinstance(body.get("tracks"), dict):
            raise RegistryBadResponse("GET /index: no 'tracks' object")
        return body

    def schema(self, track: str, name: str, version: str | None = None) -> dict | None:
        """The registry's document for `name` (with `.schema` suffix), or None when unknown (404)."""
        path = f"/schemas/{quote(track, safe='')}/{quote(name, safe='')}"
        resp = self._get(path, {"version": version} if version else None)
        if resp.status_code == 404:
            return None
        body = self._json(resp, f"GET {path}")
        if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
            raise RegistryBadResponse(f"GET {path}: no 'content' object")
        version_value = body.get("core_version")
        if version_value is not None and not isinstance(version_value, str):
            raise RegistryBadResponse(f"GET {path}: 'core_version' is not a string")
        return body

    def versions(self, track: str, name: str) -> list[dict] | None:
        path = f"/schemas/{quote(track, safe='')}/{quote(name, safe='')}/versions"
        resp = self._get(path)
        if resp.status_code == 404:
            return None
        body = self._json(resp, f"GET {path}")
        if not isinstance(body, list):
            raise RegistryBadResponse(f"GET {path}: not a list")
        return body
