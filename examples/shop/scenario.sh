#!/usr/bin/env bash
# The shop demo: starts the seven services on 127.0.0.1, follows six orders through success,
# refusal, a failed shipment, a payment service killed mid-transaction, a coordinator killed
# mid-transaction and a message relay killed between a delivery and its record; shows the
# merchant's notifications waiting while its webhook is down; prints stock, balances, points, mails
# and notifications before and after, and checks the invariants. Exits non-zero if any order ends
# otherwise than told, a message is processed twice or any invariant is broken. Every process it
# starts is stopped on every way out.
#
#   examples/shop/scenario.sh      [--shop PATH] [--data DIR]
#   examples/shop/scenario.sh load [--shop PATH] [--data DIR] [--orders N] [--concurrency C]
#
# --shop: the shop program (default build/gcc/examples/shop); --data: where the databases and the
# services' logs go (default: a new temporary directory; it is kept for reading afterwards).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=story
if [[ ${1:-} == load ]]; then
  mode=load
  shift
fi
shop=$HERE/../../build/gcc/examples/shop
data=
orders=10000
concurrency=32
while (($# > 0)); do
  case $1 in
    --shop) shop=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --orders) orders=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    *) echo "scenario.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -x $shop ]] || { echo "scenario.sh: no shop program at $shop (build the 'shop' target)" >&2; exit 2; }
command -v curl >/dev/null || { echo "scenario.sh: curl is needed (scripts/install-deps.sh installs it)" >&2; exit 2; }
if [[ -z $data ]]; then data=$(mktemp -d /tmp/dtx-shop.XXXXXX); fi
rm -rf "$data"
mkdir -p "$data"

# ---- processes --------------------------------------------------------------------------------

declare -A pid port tries restarts started
stop_all() {
  local name
  for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do
    for _ in $(seq 50); do kill -0 "${pid[$name]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pid[$name]}" 2>/dev/null || true
    wait "${pid[$name]}" 2>/dev/null || true
    unset "pid[$name]"
  done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

# Ports nobody listens on, from a random start below Linux's ephemeral ports (32768 and up), so
# that no outgoing connection holds one.
next_port=$((10000 + RANDOM % 20000))
pick_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do next_port=$((next_port + 1)); done
  port[$1]=$next_port
  next_port=$((next_port + 1))
}
for name in order inventory payment loyalty shipment mail merchant; do pick_port "$name"; done
url() { echo "http://127.0.0.1:${port[$1]}"; }

# start NAME [options...]: runs `shop NAME` in the background, its log in $data/NAME.log.
start() {
  local name=$1
  shift
  if [[ -n ${started[$name]:-} ]]; then restarts[$name]=1; fi
  started[$name]=1
  local args=(--port "${port[$name]}")
  if [[ $name == order ]]; then
    args+=(--db "$data/orders.db" --journal "$data/orders.dtx.db"
      --inventory-url "$(url inventory)/dtx/inventory" --payment-url "$(url payment)/dtx/payment"
      --loyalty-url "$(url loyalty)/dtx/loyalty" --shipment-url "$(url shipment)/dtx/shipment"
      --mail-url "$(url mail)/mail/events" --merchant-url "$(url merchant)/webhooks/orders"
      --relay-lease-ms 2000 --notify-retry-ms 1000)
  else
    args+=(--db "$data/$name.db")
  fi
  "$shop" "$name" "${args[@]}" "$@" >>"$data/$name.log" 2>&1 &
  pid[$name]=$!
  local i
  for i in $(seq 600); do
    if curl -sf -o /dev/null "$(url "$name")/health"; then return 0; fi
    if ! kill -0 "${pid[$name]}" 2>/dev/null; then
      wait "${pid[$name]}" 2>/dev/null || true
      unset "pid[$name]"
      # Taken meanwhile by someone else: another port, if nothing was told this one yet.
      if ((${restarts[$name]:-0} == 0 && ${tries[$name]:-0} < 5)) && tail -n 1 "$data/$name.log" | grep -q "already in use"; then
        tries[$name]=$((${tries[$name]:-0} + 1))
        pick_port "$name"
        unset "started[$name]"
        start "$name" "$@"
        return 0
      fi
      tail -n 20 "$data/$name.log" >&2
      echo "scenario.sh: $name did not start" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "scenario.sh: $name did not answer /health within 60 s" >&2
  exit 1
}

# kill9 NAME: a real SIGKILL, no chance to clean up.
kill9() {
  kill -KILL "${pid[$1]}"
  wait "${pid[$1]}" 2>/dev/null || true
  unset "pid[$1]"
}

# wait_log NAME PATTERN: until the service's log has a line matching PATTERN (60 s at most).
wait_log() {
  local i
  for i in $(seq 600); do
    if grep -q -- "$2" "$data/$1.log"; then return 0; fi
    sleep 0.1
  done
  echo "scenario.sh: '$2' never appeared in $data/$1.log" >&2
  exit 1
}

audit() { "$shop" audit --data "$data" "$@"; }

# Sanitizer reports in any service's log (the sanitized build) are failures.
check_logs() {
  if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$data"/*.log; then
    fail "sanitizer reports in the logs above"
  fi
}

# ---- load mode --------------------------------------------------------------------------------

if [[ $mode == load ]]; then
  customers=64
  accounts=shop=0
  names=
  for ((i = 0; i < customers; i++)); do
    accounts+=",c$i=1000000000"
    names+="${names:+,}c$i"
  done
  start inventory --seed apple=100000000,pear=100000000,plum=100000000
  start payment --seed "$accounts"
  start loyalty
  start shipment
  start mail
  start merchant
  start order --customers "$names"
  status=0
  "$shop" load --url "$(url order)" --orders "$orders" --concurrency "$concurrency" --customers "$customers" || status=1
  audit --json yes || status=1
  stop_all
  check_logs
  ((failures == 0)) || status=1
  echo "logs and databases: $data" >&2
  exit $status
fi

# ---- the story --------------------------------------------------------------------------------

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

post_order() { curl -s -X POST -H 'content-type: application/json' -d "$1" "$(url order)/orders"; }
# place JSON: posts an order and complains about anything but an order in the answer.
place() {
  local answer
  answer=$(post_order "$1")
  [[ -n $(state_of "$answer") ]] || fail "POST /orders answered: $answer"
}
state_of() { sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p' <<<"$1"; }
field_of() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$1"; }

# expect ORDER_ID STATE: waits for the order to reach a final state and compares.
expect() {
  local answer state i
  for i in $(seq 600); do
    answer=$(curl -s "$(url order)/orders/$1" || true)
    state=$(state_of "$answer")
    case $state in completed | cancelled | shipment_failed) break ;; esac
    sleep 0.1
  done
  note "order $1: $state$( [[ -n $(field_of "$answer" reason) ]] && echo " ($(field_of "$answer" reason))")"
  [[ $state == "$2" ]] || fail "order $1 ended $state, expected $2"
  last_answer=$answer
}

# trace ORDER_ANSWER: the log lines of an order's transactions, from every service.
trace() {
  local gid
  gid=$(field_of "$1" checkout_gid)
  note "its checkout's log lines (gid $gid), from every service:"
  grep -h -- "gid=$gid" "$data"/*.log | sort | sed 's/^/     /' | head -n 14 || true
}

say "Starting the services on 127.0.0.1 (logs and databases in $data)"
start inventory
start payment --pause-at confirm:dave
start loyalty
start shipment
start mail
start order --pause-at decide:erin
for name in order inventory payment loyalty shipment mail; do note "$name: $(url "$name") (pid ${pid[$name]})"; done
note "merchant: $(url merchant) is down for now: its webhook receiver starts after order 3"
note "fault points armed: payment stops after committing dave's confirm; order stops after the"
note "journal write of erin's checkout decision."

say "Before"
audit

say "1. alice orders 3 apples: confirmed everywhere"
note "checkout (TCC): order, inventory and payment tried at once; then fulfilment (saga): loyalty, shipment"
place '{"order_id":"o-1","customer":"alice","sku":"apple","qty":3}'
expect o-1 completed
trace "$last_answer"

say "Refused at the door: orders the API answers 400 or 409 before any transaction"
# refused STATUS CODE BODY: posts BODY and expects STATUS with error CODE.
refused() {
  local answer status
  answer=$(curl -s -w '\n%{http_code}' -X POST -H 'content-type: application/json' -d "$3" "$(url order)/orders")
  status=${answer##*$'\n'}
  answer=${answer%$'\n'*}
  note "${3//$'\xff'/\\xff} -> $status $answer"
  [[ $status == "$1" && $answer == *"\"error\":\"$2\""* ]] || fail "expected $1 $2"
}
refused 400 invalid_qty '{"customer":"alice","sku":"apple","qty":2.5}'
refused 400 invalid_qty '{"customer":"alice","sku":"apple","qty":-3}'
refused 400 unknown_customer '{"customer":"mallory","sku":"apple","qty":1}'
refused 400 merchant_cannot_order '{"customer":"shop","sku":"apple","qty":1}'
refused 409 order_id_conflict '{"order_id":"o-1","customer":"alice","sku":"apple","qty":4}'
refused 400 invalid_json $'{"order_id":"o-\xff","customer":"alice","sku":"apple","qty":1}'
answer=$(post_order '{"order_id":"o-1","customer":"alice","sku":"apple","qty":3}')
note "o-1 again with the same body: the same order, $(state_of "$answer") (order_id is an idempotency key)"
[[ $(state_of "$answer") == completed ]] || fail "a repeated o-1 answered: $answer"
# raw REQUEST: sends bytes no URL can hold (curl would encode them) and prints the status line.
raw() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/${port[order]}"
  printf '%b' "$1" >&3
  IFS= read -r -t 10 line <&3 || true
  exec 3<&-
  echo "${line%$'\r'}"
}
for path in '/orders/\xff' '/orders/caf%C3' '/orders/%0A'; do
  line=$(raw "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  note "GET $path -> $line"
  [[ $line == "HTTP/1.1 400 Bad Request" ]] || fail "GET $path answered '$line'"
done
curl -sf -o /dev/null "$(url order)/health" || fail "the order service stopped answering"

say "2. bob orders 50 pears: refused for lack of stock, cancelled everywhere"
place '{"order_id":"o-2","customer":"bob","sku":"pear","qty":50}'
expect o-2 cancelled

say "3. carol orders 1 pear to Atlantis: paid, but no carrier goes there"
note "the fulfilment saga compensates: loyalty's points are removed; the order ends shipment_failed"
place '{"order_id":"o-3","customer":"carol","sku":"pear","qty":1,"ship_to":"Atlantis"}'
expect o-3 shipment_failed

say "The merchant's webhook comes up: the notifications waiting in the order service's outbox arrive"
note "every order's end adds a notification to orders.db in the transaction that records it; the"
note "relay has been retrying them (every second in this demo; a shop keeps the 15 s ... 24 h schedule):"
grep -E "relay: notification .* not delivered" "$data/order.log" | head -n 3 | cut -c 14- | sed 's/^/     /'
start merchant
note "merchant started (pid ${pid[merchant]}):"
for id in o-1 o-2 o-3; do wait_log merchant "notified: order $id "; done
grep "notified: order" "$data/merchant.log" | cut -c 14- | sed 's/^/     /'
answer=$(curl -s "$(url order)/order-results/o-2")
note "a merchant that missed one asks: GET /order-results/o-2 -> $answer"
[[ $answer == *'"state":"cancelled"'* ]] || fail "GET /order-results/o-2 answered: $answer"

say "4. dave orders 2 plums; the payment service is killed with SIGKILL in the middle"
post_order '{"order_id":"o-4","customer":"dave","sku":"plum","qty":2}' >"$data/o-4.json" &
pid[client]=$!
wait_log payment "PAUSED"
note "payment: $(grep PAUSED "$data/payment.log" | head -n 1 | cut -c 14-)"
kill9 payment
note "payment killed (SIGKILL); the coordinator keeps retrying the confirm:"
wait_log order "confirm of branch 03 returned \[order o-4\]"
sleep 1
grep "\[order o-4\]" "$data/order.log" | grep "confirm" | tail -n 2 | sed 's/^/     /'
start payment
note "payment restarted (pid ${pid[payment]}); the retried confirm finds the barrier row of the"
note "committed one and answers success without charging twice"
wait "${pid[client]}" || true
unset "pid[client]"
expect o-4 completed

say "5. erin orders 4 apples; the order service (the coordinator) is killed with SIGKILL in the middle"
post_order '{"order_id":"o-5","customer":"erin","sku":"apple","qty":4}' >"$data/o-5.json" 2>&1 &
pid[client]=$!
wait_log order "PAUSED"
note "order: $(grep PAUSED "$data/order.log" | head -n 1 | cut -c 14-)"
kill9 order
wait "${pid[client]}" || true
unset "pid[client]"
note "order service killed (SIGKILL): the client got no answer; stock and money are held by try:"
audit --settle-seconds 0 | grep -E "stock|accounts" || true
start order --pause-at relay:alice
note "order service restarted (pid ${pid[order]}), fault point armed: its relay stops after the mail"
note "service acknowledged alice's next order_completed message, before marking it delivered:"
grep "recovery at startup" "$data/order.log" | tail -n 1 | cut -c 14- | sed 's/^/     /'
expect o-5 completed

say "6. alice orders 1 plum; the message relay is killed between delivering her mail and recording it"
post_order '{"order_id":"o-6","customer":"alice","sku":"plum","qty":1}' >"$data/o-6.json" 2>&1 &
pid[client]=$!
wait_log order "PAUSED after the delivery"
note "order: $(grep "PAUSED after the delivery" "$data/order.log" | head -n 1 | cut -c 14-)"
mail_line=$(grep "mail for order o-6 " "$data/mail.log" | head -n 1)
note "mail: $(cut -c 14- <<<"$mail_line")"
msg=$(sed -n 's/.*(message \([^)]*\)).*/\1/p' <<<"$mail_line")
[[ -n $msg ]] || fail "the mail service wrote no mail for o-6"
expect o-6 completed
kill9 order
wait "${pid[client]}" 2>/dev/null || true
unset "pid[client]"
note "order service killed (SIGKILL): the message is still leased, not marked delivered, in orders.db"
start order
note "order service restarted (pid ${pid[order]}); its relay claims the message again once the lease"
note "(2 s here) has expired, and delivers it again:"
# The redelivery's answer: a duplicate, or (were the inbox missing) a second processing.
for _ in $(seq 600); do
  (($(grep -cF "message $msg: " "$data/mail.log" || true) >= 2)) && break
  sleep 0.1
done
grep -F "message $msg" "$data/mail.log" | cut -c 14- | sed 's/^/     /'
processed=$(grep -cF "message $msg: processed" "$data/mail.log" || true)
duplicates=$(grep -cF "message $msg: duplicate" "$data/mail.log" || true)
mails=$(grep -cF "mail for order o-6 " "$data/mail.log" || true)
note "message $msg: processed $processed time(s), answered as a duplicate $duplicates time(s), $mails mail written"
((processed == 1 && duplicates >= 1 && mails == 1)) ||
  fail "o-6's message: processed $processed, duplicate $duplicates, mails $mails (expected 1, at least 1, 1)"

say "After"
audit || fail "invariants"
stop_all
check_logs

say "Done"
note "logs: $data/{order,inventory,payment,loyalty,shipment,mail,merchant}.log"
if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
note "every order ended as told, every message was processed once and every invariant holds"
