"""`pynet serve`: gunicorn, one process with threads, on the plugin's Unix socket."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .settings import Settings, add_serve_arguments, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynet", description="Docker network and IPAM plugin")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the plugin in the foreground")
    add_serve_arguments(serve)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run_server(settings)


def run_server(settings: Settings) -> int:
    from gunicorn.app.base import BaseApplication

    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.makedirs(os.path.dirname(settings.socket), mode=0o755, exist_ok=True)
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)

    class PluginServer(BaseApplication):
        def load_config(self) -> None:
            config = {
                "bind": f"unix:{settings.socket}",
                # One process: the embedded store and in-process locks assume it. Threads:
                # Docker makes calls concurrently.
                "workers": 1,
                "worker_class": "gthread",
                "threads": settings.threads,
                # Root-only socket (mode 0600): the plugin API has no authentication.
                "umask": 0o177,
                "loglevel": settings.log_level,
                "accesslog": None,
                "errorlog": "-",
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


if __name__ == "__main__":
    sys.exit(main())
