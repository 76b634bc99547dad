"""CPU time over a window, for the whole machine and per process group, from /proc.

    with CpuWindow(known={worker_pid: "peer-worker"}) as cpu:
        run_the_phase()
    cpu.machine          # seconds of busy CPU on all cores (user+nice+system+irq+softirq)
    cpu.groups           # {"postgres": 1.2, "rabbitmq": 0.0, ...}, seconds

`measure(fn, known)` does the same around a call. The group names are the ones every checkout
bench reports (Shopfleet's and its peers'), so their rows line up.
"""
import os

TICKS = os.sysconf("SC_CLK_TCK")

GROUPS = ("rabbitmq", "postgres", "temporal-server", "peer-worker", "driver", "shopfleet", "other")


def machine_busy_seconds():
    """Busy CPU of all cores since boot: idle, iowait and steal are not counted."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / TICKS


def _read_process(pid):
    """(comm, ppid, start time, cpu seconds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: it runs from the first "(" to the last ")".
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICKS


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def classify(pid, comm, parents, known):
    """The group of a process: its pid if known, else its name, else the nearest known ancestor
    (the name first, so a fleet started by a known bench process still counts as shopfleet)."""
    if pid in known:
        return known[pid]
    if comm in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost") or comm.startswith("erl"):
        return "rabbitmq"
    if comm.startswith("postgres") or comm.startswith("postmaster"):
        return "postgres"
    # comm is cut at 15 characters: shopfleet-worker-ext shows as "shopfleet-worke".
    if comm.startswith("shopfleet"):
        return "shopfleet"
    for p in parents:
        if p in known:
            return known[p]
    if comm == "temporal" or "temporal server" in _cmdline(pid):
        return "temporal-server"
    return "other"


def sample(known):
    """{(pid, start time): (group, cpu seconds)} for every process now alive; the start time
    tells a reused pid from the process that had it before."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _read_process(int(name))
            if info:
                procs[int(name)] = info
    seen = {}
    for pid, (comm, ppid, started, cpu) in procs.items():
        parents, p = [], ppid
        while p in procs and p > 1 and len(parents) < 16:
            parents.append(p)
            p = procs[p][1]
        seen[(pid, started)] = (classify(pid, comm, parents, known), cpu)
    return seen


class CpuWindow:
    """Machine and per-group CPU seconds between enter and exit.

    A process that started inside the window counts in full; one that ended inside it is lost
    (its time is no longer in /proc), which is why long-lived pools are used everywhere here.
    """

    def __init__(self, known=None):
        self.known = dict(known or {})
        self.machine = 0.0
        self.groups = dict.fromkeys(GROUPS, 0.0)

    def __enter__(self):
        self._machine = machine_busy_seconds()
        self._procs = sample(self.known)
        return self

    def __exit__(self, *exc):
        self.machine = machine_busy_seconds() - self._machine
        for key, (group, cpu) in sample(self.known).items():
            before = self._procs.get(key)
            self.groups[group] = self.groups.get(group, 0.0) + cpu - (before[1] if before else 0.0)
        return False


def measure(fn, known=None):
    """(fn's result, machine CPU seconds, {group: CPU seconds}) over one call of fn."""
    with CpuWindow(known) as window:
        result = fn()
    return result, window.machine, window.groups
