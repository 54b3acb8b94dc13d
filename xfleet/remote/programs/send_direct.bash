# A direct move (xfleet/ops/moves/runner.py): the source node sends straight to the target node.
# argv: DEST RECEIVE_COMMAND SEND_ARGS...: runs `zfs send -v -P SEND_ARGS | ssh DEST RECEIVE`.
# bash for pipefail (a failed send fails the pipeline); send's progress lines (stderr, once a
# second) come back as stdout; ssh refuses unknown host keys and never asks for a password.
# Not on the simulator: a simulated node opens no SSH connection to another (moves relayed
# through the xfleet host run there).
set -o pipefail
dest=$1
recv=$2
shift 2
exec 3>&1
zfs send -v -P "$@" 2>&3 3>&- |
    ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 \
        "$dest" "$recv" 3>&- >/dev/null
