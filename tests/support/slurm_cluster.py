"""A real single-node SLURM cluster built from Debian's packages, for sweep tests.

`start` runs munged, MariaDB, slurmdbd, slurmctld and slurmd by hand (no systemd),
each in the foreground of its own session, and records their pids; `stop` ends
exactly those pids and nothing else. All state (configs, spool, logs, munge key
and socket, database files, pids) lives under one state directory.

Accounting (slurmdbd + MariaDB) is not optional: submitit learns that a job died
only from `sacct`. Without it a job killed before writing its result reads as
state UNKNOWN forever and the Hydra sweep polls without end.

    python -m slurm_cluster start|status|stop [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.infra.runs import write_json_atomic, write_text_atomic

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge",
            "mariadb-server-core", "mariadb-client-core")
BINARIES = ("munged", "mariadbd", "mariadb-install-db", "my_print_defaults", "slurmdbd", "slurmctld", "slurmd",
            "sbatch", "sacct", "sinfo", "scancel", "scontrol")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
CLUSTER_NAME = "mtda"
PARTITION = "local"
STATE_DIR_ENV = "MTDA_SLURM_DIR"
DB_USER, DB_PASSWORD = "slurm", "slurm-local-only"


class ClusterError(RuntimeError):
    """The cluster could not be installed, started or reached."""


class PackageInstallError(ClusterError):
    """The Debian packages are missing and apt-get could not install them."""


def sweep_overrides(timeout_min: int = 5) -> list[str]:
    """Hydra overrides that send a multirun to this cluster through submitit.

    `timeout_min` stays >= 5: submitit's pre-timeout signal fires `signal_delay_s`
    (120 s) before the limit, so with 1 minute it would fire at once.
    """
    return ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}",
            f"hydra.launcher.timeout_min={timeout_min}", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.gpus_per_node=0"]


def default_state_dir() -> Path:
    """`$MTDA_SLURM_DIR`, else a fixed folder under the system temp dir."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path(tempfile.gettempdir()) / "mtda-slurm")


def client_env(state_dir: str | os.PathLike) -> dict[str, str]:
    """Environment variables that point sbatch/sacct/submitit at this cluster."""
    return {"SLURM_CONF": str(Path(state_dir).resolve() / "etc" / "slurm.conf")}


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if _which(name) is None]


def _which(name: str) -> str | None:
    # Daemons live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def install_packages() -> None:
    """apt-get install the SLURM, munge and MariaDB packages if any binary is missing."""
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise PackageInstallError(f"missing {missing_binaries()}; installing {PACKAGES} needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PackageInstallError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    if missing_binaries():
        raise PackageInstallError(f"still missing after apt-get install: {missing_binaries()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_pids(state: Path) -> dict[str, int]:
    path = state / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _is_ours(pid: int, name: str, state: Path) -> bool:
    """True if `pid` is still the daemon we started (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    # slurmdbd names its config only through SLURM_CONF, hence the environment check.
    return name in cmdline and (str(state) in cmdline or str(state) in environ)


def status(state_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """Which of the recorded daemons are alive."""
    state = Path(state_dir or default_state_dir()).resolve()
    return {name: _is_ours(pid, name, state) for name, pid in _read_pids(state).items()}


def _spawn(state: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start one daemon in its own session (so it outlives the caller) and record its pid."""
    log = open(state / "log" / f"{name}.out", "ab")
    proc = subprocess.Popen([_which(argv[0]) or argv[0], *argv[1:]], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    log.close()
    pids = _read_pids(state)
    pids[name] = proc.pid
    write_json_atomic(state / "pids.json", pids)
    return proc.pid


def _wait(what: str, check, state: Path, name: str, timeout_s: float) -> None:
    """Poll `check()` until true; fail early, with the daemon's log, if it died."""
    deadline = time.monotonic() + timeout_s
    pid = _read_pids(state)[name]
    while time.monotonic() < deadline:
        if check():
            return
        if not _is_ours(pid, name, state):
            break
        time.sleep(0.25)
    logs = [p for p in (state / "log").glob(f"{name}*") if p.is_file()]
    tail = "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-1500:] for p in logs)
    raise ClusterError(f"{name}: {what} not reached within {timeout_s:.0f} s\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_ok(argv: list[str], env: dict[str, str]) -> bool:
    proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    return proc.returncode == 0


def _node_hardware() -> dict[str, str]:
    """The node line `slurmd -C` prints, as key=value pairs (CPUs, RealMemory, ...)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0].split()
    return dict(item.split("=", 1) for item in first)


def _write_configs(state: Path, ports: dict[str, int]) -> None:
    hw = _node_hardware()
    host = hw.pop("NodeName")
    node = " ".join(f"{k}={v}" for k, v in hw.items())
    munge = f"socket={state / 'munge' / 'munge.socket'}"
    slurm_conf = f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
AuthType=auth/munge
AuthInfo={munge}
CredType=cred/munge
StateSaveLocation={state / 'spool' / 'ctld'}
SlurmdSpoolDir={state / 'spool' / 'd'}
SlurmctldPidFile={state / 'run' / 'slurmctld.pid'}
SlurmdPidFile={state / 'run' / 'slurmd.pid'}
SlurmctldLogFile={state / 'log' / 'slurmctld.log'}
SlurmdLogFile={state / 'log' / 'slurmd.log'}
# linuxproc: the cgroup default needs systemd/cgroupfs that containers lack (jobs fail, node drains).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
# Accounting is what lets submitit (via sacct) see that a job FAILED.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
# For slurmdbd connections SLURM takes the munge socket from here, not from AuthInfo.
AccountingStoragePass={state / 'munge' / 'munge.socket'}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={host} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    dbd_conf = f"""\
AuthType=auth/munge
AuthInfo={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
LogFile={state / 'log' / 'slurmdbd.log'}
PidFile={state / 'run' / 'slurmdbd.pid'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadbd']}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
"""
    write_text_atomic(state / "etc" / "slurm.conf", slurm_conf)
    write_text_atomic(state / "etc" / "slurmdbd.conf", dbd_conf)
    # slurmdbd refuses a config that other users can read (it holds the DB password).
    os.chmod(state / "etc" / "slurmdbd.conf", 0o600)
    write_text_atomic(state / "etc" / "db-init.sql",
                      f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';\n"
                      f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'%';\n")


def start(state_dir: str | os.PathLike | None = None, timeout_s: float = 90.0) -> dict[str, str]:
    """Install if needed, start all daemons, wait until the node is idle; return `client_env`."""
    state = Path(state_dir or default_state_dir()).resolve()
    alive = status(state)
    if alive and all(alive.values()) and len(alive) == len(DAEMONS):
        return client_env(state)
    if any(alive.values()):
        raise ClusterError(f"{state} holds a partly running cluster {alive}; run `stop` first")
    # A unix socket path must fit in 108 bytes (sockaddr_un).
    if len(str(state / "munge" / "munge.socket")) > 100:
        raise ClusterError(f"state dir {state} is too long for unix socket paths; pick a shorter one")
    install_packages()
    for sub in ("etc", "log", "run", "munge", "db", "spool/ctld", "spool/d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    # munged insists that everyone may traverse every directory above its socket.
    for path in (state, state / "munge"):
        os.chmod(path, 0o755)
    (state / "pids.json").unlink(missing_ok=True)
    ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadbd")}
    write_json_atomic(state / "ports.json", ports)
    _write_configs(state, ports)
    env = client_env(state)

    key = state / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
    _spawn(state, "munged", ["munged", "-F", f"--key-file={key}",
                             f"--socket={state / 'munge' / 'munge.socket'}",
                             f"--pid-file={state / 'run' / 'munged.pid'}",
                             f"--log-file={state / 'log' / 'munged.log'}",
                             f"--seed-file={state / 'munge' / 'munged.seed'}"])
    sock = state / "munge" / "munge.socket"
    _wait("socket", sock.exists, state, "munged", timeout_s)

    datadir = state / "db" / "data"
    if not (datadir / "mysql").exists():
        proc = subprocess.run([_which("mariadb-install-db"), "--user=root", f"--datadir={datadir}",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    _spawn(state, "mariadbd", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
                               "--bind-address=127.0.0.1", f"--port={ports['mariadbd']}",
                               f"--socket={state / 'db' / 'mariadbd.sock'}",
                               f"--pid-file={state / 'run' / 'mariadbd.pid'}",
                               f"--log-error={state / 'log' / 'mariadbd.log'}",
                               f"--init-file={state / 'etc' / 'db-init.sql'}"])
    _wait("open port", lambda: _port_open(ports["mariadbd"]), state, "mariadbd", timeout_s)

    _spawn(state, "slurmdbd", ["slurmdbd", "-D"], env)
    _wait("open port", lambda: _port_open(ports["slurmdbd"]), state, "slurmdbd", timeout_s)
    conf = env["SLURM_CONF"]
    _spawn(state, "slurmctld", ["slurmctld", "-D", "-i", "-f", conf], env)
    _wait("`scontrol ping`", lambda: _run_ok(["scontrol", "ping"], env), state, "slurmctld", timeout_s)
    _spawn(state, "slurmd", ["slurmd", "-D", "-f", conf], env)
    node_idle = lambda: subprocess.run(["sinfo", "-h", "-o", "%t"], env={**os.environ, **env},
                                       capture_output=True, text=True).stdout.strip() == "idle"
    _wait("node state idle", node_idle, state, "slurmd", timeout_s)
    _wait("working `sacct`", lambda: _run_ok(["sacct", "-n", "-X"], env), state, "slurmdbd", timeout_s)
    return env


def stop(state_dir: str | os.PathLike | None = None, timeout_s: float = 20.0) -> list[str]:
    """Cancel this cluster's jobs, then end the recorded daemons (newest first); return their names."""
    state = Path(state_dir or default_state_dir()).resolve()
    pids = _read_pids(state)
    if pids.get("slurmctld") and _is_ours(pids["slurmctld"], "slurmctld", state):
        subprocess.run(["scancel", "--full", f"--partition={PARTITION}"], capture_output=True,
                       env={**os.environ, **client_env(state)}, timeout=30)
    stopped = []
    for name in reversed(DAEMONS):
        pid = pids.get(name)
        if pid is None or not _is_ours(pid, name, state):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_ours(pid, name, state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_ours(pid, name, state):
            os.kill(pid, signal.SIGKILL)
        try:  # reap it if this very process started it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        stopped.append(name)
    (state / "pids.json").unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"all cluster state (default: ${STATE_DIR_ENV} or {default_state_dir()})")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            env = start(args.state_dir)
            print(" ".join(f"export {k}={v}" for k, v in env.items()))
        elif args.action == "stop":
            print("stopped: " + (", ".join(stop(args.state_dir)) or "nothing"))
        else:
            alive = status(args.state_dir)
            print(json.dumps(alive, indent=1) if alive else "not running")
            return 0 if alive and all(alive.values()) else 1
    except ClusterError as err:
        print(f"slurm_cluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
