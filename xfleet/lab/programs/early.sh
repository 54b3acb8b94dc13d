# the NIC sshd is reached through, up at once (networkd takes seconds to start under TCG)
i=0
wan=
while [ -z "$wan" ] && [ $i -lt 50 ]; do
    for n in /sys/class/net/*; do
        [ "$(cat "$n/address" 2>/dev/null)" = "@MAC@" ] && wan=$(basename "$n")
    done
    [ -n "$wan" ] || sleep 0.1
    i=$((i + 1))
done
if [ -z "$wan" ]; then
    echo "early.sh: no NIC with MAC @MAC@" >&2
    exit 1
fi
ip link set dev "$wan" up
ip addr add 10.0.2.15/24 dev "$wan"
ip route add default via 10.0.2.2 dev "$wan"
# the private links, bridged here rather than by networkd: under load networkd's netlink
# calls time out ("br0: netdev could not be created: Connection timed out") and it then never
# enslaves the links; plain `ip` calls cannot time out
ip link add br0 type bridge
ip addr add @ADDRESS@/24 dev br0
ip link set br0 up
for mac in @PRIVATE_MACS@; do
    i=0
    while [ $i -lt 50 ]; do
        for n in /sys/class/net/*; do
            if [ "$(cat "$n/address" 2>/dev/null)" = "$mac" ]; then
                ip link set dev "$(basename "$n")" master br0
                ip link set dev "$(basename "$n")" up
                i=99
            fi
        done
        [ $i -eq 99 ] || sleep 0.1
        i=$((i + 1))
    done
    [ $i -ge 99 ] || echo "early.sh: no private NIC with MAC $mac" >&2
done
exit 0
