"""Command lines parsed like zfs and zpool parse them: getopt (GNU: options may follow
operands), type and column lists, `prop=value` assignments, and the usage errors zfs prints."""

from __future__ import annotations

from collections.abc import Sequence

from xfleet.sim.properties import ALL_KINDS, KIND_OF, SPACE_COLUMNS, TYPE_WORDS, canon_prop
from xfleet.sim.registry import Fail

USAGE = {
    "list": "\tlist [-Hp] [-r|-d max] [-o property[,...]] [-s property]...\n"
            "\t    [-S property]... [-t type[,...]] [filesystem|volume|snapshot] ...",
    "get": "\tget [-rHp] [-d max] [-o \"all\" | field[,...]]\n"
           "\t    [-t type[,...]] [-s source[,...]]\n"
           "\t    <\"all\" | property[,...]> [filesystem|volume|snapshot|bookmark] ...",
    "create": "\tcreate [-Pnpuv] [-o property=value] ... <filesystem>\n"
              "\tcreate [-Pnpsv] [-b blocksize] [-o property=value] ... -V <size> <volume>",
    "snapshot": "\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...",
    "clone": "\tclone [-p] [-o property=value] ... <snapshot> <filesystem|volume>",
    "destroy": "\tdestroy [-fnpRrv] <filesystem|volume>\n"
               "\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%<snap>][,...]",
    "set": "\tset [-u] <property=value> ... <filesystem|volume|snapshot> ...",
    "inherit": "\tinherit [-rS] <property> <filesystem|volume|snapshot> ...",
    "rename": "\trename [-f] <filesystem|volume|snapshot> <filesystem|volume|snapshot>\n"
              "\trename -p [-f] <filesystem|volume> <filesystem|volume>\n"
              "\trename -r <snapshot> <snapshot>",
    "promote": "\tpromote <clone-filesystem>",
    "bookmark": "\tbookmark <snapshot|bookmark> <newbookmark>",
    "send": "\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]\n"
            "\t     [-R [-X dataset[,dataset]...]]     <snapshot>\n"
            "\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n"
            "\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>\n"
            "\tsend [-nVvPe] -t <receive_resume_token>\n"
            "\tsend [-PnVv] --saved filesystem",
    "receive": "\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n"
               "\t    <filesystem|volume|snapshot>\n"
               "\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... \n"
               "\t    [-d | -e] <filesystem>\n"
               "\treceive -A <filesystem|volume>",
    "hold": "\thold [-r] <tag> <snapshot> ...",
    "holds": "\tholds [-rHp] <snapshot> ...",
    "release": "\trelease [-r] <tag> <snapshot> ...",
    "zpool list": "\tlist [-gHLpPv] [-o property[,...]] [-T d|u] [pool] ... [interval [count]]",
    "zpool status": "\tstatus [-DegiLpPstvx] [-T d|u] [-c script1[,script2,...]] ...\n"
                    "\t    [--power] [-j [--json-int, --json-flat-vdevs, ...\n"
                    "\t    --json-pool-key-guid]] [pool] ... [interval [count]]",
    "zpool get": "\tget [-Hp] [-o \"all\" | field[,...]] <\"all\" | property[,...]> <pool> ...",
    "zpool events": "\tevents [-vHf [pool] | -c]",
    "zpool history": "\thistory [-il] [<pool>] ...",
}


_ZFS_TRAILER = ("\nFor the property list, run: zfs set|get\n\n"
                "For the delegated permission list, run: zfs allow|unallow\n\n"
                "For further help on a command or topic, run: zfs help [<topic>]\n")


def usage(cmd: str, msg: str = "") -> Fail:
    head = msg + "\n" if msg else ""
    trailer = "" if cmd.startswith("zpool") else _ZFS_TRAILER
    return Fail(f"{head}usage:\n{USAGE[cmd]}\n{trailer}", 2)


def getopt(cmd: str, args: Sequence[str], flags: str, with_arg: str,
           ) -> tuple[list[tuple[str, str]], list[str]]:
    opts: list[tuple[str, str]] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch in with_arg:
                    val = a[j + 1:]
                    if not val:
                        i += 1
                        if i >= len(args):
                            raise usage(cmd, f"missing argument for '{ch}' option")
                        val = args[i]
                    opts.append((ch, val))
                    break
                if ch in flags:
                    opts.append((ch, ""))
                    j += 1
                    continue
                raise usage(cmd, f"invalid option '{ch}'")
        else:
            rest.append(a)
        i += 1
    return opts, rest


def parse_types(cmd: str, text: str) -> frozenset[str]:
    kinds: set[str] = set()
    for word in text.split(","):
        if word == "all":
            kinds |= ALL_KINDS
            continue
        full = TYPE_WORDS.get(word)
        if full is None:
            raise usage(cmd, f"invalid type '{word}'")
        kinds.add(KIND_OF[full])
    return frozenset(kinds)


def parse_columns(cmd: str, text: str) -> list[str]:
    cols: list[str] = []
    for word in text.split(","):
        if word == "space" and cmd == "list":
            cols.extend(SPACE_COLUMNS)
            continue
        canon = canon_prop(word)
        if canon is None:
            raise usage(cmd, f"bad property list: invalid property '{word}'")
        cols.append(canon)
    return cols


def parse_assignments(cmd: str, items: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        if "=" not in item:
            raise usage(cmd, "missing '=' for property argument")
        k, v = item.split("=", 1)
        if k in seen:
            raise usage(cmd, f"property '{k}' specified multiple times")
        seen.add(k)
        out.append((k, v))
    return out


def source_and_target(cmd: str, rest: list[str]) -> tuple[str, str]:
    """The SOURCE TARGET arguments of `zfs clone` / `zfs rename`, or zfs's usage error."""
    if len(rest) != 2:
        raise usage(cmd, "missing source dataset argument" if not rest
                    else "missing target dataset argument" if len(rest) == 1
                    else "too many arguments")
    return rest[0], rest[1]
