"""A DICOMweb connection (PS3.18) over ``dicomweb-client``: auth from the environment, retries, one-line errors.

Shared by the ``dicomweb`` source (QIDO-RS search, WADO-RS retrieve) and the ``dicomweb``
writer (STOW-RS store). What servers do that a client must work around lives here:

- QIDO values go out literally (``*`` and ``?`` are not percent-encoded): Orthanc 1.10 does not
  percent-decode QIDO values (only ``%2C``), so an encoded wildcard silently matches nothing.
- Instances are retrieved with ``transfer-syntax=*``: the bytes as stored (a server may otherwise
  transcode to Explicit VR Little Endian), so a fetched file hashes like the file that was stored.
- Transient failures (connection refused or reset, timeouts, HTTP 408/429/500/502/503/504) are
  retried with exponential backoff; what remains is one :class:`DicomwebError` line naming the
  server (never a secret) and saying whether it is about reaching the server, being let in, the
  query, or one object.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medflow.errors import UsageError

T = TypeVar("T")

#: HTTP statuses worth another try: the server is busy or restarting, not saying no.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: WADO-RS media type asking for the instance as stored (PS3.18 8.7.3.5.2: transfer-syntax=*).
AS_STORED = (("application/dicom", "*"),)


class DicomwebAuth(BaseModel):
    """Credentials, read from environment variables named here (never written in a recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_env: str | None = Field(
        None, description="Name of the environment variable holding a bearer token (Authorization: Bearer ...)."
    )
    user_env: str | None = Field(None, description="Name of the environment variable holding the HTTP Basic user.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the HTTP Basic password."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> DicomwebAuth:
        basic = self.user_env is not None or self.password_env is not None
        if self.token_env is not None and basic:
            raise ValueError("give either token_env or user_env + password_env, not both")
        if basic and (self.user_env is None or self.password_env is None):
            raise ValueError("HTTP Basic needs both user_env and password_env")
        if not basic and self.token_env is None:
            raise ValueError("give token_env, or user_env + password_env")
        return self


class DicomwebEndpoint(BaseModel):
    """How to reach one DICOMweb server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Base URL of the DICOMweb service (QIDO/WADO/STOW root), e.g. https://pacs.example.org/dicom-web.",
        pattern=r"^https?://[^\s]+$",
    )
    auth: DicomwebAuth | None = Field(None, description="Credentials (from the environment); none: anonymous.")
    timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    retries: int = Field(
        4, ge=0, le=20, description="Further tries of a request after a transient failure (exponential backoff)."
    )
    backoff_seconds: float = Field(
        0.5, ge=0, description="Wait before the first retry, in seconds; doubles on each further retry (max 30 s)."
    )


class DicomwebError(Exception):
    """A DICOMweb request failed for good (after retries).

    ``kind``: ``"connect"`` (cannot reach the server), ``"auth"`` (401/403), ``"query"`` (400:
    the server rejects the request), ``"object"`` (404 or another answer about one object).
    """

    def __init__(self, kind: Literal["connect", "auth", "query", "object"], message: str):
        self.kind = kind
        super().__init__(message)


@functools.cache
def _literal_wildcard_session() -> type:
    """A ``requests.Session`` class sending ``*`` and ``?`` in query strings literally (see the module docstring).

    Built on first use: ``requests`` is imported only when a server is contacted (a recipe naming a
    DICOMweb source is loaded, validated and planned without it).
    """
    import requests

    class _LiteralWildcardSession(requests.Session):
        def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
            prepared = super().prepare_request(request)
            url = prepared.url or ""
            if "?" in url:
                base, _, query = url.partition("?")
                query = query.replace("%2A", "*").replace("%2a", "*").replace("%3F", "?").replace("%3f", "?")
                prepared.url = f"{base}?{query}"
            return prepared

    return _LiteralWildcardSession


def credentials(auth: DicomwebAuth | None) -> dict[str, Any]:
    """The session settings for ``auth`` from the environment.

    Raises:
        UsageError: a named variable is unset or empty (the message names the variable, not a value).
    """
    if auth is None:
        return {}

    def read(name: str) -> str:
        value = os.environ.get(name, "")
        if not value:
            raise UsageError(f"DICOMweb credentials: environment variable {name} is not set (or empty)")
        return value

    if auth.token_env is not None:
        return {"headers": {"Authorization": f"Bearer {read(auth.token_env)}"}}
    return {"auth": (read(auth.user_env or ""), read(auth.password_env or ""))}


class DicomwebConnection:
    """One server: a ``dicomweb_client.DICOMwebClient`` per thread, requests retried with backoff."""

    def __init__(self, endpoint: DicomwebEndpoint):
        self.endpoint = endpoint
        self.url = endpoint.url.rstrip("/")
        self._settings = credentials(endpoint.auth)  # checked now: before any request
        self._local = threading.local()

    def client(self):
        """This thread's client (requests sessions are not shared between threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            session = _literal_wildcard_session()()
            if "auth" in self._settings:
                session.auth = self._settings["auth"]
            session.headers.update(self._settings.get("headers", {}))
            client = DICOMwebClient(self.url, session=session, timeout=self.endpoint.timeout_seconds)
            client.set_http_retry_params(retry=False)  # retries are ours: connection errors too
            self._local.client = client
        return client

    def call(self, what: str, function: Callable[[Any], T]) -> T:
        """``function(client)``, retried on transient failures; :class:`DicomwebError` when it fails for good.

        ``what`` names the request in the message (e.g. "QIDO-RS search for studies").
        """
        import requests

        delay = self.endpoint.backoff_seconds
        for attempt in range(self.endpoint.retries + 1):
            try:
                return function(self.client())
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in TRANSIENT_STATUS and attempt < self.endpoint.retries:
                    pass
                else:
                    raise self._http_error(what, status, exc) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # ChunkedEncodingError: the server dropped the connection in the middle of a response
                if attempt >= self.endpoint.retries:
                    reason = ("timed out" if isinstance(exc, requests.Timeout)
                              else "connection lost during a response"
                              if isinstance(exc, requests.exceptions.ChunkedEncodingError) else "connection failed")
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    raise DicomwebError("connect", f"cannot reach DICOMweb server {self.url}: {what}: "
                                                   f"{reason}{tries}") from None
            time.sleep(min(delay, 30.0))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _http_error(self, what: str, status: int, exc: Any) -> DicomwebError:
        detail = ""
        if exc.response is not None:
            detail = " ".join((exc.response.text or "").split())[:200]
            detail = f": {detail}" if detail else ""
        if status in (401, 403):
            hint = "check the credentials' environment variables" if self.endpoint.auth else "the server needs credentials (auth:)"
            return DicomwebError("auth", f"DICOMweb server {self.url} refused {what}: HTTP {status} "
                                         f"{'unauthorised' if status == 401 else 'forbidden'} ({hint})")
        if status == 400:
            return DicomwebError("query", f"DICOMweb server {self.url} rejected {what}: HTTP 400 bad request{detail}")
        if status in TRANSIENT_STATUS:
            return DicomwebError("connect", f"DICOMweb server {self.url} kept failing {what}: HTTP {status} "
                                            f"after {self.endpoint.retries + 1} tries")
        return DicomwebError("object", f"DICOMweb server {self.url}: {what}: HTTP {status}{detail}")

    # --- the requests medflow makes -------------------------------------------------------------

    def search(self, level: Literal["studies", "series", "instances"], what: str, *, study: str | None = None,
               series: str | None = None, filters: dict[str, str] | None = None,
               fields: list[str] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS search at ``level`` (DICOM JSON model records, PS3.18 F.2)."""
        def run(client):
            if level == "studies":
                return client.search_for_studies(search_filters=filters or {}, fields=fields)
            if level == "series":
                return client.search_for_series(study, search_filters=filters or {}, fields=fields)
            return client.search_for_instances(study, series, search_filters=filters or {}, fields=fields)

        return self.call(f"QIDO-RS search for {what}", run)

    def retrieve(self, study: str, series: str, sop: str) -> bytes:
        """WADO-RS retrieve of one instance, as stored (``transfer-syntax=*``)."""
        def run(client):
            dataset = client.retrieve_instance(study, series, sop, media_types=AS_STORED)
            return dataset.buffer.getvalue()  # the part's bytes, as the server sent them

        return self.call("WADO-RS retrieve of an instance", run)

    def store(self, datasets: list[Any]) -> Any:
        """STOW-RS of ``datasets`` (pydicom) in one request; the server's response dataset."""
        return self.call(f"STOW-RS store of {len(datasets)} instance(s)", lambda client: client.store_instances(datasets))


def value(record: dict[str, Any], tag: str) -> str:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON record, as a string ('' when absent)."""
    values = (record.get(tag) or {}).get("Value") or []
    first = values[0] if values else ""
    if isinstance(first, dict):  # PN
        first = first.get("Alphabetic", "")
    return str(first)
