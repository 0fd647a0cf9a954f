# kafka-expose: `eval`-ed by the chart's command right before it runs kafka-server-start.sh; defines
# kafkaexpose_start, which runs (`exec` or `run`) that command line with `--override` flags added
# for the external listener. Kafka applies overrides after the file and the last one of a key wins,
# so the file (read-only or not, per-pod name or not) is never written. It must never stop the
# broker: on any problem the command line runs exactly as the chart wrote it.
kafkaexpose_overrides() {
  shift
  if [ "${1:-}" = "-daemon" ]; then shift; fi
  kafkaexpose_f=""
  if [ $# -gt 0 ]; then kafkaexpose_f=$1; shift; fi
  kafkaexpose_ov=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --override) if [ $# -gt 1 ]; then kafkaexpose_ov="$kafkaexpose_ov$2
"; shift; fi ;;
      --override=*) kafkaexpose_ov="$kafkaexpose_ov${1#--override=}
" ;;
    esac
    shift
  done
  {
    if [ -n "$kafkaexpose_f" ] && [ -r "$kafkaexpose_f" ]; then cat "$kafkaexpose_f"; echo; fi
    printf '%s' "$kafkaexpose_ov"
  } | awk -v mode=props -v derive=0 @AWK_ARGS@ '@AWK_PROGRAM@'
}
kafkaexpose_start() {
  kafkaexpose_how=$1
  shift
  if kafkaexpose_extra=$(kafkaexpose_overrides "$@"); then
    kafkaexpose_ifs_set=${IFS+set}
    kafkaexpose_ifs=${IFS-}
    kafkaexpose_glob=on
    case $- in *f*) kafkaexpose_glob=off ;; esac
    set -f
    IFS='
'
    for kafkaexpose_line in $kafkaexpose_extra; do set -- "$@" --override "$kafkaexpose_line"; done
    if [ "$kafkaexpose_ifs_set" = set ]; then IFS=$kafkaexpose_ifs; else unset IFS; fi
    if [ "$kafkaexpose_glob" = on ]; then set +f; fi
  fi
  if [ "$kafkaexpose_how" = exec ]; then exec "$@"; fi
  "$@"
}
true
