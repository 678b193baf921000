"""The operator subcommands of `pynet`, their flags and their exit codes (render.py).

Each takes the store settings of `pynet serve` (flags and PYNET_* variables, so one
environment file serves both) and --json."""
from __future__ import annotations

import argparse

from pynet_core.errors import PynetError
from pynet.settings import Settings, add_serve_arguments

from . import render
from .context import CannotLook, Context, require_root

EXIT_CODES = """exit codes: 0 all fine; 1 problems found; 2 bad usage; 3 could not look (not root,
store or dockerd unreachable); 4 --repair not confirmed (nothing changed)"""


def _command(name: str, module: str, function: str):
    def run(settings: Settings, args: argparse.Namespace) -> int:
        ctx = Context(settings, args.json)
        try:
            require_root(name)
            mod = __import__(f"pynet.ops.{module}", fromlist=[function])
            return getattr(mod, function)(ctx, args)
        except CannotLook as exc:
            return render.fail(ctx.out, str(exc))
        except PynetError as exc:
            return render.fail(ctx.out, exc.message)
        except KeyboardInterrupt:
            return render.fail(ctx.out, "interrupted: nothing more was changed", render.DECLINED)
    return run


def _parser(commands, name: str, help_text: str, module: str, function: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add_serve_arguments(parser)  # the same store settings as `pynet serve`
    parser.set_defaults(run=_command(name, module, function))
    return parser


def add_commands(commands) -> None:
    _parser(commands, "status", "the store and its health, this host's networks, restore and "
            "leak-check state, the version", "status", "status")
    _parser(commands, "networks", "this host's pynet networks", "networks", "networks")
    ep = _parser(commands, "endpoints", "this host's endpoints (of one network)", "networks", "endpoints")
    ep.add_argument("network", nargs="?", help="a Docker network name or an ID prefix")
    _parser(commands, "ports", "published ports (what docker ps cannot show for pynet)", "ports", "ports")
    _parser(commands, "doctor", "the kernel against this host's records, each difference with "
            "its fix", "doctor", "doctor")
    overlay = commands.add_parser("overlay", help="encrypted overlays")
    osub = overlay.add_subparsers(dest="overlay_command", required=True)
    _parser(osub, "rotate-key", "a new WireGuard key pair for this host, made by the running plugin "
            "(peers re-handshake once)", "overlay", "rotate_key")
    ipam = commands.add_parser("ipam", help="pools and address claims")
    sub = ipam.add_subparsers(dest="ipam_command", required=True)
    show = _parser(sub, "show", "pools, or one pool's claims", "ipam_show", "show")
    show.add_argument("pool", nargs="?", help="a pool CIDR or SPACE/CIDR")
    check = _parser(sub, "check", "claims against what Docker uses: leaks, duplicates, claims of "
                    "hosts long unseen (a dry run unless --repair)", "ipam_check", "ipam_check")
    check.add_argument("--repair", action="store_true",
                       help="release what stays provably leaked for --older-than seconds")
    check.add_argument("--older-than", type=float, default=60.0, metavar="SECONDS",
                       help="how long a leak must stay unused and unchanged before --repair "
                            "releases it (default 60, at least 60)")
    check.add_argument("--host-timeout", type=float, default=600.0, metavar="SECONDS",
                       help="report the claims of hosts whose last-seen report is older (default 600)")
    check.add_argument("--yes", action="store_true", help="--repair without asking on a terminal")
