# kafka-expose: `eval`-ed by the chart's own shell right before it runs the image's run script.
# It must not exit or fail (the chart may run under `set -eu`): whatever happens, the chart's
# command runs next. Everything is computed in a subshell; the current shell only evals `export`
# lines of checked names.
kafkaexpose_props() {
  for kafkaexpose_k in advertised.listeners listeners listener.security.protocol.map \
      inter.broker.listener.name security.inter.broker.protocol controller.listener.names process.roles; do
    kafkaexpose_v="$KAFKAEXPOSE_ENV_PREFIX$(printf '%s' "$kafkaexpose_k" | tr 'a-z.' 'A-Z_')"
    eval "kafkaexpose_set=\${$kafkaexpose_v+set}"
    if [ -n "$kafkaexpose_set" ]; then eval "printf '%s=%s\n' \"\$kafkaexpose_k\" \"\${$kafkaexpose_v}\""; fi
  done
  return 0
}
kafkaexpose_exports() {
  kafkaexpose_edit=$(kafkaexpose_props | awk -v mode=env -v derive=1 -v prefix="$KAFKAEXPOSE_ENV_PREFIX" \
      @AWK_ARGS@ '@AWK_PROGRAM@') || return 1
  eval "$kafkaexpose_edit" || return 1
  case "$kafkaexpose_client$kafkaexpose_name" in
    *[!A-Za-z0-9_]*|'') printf '%s\n' "$kafkaexpose_edit" | grep '^export '; return 0 ;;
  esac
  kafkaexpose_from="${KAFKAEXPOSE_ENV_PREFIX}LISTENER_NAME_$(printf '%s' "$kafkaexpose_client" | tr 'a-z' 'A-Z')_"
  kafkaexpose_to="${KAFKAEXPOSE_ENV_PREFIX}LISTENER_NAME_$(printf '%s' "$kafkaexpose_name" | tr 'a-z' 'A-Z')_"
  if [ -n "${KAFKAEXPOSE_TLS_PROPERTIES:-}" ]; then  # the listener's ssl.* are ours alone
    for kafkaexpose_n in $(export -p | sed -n "s/^[a-z -]*\(${kafkaexpose_to}SSL_[A-Za-z0-9_]*\)=.*/\1/p"); do
      printf 'unset %s\n' "$kafkaexpose_n"
    done
  fi
  printf '%s\n' "$kafkaexpose_edit" | grep '^export '
  for kafkaexpose_n in $(export -p | sed -n "s/^[a-z -]*\($kafkaexpose_from[A-Za-z0-9_]*\)=.*/\1/p"); do
    kafkaexpose_new="$kafkaexpose_to${kafkaexpose_n#"$kafkaexpose_from"}"
    case "${KAFKAEXPOSE_TLS_PROPERTIES:+tls}${kafkaexpose_n#"$kafkaexpose_from"}" in tlsSSL_*) continue ;; esac
    eval "kafkaexpose_set=\${$kafkaexpose_new+set}"
    if [ -z "$kafkaexpose_set" ]; then
      eval "kafkaexpose_val=\${$kafkaexpose_n}"
      printf 'export %s=%s\n' "$kafkaexpose_new" "'$(printf '%s' "$kafkaexpose_val" | sed "s/'/'\\\\''/g")'"
    fi
  done
  return 0
}
if kafkaexpose_out=$(kafkaexpose_exports); then
  if eval "$kafkaexpose_out"; then
    echo "kafka-expose: advertising $KAFKAEXPOSE_HOST:$KAFKAEXPOSE_ADVERTISED_PORT" >&2
  fi
fi
true
