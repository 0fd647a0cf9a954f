# kafka-expose init container: edit the server.properties the chart's own init container prepared.
set -u
f="$KAFKAEXPOSE_PROPERTIES"
if [ ! -f "$f" ]; then
  echo "kafka-expose: $f does not exist; broker left unexposed" >&2
  exit 0
fi
if awk -v mode=file -v derive=0 @AWK_ARGS@ '@AWK_PROGRAM@' "$f" > "$f.kafka-expose"; then
  cat "$f.kafka-expose" > "$f" || echo "kafka-expose: cannot write $f; broker left unexposed" >&2
  echo "kafka-expose: advertising $KAFKAEXPOSE_HOST:$KAFKAEXPOSE_ADVERTISED_PORT"
fi
rm -f "$f.kafka-expose" || true
exit 0
