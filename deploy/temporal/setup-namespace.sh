#!/bin/sh
# One-shot (temporalio/admin-tools): wait for the server, create the namespace and register the
# search attributes antenna-jobs sets (core/search_attributes.py). Safe to run again.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${NAMESPACE:?}"
max_attempts=60
attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" | grep -q SERVING; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge "$max_attempts" ]; then
    echo "Temporal at $TEMPORAL_ADDRESS not serving after $max_attempts attempts" >&2
    exit 1
  fi
  sleep 2
done

if ! temporal operator namespace describe -n "$NAMESPACE" >/dev/null 2>&1; then
  temporal operator namespace create -n "$NAMESPACE" --retention 72h
fi

existing=$(temporal operator search-attribute list -n "$NAMESPACE" --output json)
for pair in AntennaJobId=Int AntennaJobStatus=Keyword AntennaProjectId=Int \
    AntennaPipelineSlug=Keyword AntennaJobType=Keyword; do
  name=${pair%%=*}
  kind=${pair#*=}
  if ! printf '%s' "$existing" | grep -q "\"$name\""; then
    temporal operator search-attribute create -n "$NAMESPACE" --name "$name" --type "$kind"
  fi
done
echo "namespace $NAMESPACE ready"
