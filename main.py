"""crypto-enhanced command line: parse flags, load config, build the actor tree, ``trio.run``.

Exit status: 0 on a clean stop (SIGINT/SIGTERM or the end of a replay), 1 when the system
failed, 2 for a usage or configuration error (one line on stderr naming the setting), 3 for a
mode that cannot run here yet.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence

import trio

from config import ConfigError, Settings, load_settings
from protocol.instruments import PairInfo

log = logging.getLogger("crypto_enhanced")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSUPPORTED = 0, 1, 2, 3


class _SecretFilter(logging.Filter):
    """Last line of defence: no log record leaves the process with a credential in it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            if any(secret in message for secret in self._secrets):
                for secret in self._secrets:
                    message = message.replace(secret, "********")
                record.msg, record.args = message, None
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_SecretFilter([settings.api_key.reveal(), settings.api_secret.reveal()]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Alembic narrates every plugin it loads at INFO; only its warnings matter to an operator.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


async def run_until_signalled(settings: Settings) -> int:
    """Run the tree until SIGINT/SIGTERM (graceful: reverse-order stop) or until it ends.

    The signal handlers are installed first, so a signal during start-up (the pair metadata
    request, the database migration) also stops cleanly with status 0.
    """
    from actors.app import Application, build_application

    # The run tag makes client order ids unique across runs (the wall clock is read here, at
    # the edge, never inside the actors' logic).
    # Milliseconds, not seconds: a crashed process restarts within the same second, and a reused
    # client order id would attach the new run's fills to the old run's order.
    run_tag = "r" + _base36(time.time_ns() // 1_000_000)
    # Calendar days for the daily-loss limit: Unix time = trio clock + this offset.
    epoch_offset = time.time() - trio.current_time()
    app: Application | None = None
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: stopping the tree", signal.Signals(signum).name)
                    if app is not None:
                        with trio.move_on_after(4.0):  # stay inside the 5 s promise
                            await app.shutdown()
                    nursery.cancel_scope.cancel(reason="signal")
                    return

            nursery.start_soon(stop_on_signal)
            pairs = await _current_pairs(settings)
            app = build_application(settings, run_tag=run_tag, epoch_offset=epoch_offset,
                                    pairs=pairs)
            await nursery.start(app.run)
            log.info("actor tree is up (mode=%s, pairs=%s)", settings.mode,
                     ",".join(settings.pairs))
            await app.wait_finished()
            nursery.cancel_scope.cancel(reason="application finished")
    if app is None:  # stopped by a signal before the tree existed
        return EXIT_OK
    print(app.summary(), file=sys.stdout, flush=True)
    return app.exit_code


async def _current_pairs(settings: Settings) -> dict[str, PairInfo] | None:
    """Today's pair metadata from REST, or None to use the bundled snapshot (replays too)."""
    if settings.replay:
        return None
    from actors.wiring import fetch_pairs

    pairs = await fetch_pairs(settings.pairs, settings.rest_url)
    if pairs is None:
        log.warning("using the bundled pair metadata of 2021-04-17 (data/README.md): fees "
                    "and order minimums may differ from today's")
    else:
        log.info("pair metadata (fees, minimums, precisions) from %s", settings.rest_url)
    return pairs


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["db"]:
        from persistence.cli import db_command

        return int(db_command(args[1:]))
    if args[:1] == ["data"]:
        from backtest.download import data_command

        return data_command(args[1:])
    if args[:1] == ["record"]:
        from actors.recording import record_command

        return record_command(args[1:])
    from backtest.cli import add_arguments, run_backtest

    try:
        settings = load_settings(args, extend=add_arguments)
    except ConfigError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings)
    if settings.mode == "backtest":
        return run_backtest(settings)
    if settings.mode in ("live", "check"):
        print(f"main.py: --mode {settings.mode} is not available in this version yet "
              "(its actors are not built); use --mode paper", file=sys.stderr)
        return EXIT_UNSUPPORTED
    from actors.app import check_settings

    problem = check_settings(settings)
    if problem is not None:
        print(f"main.py: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(run_until_signalled, settings)
    except Exception:
        log.exception("the trading system failed")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
