#!/usr/bin/env python3
"""Run a real ClickHouse HTTP + native-TCP server out of the chdb-core wheel.

chdb-core ships ClickHouse's clickhouse-local as a Python extension module
(chdb/_chdb.abi3.so). clickhouse-local can open the server's HTTP and native
TCP listeners with `SYSTEM START LISTEN ...`; the listeners live exactly as long
as the query() call that started them. So this script:

  1. loads chdb/_chdb.abi3.so directly (not chdb/__init__.py, which would pull
     in pandas/pyarrow),
  2. chdir's into --workdir and writes config.xml there (clickhouse-local reads
     ./config.xml),
  3. runs `SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; <endless query>`
     against the persistent data directory --data.

The endless query sleeps one second per row and returns no rows, so it uses
~no CPU and buffers no output. The process exits when that query ends (it
should not), or on SIGTERM/SIGINT (ClickHouse's default handling: immediate
exit; MergeTree recovers on the next start).

Started and stopped by scripts/stack; not meant to be run by hand, though it
can be: `.stack/venv/bin/python scripts/chdb_server.py --help`.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.machinery
import importlib.util
import os
import sys
import time
from xml.sax.saxutils import escape

# Never-ending, ~zero-CPU statement. sleepEachRow(1) with max_block_size=1
# sleeps 1s per one-row block (the per-block cap,
# function_sleep_max_microseconds_per_block, defaults to 3s, so 1s/block is
# allowed). sleepEachRow returns 0, so the WHERE drops every row: nothing is
# buffered in the result.
ENDLESS_QUERY = (
    "SELECT 1 FROM system.numbers WHERE sleepEachRow(1) != 0 "
    "SETTINGS max_block_size = 1, max_execution_time = 0"
)


def find_extension(explicit: str | None) -> str:
    if explicit:
        return os.path.abspath(explicit)
    candidates = []
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            candidates.append(os.path.join(entry, "chdb", "_chdb.abi3.so"))
    # Fallback: a venv next to this interpreter.
    candidates += glob.glob(
        os.path.join(sys.prefix, "lib", "python3*", "site-packages", "chdb", "_chdb.abi3.so")
    )
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    sys.exit("chdb_server: chdb/_chdb.abi3.so not found on sys.path; "
             "is chdb-core installed in this interpreter's environment?")


def load_chdb(so_path: str):
    # chdb's own __init__ preloads the extension with RTLD_DEEPBIND so that its
    # pybind11 stub library binds operator new/delete to chdb's jemalloc; do
    # the same before importing it as a module.
    if sys.platform == "linux":
        rtld_deepbind = 0x00008
        try:
            ctypes.CDLL(so_path, mode=sys.getdlopenflags() | rtld_deepbind)
        except OSError as e:  # pragma: no cover - best effort, as in chdb
            print(f"chdb_server: warning: RTLD_DEEPBIND preload failed: {e}", flush=True)
    loader = importlib.machinery.ExtensionFileLoader("_chdb", so_path)
    spec = importlib.util.spec_from_file_location("_chdb", so_path, loader=loader)
    if spec is None:
        sys.exit(f"chdb_server: cannot build an import spec for {so_path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["_chdb"] = module
    return module


def write_config(workdir: str, http_port: int, tcp_port: int, error_log: str | None) -> str:
    parts = [
        "<clickhouse>",
        "  <listen_host>127.0.0.1</listen_host>",
        f"  <http_port>{http_port}</http_port>",
        f"  <tcp_port>{tcp_port}</tcp_port>",
        # Idle-CPU trims: the memory worker polls every 50 ms by default.
        "  <memory_worker_period_ms>1000</memory_worker_period_ms>",
    ]
    if error_log:
        # chdb forces the main log level to trace, which is very chatty; log
        # only errors (with stack traces), in a size-capped rotating file.
        parts += [
            "  <logger>",
            f"    <errorlog>{escape(error_log)}</errorlog>",
            "    <errorlog_level>error</errorlog_level>",
            "    <size>20M</size>",
            "    <count>2</count>",
            "  </logger>",
        ]
    parts.append("</clickhouse>")
    path = os.path.join(workdir, "config.xml")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(tmp, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="directory for config.xml (process cwd)")
    ap.add_argument("--data", required=True, help="persistent ClickHouse data directory")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--tcp-port", type=int, required=True)
    ap.add_argument("--error-log", help="ClickHouse error log file (errors only)")
    ap.add_argument("--so", help="path to chdb/_chdb.abi3.so (default: search sys.path)")
    args = ap.parse_args()

    workdir = os.path.abspath(args.workdir)
    data = os.path.abspath(args.data)
    error_log = os.path.abspath(args.error_log) if args.error_log else None
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(data, exist_ok=True)
    if error_log:
        os.makedirs(os.path.dirname(error_log), exist_ok=True)

    so_path = find_extension(args.so)
    chdb = load_chdb(so_path)

    write_config(workdir, args.http_port, args.tcp_port, error_log)
    os.chdir(workdir)

    sql = f"SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; {ENDLESS_QUERY}"
    print(
        f"chdb_server: pid={os.getpid()} so={so_path}\n"
        f"chdb_server: data={data} http=127.0.0.1:{args.http_port} tcp=127.0.0.1:{args.tcp_port}",
        flush=True,
    )
    started = time.time()
    try:
        res = chdb.query(sql, "TabSeparated", path=data)
    except Exception as e:  # chdb raises RuntimeError on SQL errors
        print(f"chdb_server: server query failed after {time.time() - started:.1f}s: {e}", flush=True)
        return 1
    err = ""
    try:
        if res.has_error():
            err = res.error_message()
    except Exception:
        pass
    print(f"chdb_server: server query ended after {time.time() - started:.1f}s "
          f"(this should not happen){': ' + err if err else ''}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
