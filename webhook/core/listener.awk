# kafka-expose: add the external listener to a Kafka configuration, inside the image of the broker.
# Input: Kafka properties (a server.properties, then any `--override k=v` lines: a later key wins).
# Variables (-v): mode (file|env|props), derive (1: listeners derived from the advertised ones, as
# the Confluent/Apache images do), name, fallbacks (comma list), headless (the pod subdomain), host, port, cport, proto, onexist,
# prefix (env mode). Exit 0 with the edit on stdout, or non-zero with the reason on stderr and
# nothing usable on stdout: the caller then leaves the configuration exactly as it was.
# This program contains no single quote: it is embedded in single quotes by the shell scripts.
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function lname(e,  i) { i = index(e, "://"); return i ? toupper(trim(substr(e, 1, i - 1))) : "" }
function lport(e,  n, parts) { n = split(e, parts, ":"); return trim(parts[n]) }
function lhost(e,  h) { h = substr(e, index(e, "://") + 3); sub(/:[^:]*$/, "", h); return h }
function say(msg) { print "kafka-expose: " msg > "/dev/stderr" }
function continued(s,  n) { n = 0; while (n < length(s) && substr(s, length(s) - n, 1) == "\\") n++; return n % 2 == 1 }
function sq(s) { gsub(Q, Q "\\" Q Q, s); return Q s Q }
function envname(k) { k = toupper(k); gsub(/\./, "_", k); return prefix k }
function safe(s) { return s ~ /^[A-Za-z][A-Za-z0-9_]*$/ }
# The documented rule for "this listener is the own outside access of the chart": its host, with shell
# and Kubernetes variables taken out, is still a dotted DNS name that is not an IP address and not a
# cluster name (.svc, .local, .internal). Pod IPs, pod and headless-Service names are inside.
function outside(e,  h) {
    h = tolower(lhost(e))
    gsub(/\$\(\([^)]*\)\)|\$\([A-Za-z0-9_]*\)|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*/, "", h)
    if (h == "" || index(h, ".") == 0 || h ~ /^[0-9.]*$/ || h ~ /[\[:]/) return 0
    if (headless != "" && index("." h ".", "." tolower(headless) ".")) return 0
    if (h ~ /(^|\.)svc(\.|$)/ || h ~ /\.(local|internal|localdomain)$/ || h ~ /^\./) return 0
    return 1
}
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
    if (!safe(name)) { say("listener name " name " is not usable; broker left unexposed"); exit 8 }
    if (("process.roles" in kv) && kv["process.roles"] !~ /broker/) {
        say("process.roles=" kv["process.roles"] " has no broker role; nothing to expose")
        exit 3
    }
    split(toupper(kv["controller.listener.names"]), C, ",")
    for (i in C) { c = trim(C[i]); if (c != "") ctrl[c] = 1 }
    haslis = ("listeners" in kv)
    lis = haslis ? kv["listeners"] : (derive ? "" : "PLAINTEXT://:9092")
    if ("advertised.listeners" in kv) adv = kv["advertised.listeners"]
    else {
        # Kafka advertises the bound listeners, less the KRaft controller ones, when unset.
        adv = ""; m = split(lis, L, ",")
        for (i = 1; i <= m; i++) { e = trim(L[i]); if (e != "" && !(lname(e) in ctrl)) adv = adv (adv == "" ? "" : ",") e }
    }
    if (!haslis && derive) {
        m = split(adv, A, ",")
        for (i = 1; i <= m; i++) { e = trim(A[i]); if (e != "") lis = lis (lis == "" ? "" : ",") lname(e) "://0.0.0.0:" lport(e) }
    }
    if (trim(adv) == "") { say("no advertised listeners found; broker left unexposed"); exit 6 }
    ib = toupper(trim(kv["inter.broker.listener.name"]))
    if (ib == "") ib = ("security.inter.broker.protocol" in kv) ? toupper(trim(kv["security.inter.broker.protocol"])) : "PLAINTEXT"

    # Every listener name the chart already uses, and whether its entry of our name is its outside access.
    m = split(adv, A, ","); for (i = 1; i <= m; i++) { e = trim(A[i]); if (e != "") { taken[lname(e)] = 1; advn[lname(e)] = 1; if (lhost(e) == host) mine[lname(e)] = 1; if (lname(e) == name && !outside(e)) inside = 1 } }
    m = split(lis, L, ","); for (i = 1; i <= m; i++) { e = trim(L[i]); if (e != "") taken[lname(e)] = 1 }
    bound_only = (name in taken) && !(name in advn)
    if ((name in taken) && !(name in mine) && (inside || bound_only || name == ib || (name in ctrl))) {
        chosen = ""; m = split(fallbacks, F, ",")
        for (i = 1; i <= m; i++) { f = toupper(trim(F[i])); if (chosen == "" && safe(f) && ((f in mine) || (!(f in taken) && !(f in ctrl) && f != ib))) chosen = f }
        if (chosen == "") { say("the chart serves in-cluster clients on " name " and no fallback name is free; broker left unexposed"); exit 7 }
        say("the chart serves in-cluster clients on " name "; it stays as it is, the external listener is " chosen)
        name = chosen
    }

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
    # Encrypted external listener (tlsprops, core/tls_listener.py): SSL, or SASL_SSL keeping the SASL.
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
        print "kafkaexpose_client=" sq(safe(client) ? client : "")
        print "kafkaexpose_name=" sq(name)
        for (i = 1; i <= ntls; i++) { j = index(T[i], "="); print "export " envname(dst substr(T[i], 1, j - 1)) "=" sq(substr(T[i], j + 1)) }
        exit 0
    }
    if (mode == "props") {
        print "advertised.listeners=" newadv
        print "listeners=" newlis
        print "listener.security.protocol.map=" newpm
        for (i = 1; i <= nadd; i++) print dst substr(add[i], length(src) + 1) "=" kv[add[i]]
        for (i = 1; i <= ntls; i++) print dst T[i]
        say("advertising " ours " (client listener " client ")")
        exit 0
    }
    changed["advertised.listeners"] = 1; changed["listeners"] = 1; changed["listener.security.protocol.map"] = 1
    for (i = 1; i <= n; i++) { s = owner[i]; if (!((s in first) && (first[s] in changed))) print lines[i] }
    print "# kafka-expose: " name " listener for " host ":" port " (client listener " client ")"
    print "advertised.listeners=" newadv
    print "listeners=" newlis
    print "listener.security.protocol.map=" newpm
    for (i = 1; i <= nadd; i++) print dst substr(add[i], length(src) + 1) "=" kv[add[i]]
    for (i = 1; i <= ntls; i++) print dst T[i]
}
