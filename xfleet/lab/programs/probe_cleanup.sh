pkill -f "$1"
i=0
while pgrep -f "$1" >/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
nvme disconnect-all
