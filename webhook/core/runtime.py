"""The shell that adds the external listener at run time, inside the broker's own image.

Two flavors can only be finished when the pod runs: a chart's shell command that exports
KAFKA_ADVERTISED_LISTENERS just before `exec`-ing the image's run script, and a server.properties
that an init container prepares from a ConfigMap the webhook never sees. Both are finished by the
same POSIX awk program over Kafka properties, run by the image's own `sh` and `awk` (present in the
Confluent, Apache and Bitnami images): as an extra init container that edits the prepared file, or
`eval`-ed by the chart's command just before its `exec`.

The program only ever adds the external listener (or replaces the entry of the same name): every
other listener, the protocol map entries and the chart's settings stay as they were. When it cannot
do so safely (controller-only node, port taken, no listeners) it changes nothing and says why on
stderr, so the broker still starts as the chart wrote it.

Inputs (environment, set by the webhook): KAFKAEXPOSE_LISTENER_NAME, KAFKAEXPOSE_HOST,
KAFKAEXPOSE_ADVERTISED_PORT, KAFKAEXPOSE_CONTAINER_PORT, KAFKAEXPOSE_SECURITY_PROTOCOL (empty: that
of the chart's client listener), KAFKAEXPOSE_ON_EXISTING (replace|keep), and KAFKAEXPOSE_PROPERTIES
(file mode) or KAFKAEXPOSE_ENV_PREFIX (env mode); KAFKAEXPOSE_TLS_PROPERTIES (space-separated
`key=value`, core/tls_listener.py) makes the listener SSL / SASL_SSL with only those ssl.* settings.
"""

from __future__ import annotations

# Exit codes of the awk program (0: edited).
EXIT_CONTROLLER_ONLY = 3
EXIT_KEEP_EXISTING = 4
EXIT_PORT_TAKEN = 5
EXIT_NO_LISTENERS = 6

# The awk program contains no single quote: it is embedded in single quotes in both scripts.
AWK_PROGRAM = r"""
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function lname(e,  i) { i = index(e, "://"); return i ? toupper(trim(substr(e, 1, i - 1))) : "" }
function lport(e,  n, parts) { n = split(e, parts, ":"); return trim(parts[n]) }
function say(msg) { print "kafka-expose: " msg > "/dev/stderr" }
function continued(s,  n) { n = 0; while (substr(s, length(s) - n, 1) == "\\") n++; return n % 2 == 1 }
function sq(s) { gsub(Q, Q "\\" Q Q, s); return Q s Q }
function envname(k) { k = toupper(k); gsub(/\./, "_", k); return prefix k }
BEGIN { Q = sprintf("%c", 39); n = 0; logical = ""; start = 0; tls = (tlsprops != "") }
/^# kafka-expose/ { next }
{
    lines[++n] = $0
    if (logical == "") start = n
    owner[n] = start
    if (continued($0)) { logical = logical substr($0, 1, length($0) - 1); next }
    logical = logical $0
    if (logical !~ /^[ \t]*[#!]/ && match(logical, /[=:]/)) {
        k = trim(substr(logical, 1, RSTART - 1))
        if (k != "") { kv[k] = trim(substr(logical, RSTART + 1)); first[start] = k }
    }
    logical = ""
}
END {
    if (("process.roles" in kv) && kv["process.roles"] !~ /broker/) {
        say("process.roles=" kv["process.roles"] " has no broker role; nothing to expose")
        exit 3
    }
    haslis = ("listeners" in kv)
    lis = haslis ? kv["listeners"] : (derive ? "" : "PLAINTEXT://:9092")
    adv = ("advertised.listeners" in kv) ? kv["advertised.listeners"] : lis
    if (!haslis && derive) {
        m = split(adv, A, ",")
        for (i = 1; i <= m; i++) { e = trim(A[i]); if (e != "") lis = lis (lis == "" ? "" : ",") lname(e) "://0.0.0.0:" lport(e) }
    }
    if (trim(adv) == "") { say("no advertised listeners found; broker left unexposed"); exit 6 }
    split(toupper(kv["controller.listener.names"]), C, ",")
    for (i in C) ctrl[trim(C[i])] = 1
    ib = toupper(trim(kv["inter.broker.listener.name"]))
    if (ib == "") ib = ("security.inter.broker.protocol" in kv) ? toupper(trim(kv["security.inter.broker.protocol"])) : "PLAINTEXT"

    ours = name "://" host ":" port
    newadv = ""; existing = 0; client = ""; other = ""; firstname = ""
    m = split(adv, A, ",")
    for (i = 1; i <= m; i++) {
        e = trim(A[i]); if (e == "") continue
        nm = lname(e)
        if (nm == name) { existing = 1; e = ours }
        else if (!(nm in ctrl)) {
            if (firstname == "") firstname = nm
            if (nm == "CLIENT") client = nm
            else if (nm != ib && other == "") other = nm
        }
        newadv = newadv (newadv == "" ? "" : ",") e
    }
    if (existing && onexist == "keep") { say("already advertises " name " and onExistingListener is keep; left as it is"); exit 4 }
    if (!existing) newadv = newadv "," ours
    if (client == "") client = (other != "") ? other : firstname

    newlis = ""; found = 0
    m = split(lis, L, ",")
    for (i = 1; i <= m; i++) {
        e = trim(L[i]); if (e == "") continue
        nm = lname(e)
        if (nm == name) { found = 1; e = name "://:" cport }
        else if (lport(e) == cport) { say("container port " cport " is already used by listener " nm "; broker left unexposed"); exit 5 }
        newlis = newlis (newlis == "" ? "" : ",") e
    }
    if (!found) newlis = newlis (newlis == "" ? "" : ",") name "://:" cport

    if ("listener.security.protocol.map" in kv) pm = kv["listener.security.protocol.map"]
    else { pm = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"; for (c in ctrl) if (c != "" && pm !~ ("(^|,)" c ":")) pm = pm "," c ":PLAINTEXT" }
    newpm = ""; mapped = 0; clientproto = ""; oldproto = ""; HOLE = "@KAFKAEXPOSE@"
    m = split(pm, P, ",")
    for (i = 1; i <= m; i++) {
        e = trim(P[i]); if (e == "") continue
        split(e, kvp, ":"); nm = toupper(trim(kvp[1]))
        if (nm == client) clientproto = toupper(trim(kvp[2]))
        if (nm == name) { mapped = 1; oldproto = toupper(trim(kvp[2])); if (proto != "" || tls) e = HOLE }
        newpm = newpm (newpm == "" ? "" : ",") e
    }
    if (clientproto == "" && client ~ /^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$/) clientproto = client
    ourproto = (proto != "") ? proto : (mapped ? oldproto : (clientproto != "" ? clientproto : "PLAINTEXT"))
    # Encrypted external listener (core/certificates.py): SSL, or SASL_SSL keeping the SASL.
    if (tls) ourproto = (ourproto ~ /^SASL_/) ? "SASL_SSL" : "SSL"
    if (!mapped) newpm = newpm "," name ":" ourproto
    else sub(HOLE, name ":" ourproto, newpm)

    # Listener-scoped settings (SASL mechanisms and JAAS, SSL) of the client listener, so an
    # authenticated chart stays authenticated on the external listener.
    src = "listener.name." tolower(client) "."; dst = "listener.name." tolower(name) "."
    nadd = 0
    # With TLS, ssl.* of this listener are ours alone: none copied, any set before dropped.
    if (client != "" && client != name) for (k in kv) if (index(k, src) == 1 && !((dst substr(k, length(src) + 1)) in kv) && !(tls && index(k, src "ssl.") == 1)) add[++nadd] = k
    ntls = tls ? split(tlsprops, T, " ") : 0
    for (k in kv) if (ntls && index(k, dst "ssl.") == 1) changed[k] = 1

    if (mode == "env") {
        print "export " envname("advertised.listeners") "=" sq(newadv)
        print "export " envname("listeners") "=" sq(newlis)
        print "export " envname("listener.security.protocol.map") "=" sq(newpm)
        print "kafkaexpose_client=" sq(client)
        for (i = 1; i <= ntls; i++) { j = index(T[i], "="); print "export " envname(substr(T[i], 1, j - 1)) "=" sq(substr(T[i], j + 1)) }
        exit 0
    }
    changed["advertised.listeners"] = 1; changed["listeners"] = 1; changed["listener.security.protocol.map"] = 1
    for (i = 1; i <= n; i++) { s = owner[i]; if (!((s in first) && (first[s] in changed))) print lines[i] }
    print "# kafka-expose: " name " listener for " host ":" port " (client listener " client ")"
    print "advertised.listeners=" newadv
    print "listeners=" newlis
    print "listener.security.protocol.map=" newpm
    for (i = 1; i <= nadd; i++) print dst substr(add[i], length(src) + 1) "=" kv[add[i]]
    for (i = 1; i <= ntls; i++) print T[i]
}
"""

_AWK_ARGS = (
    '-v name="$KAFKAEXPOSE_LISTENER_NAME" -v host="$KAFKAEXPOSE_HOST" '
    '-v port="$KAFKAEXPOSE_ADVERTISED_PORT" -v cport="$KAFKAEXPOSE_CONTAINER_PORT" '
    '-v proto="${KAFKAEXPOSE_SECURITY_PROTOCOL:-}" -v onexist="${KAFKAEXPOSE_ON_EXISTING:-replace}" '
    '-v tlsprops="${KAFKAEXPOSE_TLS_PROPERTIES:-}"'
)

# Init container: edit the server.properties the chart's own init container prepared.
FILE_SCRIPT = f"""set -u
f="$KAFKAEXPOSE_PROPERTIES"
if [ ! -f "$f" ]; then
  echo "kafka-expose: $f does not exist; broker left unexposed" >&2
  exit 0
fi
if awk -v mode=file -v derive=0 {_AWK_ARGS} '{AWK_PROGRAM}' "$f" > "$f.kafka-expose"; then
  cat "$f.kafka-expose" > "$f"
  echo "kafka-expose: advertising $KAFKAEXPOSE_LISTENER_NAME://$KAFKAEXPOSE_HOST:$KAFKAEXPOSE_ADVERTISED_PORT"
fi
rm -f "$f.kafka-expose"
"""

# `eval`-ed by the chart's own shell right before it execs the image's run script. It must not
# exit or fail: whatever happens, the chart's `exec` runs next.
ENV_SCRIPT = f"""kafkaexpose_props() {{
  for kafkaexpose_k in advertised.listeners listeners listener.security.protocol.map \\
      inter.broker.listener.name security.inter.broker.protocol controller.listener.names process.roles; do
    kafkaexpose_v="$KAFKAEXPOSE_ENV_PREFIX$(printf '%s' "$kafkaexpose_k" | tr 'a-z.' 'A-Z_')"
    eval "kafkaexpose_set=\\${{$kafkaexpose_v+set}}"
    if [ -n "$kafkaexpose_set" ]; then eval "printf '%s=%s\\n' \\"\\$kafkaexpose_k\\" \\"\\${{$kafkaexpose_v}}\\""; fi
  done
  return 0
}}
if kafkaexpose_exports=$(kafkaexpose_props | awk -v mode=env -v derive=1 -v prefix="$KAFKAEXPOSE_ENV_PREFIX" \\
    {_AWK_ARGS} '{AWK_PROGRAM}'); then
  kafkaexpose_to="${{KAFKAEXPOSE_ENV_PREFIX}}LISTENER_NAME_${{KAFKAEXPOSE_LISTENER_NAME}}_"
  if [ -n "${{KAFKAEXPOSE_TLS_PROPERTIES:-}}" ]; then
    for kafkaexpose_n in $(export -p | sed -n "s/^[a-z -]*\\(${{kafkaexpose_to}}SSL_[A-Za-z0-9_]*\\)=.*/\\1/p"); do
      unset "$kafkaexpose_n"
    done
  fi
  eval "$kafkaexpose_exports"
  kafkaexpose_from="${{KAFKAEXPOSE_ENV_PREFIX}}LISTENER_NAME_$(printf '%s' "$kafkaexpose_client" | tr 'a-z' 'A-Z')_"
  for kafkaexpose_n in $(export -p | sed -n "s/^[a-z -]*\\($kafkaexpose_from[A-Za-z0-9_]*\\)=.*/\\1/p"); do
    kafkaexpose_new="$kafkaexpose_to${{kafkaexpose_n#"$kafkaexpose_from"}}"
    case "${{KAFKAEXPOSE_TLS_PROPERTIES:+tls}}${{kafkaexpose_n#"$kafkaexpose_from"}}" in tlsSSL_*) continue ;; esac
    eval "kafkaexpose_set=\\${{$kafkaexpose_new+set}}"
    if [ -z "$kafkaexpose_set" ]; then eval "export $kafkaexpose_new=\\"\\${{$kafkaexpose_n}}\\""; fi
  done
  echo "kafka-expose: advertising $KAFKAEXPOSE_LISTENER_NAME://$KAFKAEXPOSE_HOST:$KAFKAEXPOSE_ADVERTISED_PORT" >&2
fi
true"""
