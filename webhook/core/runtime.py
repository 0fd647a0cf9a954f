"""The shell that adds the external listener at run time, inside the broker's own image.

Three flavors can only be finished when the pod runs: a server.properties that an init container
prepares from a ConfigMap the webhook never sees (prepared-file), a chart's shell command that
exports KAFKA_ADVERTISED_LISTENERS just before running the image's run script (shell-export), and a
`kafka-server-start.sh FILE [--override k=v]...` command line whose file only exists at run time
(start-command). All three are finished by the same POSIX awk program over Kafka properties
(`listener.awk`), run by the image's own `sh` and `awk` (present in every Kafka image): as an extra
init container that edits the prepared file (`listener-file.sh`), `eval`-ed by the chart's command
just before its run script (`listener-env.sh`), or as a function that adds `--override` flags to the
chart's kafka-server-start.sh command line (`listener-start.sh`).

The program only ever adds the external listener (or replaces the entry of the same name when that
is the chart's own outside access): every other listener, the protocol map entries and the chart's
settings stay as they were. A chart listener of the same name that serves in-cluster clients stays
exactly as it is, and the first free name of KAFKAEXPOSE_FALLBACK_NAMES is used instead. When it
cannot edit safely (controller-only node, port taken, no listeners, an odd name) it changes nothing
and says why on stderr, so the broker still starts as the chart wrote it. The awk and sh are data
files of this package, read once at import.

Inputs (environment, set by the webhook): KAFKAEXPOSE_LISTENER_NAME, KAFKAEXPOSE_FALLBACK_NAMES, KAFKAEXPOSE_HEADLESS,
KAFKAEXPOSE_HOST, KAFKAEXPOSE_ADVERTISED_PORT, KAFKAEXPOSE_CONTAINER_PORT,
KAFKAEXPOSE_SECURITY_PROTOCOL (empty: that of the chart's client listener), KAFKAEXPOSE_ON_EXISTING
(replace|keep), and KAFKAEXPOSE_PROPERTIES (file mode) or KAFKAEXPOSE_ENV_PREFIX (env mode);
KAFKAEXPOSE_TLS_PROPERTIES (space-separated `ssl.*=value`, core/tls_listener.py) makes the listener
SSL / SASL_SSL with only those settings, scoped to whichever name it gets at start.
"""

from __future__ import annotations

from importlib.resources import files

# Exit codes of the awk program (0: edited).
EXIT_CONTROLLER_ONLY = 3
EXIT_KEEP_EXISTING = 4
EXIT_PORT_TAKEN = 5
EXIT_NO_LISTENERS = 6
EXIT_NO_FREE_NAME = 7
EXIT_BAD_NAME = 8


def _data(name: str) -> str:
    return files("webhook.core").joinpath(name).read_text(encoding="utf-8")


AWK_PROGRAM = _data("listener.awk")
if "'" in AWK_PROGRAM:  # embedded in single quotes below
    raise ImportError("listener.awk must not contain a single quote")

_AWK_ARGS = (
    '-v name="$KAFKAEXPOSE_LISTENER_NAME" -v fallbacks="${KAFKAEXPOSE_FALLBACK_NAMES:-}" -v headless="${KAFKAEXPOSE_HEADLESS:-}" '
    '-v host="$KAFKAEXPOSE_HOST" -v port="$KAFKAEXPOSE_ADVERTISED_PORT" '
    '-v cport="$KAFKAEXPOSE_CONTAINER_PORT" -v proto="${KAFKAEXPOSE_SECURITY_PROTOCOL:-}" '
    '-v onexist="${KAFKAEXPOSE_ON_EXISTING:-replace}" -v tlsprops="${KAFKAEXPOSE_TLS_PROPERTIES:-}"'
)


def _script(name: str) -> str:
    return _data(name).replace("@AWK_ARGS@", _AWK_ARGS).replace("@AWK_PROGRAM@", AWK_PROGRAM)


FILE_SCRIPT = _script("listener-file.sh")  # init container: edit the prepared server.properties
ENV_SCRIPT = _script("listener-env.sh")  # eval-ed before the image's run script
START_SCRIPT = _script("listener-start.sh")  # eval-ed before kafka-server-start.sh
