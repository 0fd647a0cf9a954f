"""The Kubernetes API, as the controller uses it: raw JSON in and out, retries, watches, events, leases.

Raw dicts, never the client's model classes (they drop fields they do not know). The `kubernetes`
package is used for what it does well: loading a kubeconfig or the in-cluster credentials (and
refreshing the ServiceAccount token) and the HTTP connection pool. Requests go through
`ApiClient.param_serialize` / `call_api`, so authentication is the client's own. The package is
imported only when a client is made (it takes a while), so importing this module stays cheap.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import orjson
import urllib3

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger("kafka_expose.kube")

T = TypeVar("T")
JSON = dict[str, Any]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Transient: the request may succeed if sent again (throttled, API server restarting, timeouts).
RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)


class ApiError(Exception):
    """An API request that failed: `status` is the HTTP status (0: no answer), `reason` the Status
    reason (`AlreadyExists`, `Conflict`, `NotFound`, `Expired`...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS

    @classmethod
    def from_exception(cls, error: BaseException) -> ApiError:
        if isinstance(error, ApiError):
            return error
        if _is_api_exception(error):
            status = int(getattr(error, "status", 0) or 0)
            text = getattr(error, "body", None)
            reason = str(getattr(error, "reason", "") or "")
            message = str(text or reason)
            try:
                body = json.loads(text) if text else {}
            except (TypeError, ValueError):
                body = {}
            if isinstance(body, dict):
                reason = str(body.get("reason") or reason)
                message = str(body.get("message") or message)
            return cls(status, reason, " ".join(message.split())[:500])
        return cls(0, type(error).__name__, " ".join(str(error).split())[:500])


def _is_api_exception(error: BaseException) -> bool:
    """kubernetes.client.exceptions.ApiException, recognised without importing the package."""
    return any(cls.__name__ == "ApiException" for cls in type(error).__mro__) and hasattr(error, "status")


def _http_error(status: int, reason: str, data: bytes) -> ApiError:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = str(body.get("message") or data[:500].decode("utf-8", "replace"))
    return ApiError(status, str(body.get("reason") or reason or ""), " ".join(message.split())[:500])


def is_status(error: BaseException, *statuses: int) -> bool:
    return isinstance(error, ApiError) and error.status in statuses


def now_rfc3339(micro: bool = False) -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def load_api_client(kubeconfig: str | None = None, retries: bool | int | None = None) -> client.ApiClient:
    """A client from `kubeconfig`; without one, the in-cluster ServiceAccount when running in a pod,
    else $KUBECONFIG or ~/.kube/config. `retries`: urllib3's own retries of failed connections
    (None: urllib3's default; False: none, for callers that must not block)."""
    import importlib

    from kubernetes import client

    config: Any = importlib.import_module("kubernetes.config")  # untyped
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    if retries is not None:
        configuration.retries = retries
    api: client.ApiClient = client.ApiClient(configuration)
    return api


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: `base` * 2^attempt, at most `cap` seconds."""

    base: float = 0.2
    cap: float = 5.0
    attempts: int = 5

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.base * 2.0**attempt) * random.uniform(0.5, 1.0))


def with_retries(
    what: str,
    call: Callable[[], T],
    backoff: Backoff = Backoff(),
    stop: threading.Event | None = None,
) -> T:
    """Run `call`; on a transient error (no answer, 429, 5xx) try again with backoff.
    Any other error (404, 409, 422...) is raised at once: the caller decides."""
    attempt = 0
    while True:
        try:
            return call()
        except ApiError as error:
            if not error.retryable or attempt + 1 >= backoff.attempts:
                raise
            delay = backoff.delay(attempt)
            log.info(
                "retrying after a transient API error",
                extra={"fields": {"request": what, "error": str(error), "attempt": attempt + 1}},
            )
        attempt += 1
        if stop is not None:
            if stop.wait(delay):
                raise ApiError(0, "Stopped", f"{what}: stopped while retrying")
        else:
            time.sleep(delay)


def decode_json(data: bytes | str) -> Any:
    """An API server answer: orjson (a fleet's lists are most of the controller's CPU, and it decodes
    them 2.5x faster); the standard library for what orjson refuses. The API server writes numbers
    from Go's int64 and float64, which orjson keeps exactly."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class Call(TypedDict, total=False):
    """What one API call sends beside its method and path."""

    query: Mapping[str, str]
    body: Any
    content_type: str


class Kube:
    """Raw REST calls with the client's authentication; every error is an ApiError."""

    def __init__(
        self,
        api: client.ApiClient,
        field_manager: str = "kafka-expose",
        timeout: float = 30.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout
        self.backoff = backoff
        self._streams: set[Any] = set()
        self._watches_closed = False
        self._lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, timeout: float | tuple[float, float] | None = None, **call: Unpack[Call]
    ) -> Any:
        query, body, content_type = call.get("query"), call.get("body"), call.get("content_type")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            method_, url, headers_, body_, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=[(k, v) for k, v in (query or {}).items()],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                method_, url, header_params=headers_, body=body_, _request_timeout=timeout or self.timeout
            )
        except Exception as error:
            if _is_api_exception(error) or isinstance(error, TRANSPORT_ERRORS):
                raise ApiError.from_exception(error) from None
            raise
        return response

    def request(self, method: str, path: str, retry: bool = True, **call: Unpack[Call]) -> JSON:
        """One API call with its JSON answer; transient errors are retried with backoff."""

        def once() -> JSON:
            response = self._send(method, path, **call)
            try:
                data = response.read()
            except TRANSPORT_ERRORS as error:
                raise ApiError.from_exception(error) from None
            if not 200 <= response.status <= 299:
                raise _http_error(response.status, response.reason, data)
            decoded = decode_json(data) if data else {}
            return decoded if isinstance(decoded, dict) else {}

        if not retry:
            return once()
        return with_retries(f"{method} {path}", once, self.backoff)

    # -- paths -------------------------------------------------------------------------------------

    @staticmethod
    def path(group_version: str, resource: str, namespace: str | None = None, name: str | None = None) -> str:
        """`v1` or `apps/v1`; a namespaced collection or object path."""
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        if namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{resource}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base

    # -- verbs -------------------------------------------------------------------------------------

    def get(self, path: str, retry: bool = True) -> JSON | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path, retry=retry)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list_all(
        self, path: str, label_selector: str | None = None, page: int = 500, retry: bool = True
    ) -> tuple[list[JSON], str]:
        """Every item (paged) and the list's resourceVersion (to start a watch from)."""
        items: list[JSON] = []
        query: dict[str, str] = {"limit": str(page)}
        if label_selector:
            query["labelSelector"] = label_selector
        version = ""
        while True:
            try:
                answer = self.request("GET", path, retry, query=query)
            except ApiError as error:
                if error.status == 410 and "continue" in query:  # the continue token expired: start over
                    items, version = [], ""
                    query.pop("continue")
                    continue
                raise
            items.extend(i for i in answer.get("items") or [] if isinstance(i, dict))
            metadata = answer.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue")
            if not token:
                return items, version
            query["continue"] = str(token)

    def _managed(self) -> dict[str, str]:
        return {"fieldManager": self.field_manager}

    def create(self, path: str, body: Mapping[str, Any]) -> JSON:
        return self.request("POST", path, query=self._managed(), body=dict(body))

    def apply(self, path: str, body: Mapping[str, Any], force: bool = True) -> JSON:
        """Server-side apply under our field manager: only the fields in `body` are ours."""
        query = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        return self.request("PATCH", path, query=query, body=dict(body), content_type=APPLY_PATCH)

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JSON:
        return self.request("PATCH", path, query=self._managed(), body=dict(patch), content_type=MERGE_PATCH)

    def json_patch(self, path: str, operations: Sequence[Mapping[str, Any]]) -> JSON:
        return self.request(
            "PATCH", path, query=self._managed(), body=[dict(o) for o in operations], content_type=JSON_PATCH
        )

    def replace(self, path: str, body: Mapping[str, Any]) -> JSON:
        """PUT: fails with 409 Conflict when body's resourceVersion is not the stored one."""
        return self.request("PUT", path, query=self._managed(), body=dict(body))

    def delete(self, path: str, uid: str | None = None) -> bool:
        """Delete (background propagation), only the object with `uid` if given; False if it was gone."""
        body: JSON = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", path, body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    # -- watches -----------------------------------------------------------------------------------

    def watch(
        self,
        path: str,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[JSON]:
        """The events of one watch request, from `resource_version`, until the server ends it.

        ERROR events are yielded as they come (410 Gone: the caller lists again)."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        response = self._send("GET", path, (10.0, timeout_seconds + 30.0), query=query)
        raw = response.response
        if not 200 <= response.status <= 299:
            raise _http_error(response.status, response.reason, raw.data)
        with self._lock:
            self._streams.add(raw)
            closed = self._watches_closed
        if closed:  # close_watches ran while this request was being sent
            raw.shutdown()
        try:
            buffer = b""
            for chunk in raw.stream(None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        try:
                            event = decode_json(line)
                        except ValueError:  # a stream cut off mid-event (closed, API server gone)
                            raise ApiError(0, "BrokenWatch", "the watch stream broke mid-event") from None
                        if isinstance(event, dict):
                            yield event
        except TRANSPORT_ERRORS as error:
            raise ApiError.from_exception(error) from None
        finally:
            with self._lock:
                self._streams.discard(raw)
            raw.release_conn()

    def close_watches(self) -> None:
        """End every watch in progress and every later one at once (as if the server had closed it)."""
        with self._lock:
            self._watches_closed = True
            streams = list(self._streams)
        for raw in streams:
            try:
                raw.shutdown()
            except Exception:  # best effort: the stream may be closing already
                log.debug("closing a watch stream failed", exc_info=True)
