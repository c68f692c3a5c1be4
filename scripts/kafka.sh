#!/usr/bin/env bash
# Start, stop or query a single-node Apache Kafka broker in KRaft mode on loopback.
#
# The broker comes from the official jars on Maven Central, resolved by Maven at the
# version pinned in scripts/kafka/pom.xml into .cache/kafka/<version>/libs (git-ignored).
# Storage is formatted on the first start; topics are created explicitly.
#
#   scripts/kafka.sh start|stop|status|topics|ensure-jars
#
# Environment (all optional):
#   KAFKA_PORT         client listener port            (default 19092)
#   KAFKA_CONTROLLER_PORT                              (default KAFKA_PORT+1)
#   KAFKA_RUN_DIR      data, config, logs and pid file (default .run/kafka)
#   KAFKA_TOPICS       topics to create, "name:partitions ..." (default: movielog:3 movielog-dlq:1 exposures:3)
#   KAFKA_HEAP         JVM heap                        (default 384m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${KAFKA_CACHE:-$ROOT/.cache/kafka/$KAFKA_VERSION}"
LIBS="$CACHE/libs"
PORT="${KAFKA_PORT:-19092}"
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
RUN="${KAFKA_RUN_DIR:-$ROOT/.run/kafka}"
TOPICS="${KAFKA_TOPICS:-movielog:3 movielog-dlq:1 exposures:3}"
HEAP="${KAFKA_HEAP:-384m}"
PIDFILE="$RUN/kafka.pid"

log() { echo "kafka.sh: $*" >&2; }

ensure_jars() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to resolve the Kafka jars"; exit 1; }
  log "resolving Apache Kafka $KAFKA_VERSION jars with Maven into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

java_cp() {
  java -Xmx"$HEAP" -Xms64m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$RUN/logs" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" \
    -cp "$LIBS/*" "$@"
}

is_running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$RUN/data" "$RUN/logs"
  cat > "$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=268435456
PROPS
}

create_topics() {
  local t name parts
  local existing
  existing="$(java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" --list 2>/dev/null || true)"
  for t in $TOPICS; do
    name="${t%%:*}"; parts="${t#*:}"
    [[ "$parts" == "$t" ]] && parts=1
    if grep -qx "$name" <<<"$existing"; then continue; fi
    java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" \
      --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 >/dev/null
    log "created topic $name ($parts partitions)"
  done
}

start() {
  ensure_jars
  if is_running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; create_topics; return 0; fi
  if port_open "$PORT"; then log "port $PORT is taken by another process"; exit 1; fi
  write_config
  if [[ ! -f "$RUN/data/meta.properties" ]]; then
    log "formatting storage in $RUN/data"
    java_cp kafka.tools.StorageTool format --standalone -t "$(java_cp kafka.tools.StorageTool random-uuid)" \
      -c "$RUN/server.properties" >"$RUN/logs/format.log" 2>&1 || { log "storage format failed:"; cat "$RUN/logs/format.log" >&2; exit 1; }
  fi
  log "starting Apache Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$PORT"
  nohup java -Xmx"$HEAP" -Xms64m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$RUN/logs" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" \
    -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" >"$RUN/logs/stdout.log" 2>&1 &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 120); do
    if port_open "$PORT"; then break; fi
    if ! is_running; then log "broker exited; see $RUN/logs/stdout.log"; tail -20 "$RUN/logs/stdout.log" >&2; exit 1; fi
    sleep 0.5
  done
  port_open "$PORT" || { log "broker did not open port $PORT in 60 s"; exit 1; }
  create_topics
  log "ready (pid $(cat "$PIDFILE")); logs in $RUN/logs"
}

stop() {
  if ! is_running; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill "$pid"
  local i
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "broker did not stop in 30 s; killing"; kill -9 "$pid"; fi
  rm -f "$PIDFILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status)
    if is_running; then echo "running pid=$(cat "$PIDFILE") bootstrap=127.0.0.1:$PORT version=$KAFKA_VERSION"; else echo "stopped"; exit 3; fi ;;
  topics) create_topics ;;
  ensure-jars) ensure_jars ;;
  clean) stop; rm -rf "$RUN" ;;
  *) echo "usage: $0 start|stop|restart|status|topics|ensure-jars|clean" >&2; exit 2 ;;
esac
