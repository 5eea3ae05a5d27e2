#!/usr/bin/env bash
# The walk-through of docs/installments.md, recorded as it ran:
#   WALK_DIR=/tmp/walk docs/installments-walkthrough.sh > transcript.txt
# The --now dates count from today (UTC), when the plans are created: installment 2
# falls due 30 days on, so day 31 charges it (and it fails), days 34, 38 and 45 are
# its dunning steps (3, 7, 14 days after that failure), and day 61 is past
# installment 3 (due on day 60).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WALK_DIR=${WALK_DIR:-/tmp/walk}
mkdir -p "$WALK_DIR" && cd "$WALK_DIR"
export PATH=$REPO/.venv/bin:$PATH
export PAYORCH_DATABASE_URL=sqlite:///$WALK_DIR/payorch.db
export PAYORCH_WEBHOOKS_ALLOW_HTTP_LOOPBACK=1
export PAYORCH_ADDRESS=127.0.0.1:50061
run() { echo "\$ $*"; "$@" 2>&1; echo; }
# day N HH:MM -> today + N days at HH:MM UTC, e.g. 2026-12-22T00:01:00Z
day() { python3 -c "import datetime as d,sys; t=d.datetime.now(d.UTC).date()+d.timedelta(days=int(sys.argv[1])); print(f'{t}T{sys.argv[2]}:00Z')" "$1" "$2"; }
# The scheduler logs JSON lines to stderr; the transcript keeps its stdout summary.
runq() { echo "\$ $*"; "$@" 2>/dev/null; echo; }

echo '$ payorch serve --demo-key-file .payorch/demo-key --listen 127.0.0.1:50061 --http-port 0 &'
payorch serve --demo-key-file .payorch/demo-key --listen 127.0.0.1:50061 --http-port 0 > serve.out 2> serve.log &
SERVE_PID=$!
trap 'kill $SERVE_PID ${LISTEN_PID:-} 2>/dev/null' EXIT
for i in $(seq 1 60); do grep -q serving serve.out 2>/dev/null && break; sleep 0.5; done
cat serve.out; echo

echo '$ payorch webhooks create-endpoint --url http://127.0.0.1:8088/hooks --description "walk-through receiver" --event-type installment_plan.created --event-type installment.paid --event-type installment.failed --event-type installment.failed_final --event-type installment_plan.breached --event-type installment_plan.completed'
payorch webhooks create-endpoint --url http://127.0.0.1:8088/hooks --description "walk-through receiver" \
  --event-type installment_plan.created --event-type installment.paid --event-type installment.failed \
  --event-type installment.failed_final --event-type installment_plan.breached --event-type installment_plan.completed > endpoint.json
cat endpoint.json; echo
run payorch webhooks create-endpoint --url https://2130706433:8088/hooks
run payorch webhooks create-endpoint --url https://169.254.169.254/latest/meta-data
SECRET=$(python3 -c "import json;print(json.load(open('endpoint.json'))['secret'])")

echo "\$ payorch webhooks listen --port 8088 --secret $SECRET --fail-first 1 > receiver.out &"
payorch webhooks listen --port 8088 --secret "$SECRET" --fail-first 1 > receiver.out 2> receiver.err &
LISTEN_PID=$!
sleep 2; echo

run payorch installments create --order-id order-1001 --amount 100.00 --currency EUR \
  --payment-method pm_card_offSessionDeclinedInsufficientFunds --customer cus_walk_1001 \
  --request-id walk-dunning --table
run payorch installments create --order-id order-1002 --amount 250.00 --currency EUR \
  --payment-method pm_card_visa --customer cus_walk_1002 --request-id walk-happy --table
run payorch installments create --order-id order-1003 --amount 99.99 --currency EUR \
  --payment-method pm_card_visa --customer cus_walk_1003 --request-id walk-small
run payorch installments create --order-id order-1004 --amount 120.00 --currency EUR \
  --payment-method pm_card_chargeDeclinedInsufficientFunds --customer cus_walk_1004 \
  --request-id walk-declined

DUNNING=$(payorch installments list --status active 2>/dev/null | python3 -c "import json,sys;print([p['planId'] for p in json.load(sys.stdin)['plans'] if p['orderId']=='order-1001'][0])")
HAPPY=$(payorch installments list --status active 2>/dev/null | python3 -c "import json,sys;print([p['planId'] for p in json.load(sys.stdin)['plans'] if p['orderId']=='order-1002'][0])")

for NOW in "$(day 31 00:00)" "$(day 34 00:01)" "$(day 38 00:01)" "$(day 45 00:01)"; do
  runq payorch scheduler --once --now "$NOW"
  run payorch installments get $DUNNING --table
done
runq payorch scheduler --once --now "$(day 61 00:00)"
run payorch installments get $HAPPY --table
run payorch installments get $DUNNING --table
runq payorch webhooks dispatch --once --now "$(day 61 00:01)"
run payorch webhooks deliveries --status pending
run payorch installments retry ${DUNNING}_2 --table
echo '$ cat receiver.out'
cat receiver.out
