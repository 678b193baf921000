"""`pynet serve`: gunicorn, one process with threads, on the plugin's Unix socket."""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys

from .logformat import formatter, gunicorn_logconfig
from .plugin_api import CONTENT_TYPE, failure
from .settings import Settings, add_serve_arguments, settings_from_args
from pynet_core.wire import printable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynet", description="Docker network and IPAM plugin")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the plugin in the foreground")
    add_serve_arguments(serve)
    # The operator commands (README "Operating pynet"): a second composition root.
    from .ops.commands import add_commands
    add_commands(commands)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command != "serve":
        return args.run(settings, args)
    # Before gunicorn: what is missing is said in one line, not in a worker's traceback.
    from .preflight import EXIT_CODE, check
    problem = check(settings)
    if problem:
        print(f"pynet serve: {problem}", file=sys.stderr)
        return EXIT_CODE
    return run_server(settings)


def raise_open_files_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one, as dockerd and containerd do: every published
    port holds a socket, and the usual soft limit of 1,024 is one port range away. Returns
    (soft, hard) as now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("pynet").warning("cannot raise the open-files limit from %d to %d: %s",
                                               soft, hard, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_server(settings: Settings) -> int:
    from gunicorn.app.base import BaseApplication

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    raise_open_files_limit()
    os.makedirs(os.path.dirname(settings.socket), mode=0o755, exist_ok=True)
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)

    class PluginServer(BaseApplication):
        def load_config(self) -> None:
            config = {
                "bind": f"unix:{settings.socket}",
                # One process: the embedded store and in-process locks assume it. Threads:
                # Docker makes calls concurrently.
                "workers": 1,
                "worker_class": json_error_worker(),
                "threads": settings.threads,
                # Root-only socket (mode 0600): the plugin API has no authentication.
                "umask": 0o177,
                "loglevel": settings.log_level,
                "accesslog": None,
                "errorlog": "-",
                # gunicorn's own lines in pynet's format (one JSON object each with json).
                "logconfig_dict": gunicorn_logconfig(settings.log_format, settings.log_level),
                "graceful_timeout": 5,
                "proc_name": "pynet",
                # gunicorn's control socket would be one more root socket to secure: unused.
                "control_socket_disable": True,
            }
            for key, value in config.items():
                self.cfg.set(key, value)

        def load(self):
            from .app import create_app
            return create_app(settings)

    PluginServer().run()
    return 0


def json_error_worker() -> type:
    """gunicorn's threaded worker, answering the requests its HTTP parser refuses (a request
    line that is not ASCII or too long, bad headers, a broken chunked body) in JSON with Err,
    like every other answer, instead of gunicorn's HTML page."""
    from gunicorn.workers.gthread import ThreadWorker

    class JsonErrorWorker(ThreadWorker):
        def handle_error(self, req, client, addr, exc):
            # gunicorn chooses the status and logs; only what it writes is replaced.
            page = _Captured()
            super().handle_error(req, page, addr, exc)
            status, reason = page.status_line()
            message = f"{reason}: {exc}" if str(exc) else reason
            answer = json.dumps(failure(f"pynet could not read the request: "
                                        f"{printable(message, 300)[1:-1]}")).encode()
            head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                    f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(answer)}\r\n\r\n")
            try:
                client.sendall(head.encode("latin-1", "replace") + answer)
            except OSError:
                pass  # the client has gone: nobody to answer

    return JsonErrorWorker


class _Captured:
    """Stands in for the client socket while gunicorn writes its error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def status_line(self) -> tuple[int, str]:
        """(status, reason) of what gunicorn wrote; 400 Bad Request if it wrote nothing."""
        first = self.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(first) == 3 and first[1].isdigit():
            return int(first[1]), first[2]
        return 400, "Bad Request"


if __name__ == "__main__":
    sys.exit(main())
