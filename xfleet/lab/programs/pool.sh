
mode=$1 pool=$2 dev=$3 attempts=$4
have() { zpool list -H -o name "$pool" >/dev/null 2>&1; }
if [ "$mode" = ensure ]; then
  have && exit 0
  udevadm settle --timeout=60
  disk=$(readlink -f "$dev")
  blockdev --flushbufs "$disk"; blockdev --rereadpt "$disk"
  sync; echo 3 > /proc/sys/vm/drop_caches
  udevadm settle --timeout=60
  err=$(zpool import -N -f "$pool" 2>&1) && exit 0
  if [ -n "$(blkid -p -o value -s PTTYPE "$disk"; blkid -p -o value -s TYPE "$disk")" ]; then
    echo "$err" >&2
    lsblk "$disk" 2>&1; blkid -p "$disk" 2>&1; zpool import 2>&1 | head -20
    exit 5
  fi
fi  # else a blank disk: a new pool on it
if [ "$mode" = recreate ] && { have || zpool import -N -f "$pool" >/dev/null 2>&1; }; then
  pkill -9 -x zfs
  find /proc/[0-9]*/fd -lname '/dev/zd*' 2>/dev/null | cut -d/ -f3 | sort -u | xargs -r kill -9
  [ -d /sys/kernel/config/nvmet/ports ] && systemctl stop xfleet-lab-target 2>/dev/null
  # every export goes (an enabled namespace keeps its zvol open, and the pool busy), whatever
  # a test left behind: port links, namespaces, allowed hosts, subsystems
  R=/sys/kernel/config/nvmet
  for d in "$R"/ports/*/subsystems/*; do [ -L "$d" ] && rm -f "$d"; done
  for s in "$R"/subsystems/*; do
    [ -d "$s" ] || continue
    for n in "$s"/namespaces/*; do [ -d "$n" ] && { echo 0 > "$n/enable"; rmdir "$n"; }; done
    for h in "$s"/allowed_hosts/*; do [ -L "$h" ] && rm -f "$h"; done
    rmdir "$s" 2>/dev/null
  done
  # and the hosts' DH-CHAP secrets a test gave the target (configfs and the kept copies)
  for h in "$R"/hosts/*; do [ -d "$h" ] && rmdir "$h" 2>/dev/null; done
  rm -rf /etc/xfleet/dhchap
  udevadm settle --timeout=30
  if ! zpool destroy -f "$pool" && have; then
    zpool status 2>&1; ps -eo pid,stat,args | grep -E 'zfs|zpool|dd' | grep -v grep
    exit 3
  fi
fi
i=1
while [ "$i" -le "$attempts" ]; do
  udevadm settle --timeout=60
  j=0; while [ ! -e "$dev" ] && [ "$j" -lt 100 ]; do sleep 0.1; j=$((j + 1)); done
  if err=$(zpool create -f -o ashift=12 -o cachefile=none -O canmount=off            -O mountpoint=none "$pool" "$dev" 2>&1) || have; then
    # created, or created after all (a lost answer)
    zpool events -c >/dev/null 2>&1
    exit 0
  fi
  echo "attempt $i: $err" >&2
  i=$((i + 1))
done
ls -l /dev/disk/by-id/ 2>&1; zpool status 2>&1; zpool import 2>&1 | head -20; dmesg | tail -20
exit 4
