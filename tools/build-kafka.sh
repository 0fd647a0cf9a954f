#!/usr/bin/env bash
# Fetch the jars needed to run real Kafka brokers in tests, from Maven Central, via
# maven-dependency-plugin copy-dependencies on the poms in tools/kafka/:
#   tools/kafka/kraft/pom.xml  Apache Kafka 4.x (KRaft) + kafka-tools + log4j2 backend
#   tools/kafka/zk/pom.xml     Apache Kafka 3.9.x (last line with ZooKeeper mode) + ZooKeeper
#                              server + reload4j backend
# Output (outside the repo, keyed by version):
#   ${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}/kafka-<version>/libs/*.jar
# Idempotent: a marker file records the pom hash + version; a warm run only checks it.
# Env: KAFKA_KRAFT_VERSION (default 4.1.2), KAFKA_ZK_VERSION (default 3.9.2),
#      KAFKA_EXPOSE_CACHE, MVN (default mvn).
# Prints one line per dist at the end:  kraft=<dir>  /  zk=<dir>
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}
KRAFT_VERSION=${KAFKA_KRAFT_VERSION:-4.1.2}
ZK_VERSION=${KAFKA_ZK_VERSION:-3.9.2}
MVN=${MVN:-mvn}
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

log() { echo "build-kafka: $*" >&2; }

# fetch <pom> <version> <check-class>...  -> prints the dist dir
fetch() {
    local pom=$1 version=$2; shift 2
    local dist=$CACHE/kafka-$version
    local marker=$dist/.complete
    local stamp
    stamp="$(sha256sum "$pom" | cut -d' ' -f1) $version $DEP_PLUGIN"
    if [[ -f $marker && "$(cat "$marker")" == "$stamp" && -d $dist/libs ]]; then
        log "kafka $version: cached in $dist"
        echo "$dist"
        return
    fi
    log "kafka $version: fetching jars from Maven Central ($pom)"
    mkdir -p "$dist"
    rm -rf "$dist/libs.tmp" "$marker"
    # (Debian's maven 3.8.7 prints stray ANSI resets even with -B: keep its output in a
    # log and show it, cleaned, only on failure)
    local mvnlog=$dist/mvn.log
    if ! "$MVN" -B -q -Dstyle.color=never -f "$pom" "$DEP_PLUGIN:copy-dependencies" \
        -Dkafka.version="$version" \
        -DincludeScope=runtime \
        -DoutputDirectory="$dist/libs.tmp" >"$mvnlog" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$mvnlog" >&2
        log "maven failed for kafka $version (log: $mvnlog)"
        exit 1
    fi
    # sanity checks: the classes the test harness starts must be on this classpath
    local core=$dist/libs.tmp/kafka_2.13-$version.jar
    [[ -f $core ]] || { log "missing $core"; exit 1; }
    python3 - "$dist/libs.tmp" "$@" <<'PY' >&2
import sys, zipfile, pathlib
libs, wanted = pathlib.Path(sys.argv[1]), set(sys.argv[2:])
for jar in sorted(libs.glob("*.jar")):
    wanted -= set(zipfile.ZipFile(jar).namelist())
if wanted:
    sys.exit(f"build-kafka: classes not found in {libs}: {sorted(wanted)}")
PY
    rm -rf "$dist/libs"
    mv "$dist/libs.tmp" "$dist/libs"
    echo "$stamp" > "$marker"
    log "kafka $version: $(ls "$dist/libs" | wc -l) jars in $dist/libs"
    echo "$dist"
}

command -v "$MVN" >/dev/null || { log "maven ($MVN) not found"; exit 1; }
command -v python3 >/dev/null || { log "python3 not found"; exit 1; }

kraft=$(fetch "$HERE/kafka/kraft/pom.xml" "$KRAFT_VERSION" \
    kafka/Kafka.class kafka/tools/StorageTool.class \
    org/apache/logging/log4j/core/LoggerContext.class \
    org/apache/logging/slf4j/Log4jLoggerFactory.class)
zk=$(fetch "$HERE/kafka/zk/pom.xml" "$ZK_VERSION" \
    kafka/Kafka.class kafka/tools/StorageTool.class \
    org/apache/zookeeper/server/quorum/QuorumPeerMain.class \
    org/apache/zookeeper/server/ZooKeeperServerMain.class \
    org/apache/log4j/Logger.class org/slf4j/impl/Reload4jLoggerFactory.class)

echo "kraft=$kraft"
echo "zk=$zk"
