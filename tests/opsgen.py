"""Random ZFS operations for change-feed tests: the same generator drives a real lab node
(over SSH) and a simulated node, so both prove the same property."""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable

TENANT = "xfleet:tenant"
Run = Callable[[list[str]], str]


class Ops:
    """Random operations under `root` (create, snapshot, clone, promote, rename, destroy,
    set/inherit compression, bookmark; with a shell also write data and send/receive). The
    model is re-read from the node after every operation, so promote/rename/receive never
    confuse it. `run(argv)` returns stdout and raises if the command fails; `sh(script)` runs a
    shell script on the node (None: no data writes, no send/receive, as on the simulator)."""

    def __init__(self, run: Run, root: str, seed: int, sh: Callable[[str], object] | None = None,
                 log: Callable[[str], None] | None = None):
        self.run_argv = run
        self.root = root
        self.sh_fn = sh
        self.log = log
        self.rnd = random.Random(seed)
        self.n = 0
        self.done: list[str] = []

    def cmd(self, *argv: str) -> None:
        self.run_argv(list(argv))

    def sh(self, script: str) -> None:
        assert self.sh_fn is not None
        self.sh_fn(script)

    def listing(self) -> list[tuple[str, str, str]]:
        out = self.run_argv(["zfs", "list", "-H", "-o", "name,type,origin", "-t",
                             "filesystem,volume,snapshot", "-r", self.root])
        rows = []
        for line in out.splitlines():
            if line:
                name, kind, origin = line.split("\t")
                rows.append((name, kind, origin))
        return rows

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def step(self) -> str:
        rows = self.listing()
        vols = [r[0] for r in rows if r[1] == "volume"]
        fss = [r[0] for r in rows if r[1] == "filesystem"]
        snaps = [r[0] for r in rows if r[1] == "snapshot"]
        clones = [r[0] for r in rows if r[2] != "-"]
        origins = {r[2] for r in rows if r[2] != "-"}
        choices: list[tuple[int, Callable[[], str]]] = [(3, lambda: self.create(fss))]
        if vols:
            choices += [(3, lambda: self.snapshot(vols)),
                        (1, lambda: self.rename(vols + fss[1:]))]
            if self.sh_fn is not None:
                choices.append((2, lambda: self.write(vols)))
            free = [v for v in vols if not any(o.startswith(v + "@") for o in origins)]
            if free:
                choices.append((1, lambda: self.destroy(free)))
        if snaps:
            choices += [(2, lambda: self.clone(snaps)), (1, lambda: self.bookmark(snaps))]
            if self.sh_fn is not None:
                choices.append((1, lambda: self.send_recv(snaps)))
        if clones:
            choices.append((1, lambda: self.promote(clones)))
        choices.append((1, lambda: self.set_compression(fss)))
        fn = self.rnd.choices([c[1] for c in choices], weights=[c[0] for c in choices])[0]
        what = fn()
        self.done.append(what)
        return what

    def create(self, fss: list[str]) -> str:
        parent = self.rnd.choice(fss)
        if self.rnd.random() < 0.2:
            name = f"{parent}/{self.fresh('fs ')}"
            self.cmd("zfs", "create", "-o", f"{TENANT}=t{self.n % 3}", name)
            return f"create fs {name}"
        name = f"{parent}/{self.fresh('vol.')}"
        comp = self.rnd.choice(["off", "lz4", "zstd"])
        self.cmd("zfs", "create", "-s", "-V", "16M", "-o", f"compression={comp}",
                            "-o", f"{TENANT}=t{self.n % 3}", name)
        return f"create volume {name}"

    def snapshot(self, vols: list[str]) -> str:
        name = f"{self.rnd.choice(vols)}@{self.fresh('s')}"
        self.cmd("zfs", "snapshot", name)
        return f"snapshot {name}"

    def write(self, vols: list[str]) -> str:
        vol = self.rnd.choice(vols)
        src = self.rnd.choice(["/dev/urandom", "/dev/zero"])
        self.sh(f"dd if={src} of={shlex.quote('/dev/zvol/' + vol)} bs=64k count=16 "
                f"seek={self.rnd.randrange(0, 200)} oflag=direct conv=notrunc status=none")
        return f"write {vol}"

    def clone(self, snaps: list[str]) -> str:
        snap = self.rnd.choice(snaps)
        name = f"{self.root}/{self.fresh('clone-')}"
        self.cmd("zfs", "clone", snap, name)
        return f"clone {snap} {name}"

    def promote(self, clones: list[str]) -> str:
        name = self.rnd.choice(clones)
        self.cmd("zfs", "promote", name)
        return f"promote {name}"

    def rename(self, names: list[str]) -> str:
        old = self.rnd.choice(names)
        new = f"{old.rsplit('/', 1)[0]}/{self.fresh('renamed-')}"
        self.cmd("zfs", "rename", old, new)
        return f"rename {old} {new}"

    def destroy(self, vols: list[str]) -> str:
        vol = self.rnd.choice(vols)
        self.cmd("zfs", "destroy", "-r", vol)
        return f"destroy {vol}"

    def set_compression(self, fss: list[str]) -> str:
        fs = self.rnd.choice(fss)
        if self.rnd.random() < 0.3 and fs != self.root:
            self.cmd("zfs", "inherit", "compression", fs)
            return f"inherit compression {fs}"
        comp = self.rnd.choice(["lz4", "zstd", "gzip-3", "off"])
        self.cmd("zfs", "set", f"compression={comp}", fs)
        return f"set compression={comp} {fs}"

    def send_recv(self, snaps: list[str]) -> str:
        snap = self.rnd.choice(snaps)
        name = f"{self.root}/{self.fresh('recv-')}"
        self.sh(f"zfs send {shlex.quote(snap)} | zfs receive {shlex.quote(name)}")
        return f"send {snap} | receive {name}"

    def bookmark(self, snaps: list[str]) -> str:
        snap = self.rnd.choice(snaps)
        mark = snap.replace("@", "#") + f"-b{self.fresh('')}"
        self.cmd("zfs", "bookmark", snap, mark)
        return f"bookmark {mark}"

    def run(self, count: int) -> None:
        for _ in range(count):
            what = self.step()
            if self.log is not None:
                self.log(f"op: {what}")


