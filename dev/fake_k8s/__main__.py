"""``python -m fake_k8s --port N --kubeconfig PATH [--python-exe EXE]``: run until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from fake_k8s.cluster import FakeCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fake_k8s", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at the server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument("--python-exe", help="interpreter that `python`/`python3` in pod commands run")
    parser.add_argument(
        "--map", action="append", default=[], metavar="NAME=PATH", help="map argv[0] NAME to PATH"
    )
    parser.add_argument("--path-prefix", action="append", default=[], help="directory searched first")
    parser.add_argument("--base-env", help="JSON object: the environment pod processes start from")
    parser.add_argument("--root-dir", help="where pod work dirs and logs go (default: a temp dir)")
    args = parser.parse_args(argv)

    executable_map = dict(item.split("=", 1) for item in args.map)
    cluster = FakeCluster(
        args.port,
        base_env=json.loads(args.base_env) if args.base_env else None,
        executable_map=executable_map,
        python_exe=args.python_exe,
        path_prefix=args.path_prefix,
        root_dir=args.root_dir,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    cluster.start()
    try:
        if args.kubeconfig:
            cluster.write_kubeconfig(args.kubeconfig, args.namespace)
        print(cluster.url, flush=True)
        while not done.wait(0.5):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
