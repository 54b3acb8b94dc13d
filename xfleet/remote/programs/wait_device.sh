# Wait until a device node exists (udev creates /dev/zvol/... links asynchronously).
# argv: DEVICE. Settles udev, then polls for up to 10 s; exit 1 if the device never appeared.
# On the simulator: answered at once (a volume has its device unless its volmode is none).
udevadm settle 2>/dev/null
i=0
while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
test -e "$1"
