"""Logging for rule scripts: one logger writing to the rule's log file and to stderr."""

from __future__ import annotations

import errno
import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup_logging(log_path: str | os.PathLike | None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``dustpred`` logger (and the root logger) to ``log_path`` and stderr.

    Parameters
    ----------
    log_path
        File to write (created with its parent directory; appended to). ``None`` logs to
        stderr only.
    level
        Logging level for both handlers.

    Returns
    -------
    logging.Logger
        The ``dustpred`` logger; library modules log through ``logging.getLogger(__name__)``,
        which propagates to it.

    Notes
    -----
    Calling it again replaces the handlers it installed before, so a long-lived process
    (tests, notebooks) does not duplicate lines.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dustpred", False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        parent = os.path.dirname(os.fspath(log_path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    for handler in handlers:
        handler._dustpred = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter)
        handler.setLevel(level)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    # healpy logs every alm2map/smoothing call at INFO ("Sigma is 0.000000 arcmin").
    logging.getLogger("healpy").setLevel(max(level, logging.WARNING))
    logger = logging.getLogger("dustpred")
    logger.setLevel(level)
    _log_uncaught_exceptions(logger)
    return logger


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it came from is "no space left on device" (ENOSPC).

    h5py reports it as an OSError whose message holds ``errno = 28``, not always its errno.
    """
    while exc is not None:
        if isinstance(exc, OSError) and (
            exc.errno == errno.ENOSPC or "No space left on device" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _log_uncaught_exceptions(logger: logging.Logger) -> None:
    """Write an uncaught exception's traceback to the log too, so a failed job's log says why.

    A full disk gets one line instead, without the traceback: it is not a
    bug, and a page of HDF5 internals hides the one fact that matters.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if disk_full(exc):
            where = getattr(exc, "filename", None) or os.getcwd()
            logger.critical(
                "job failed: no space left on the device holding %s (%s). Free space there "
                "(df -h shows it) or point the workflow at a larger disk (snakemake "
                "--directory); the job's outputs were not written, so running again starts "
                "it afresh",
                *(where, exc),
            )
            return
        if not issubclass(exc_type, KeyboardInterrupt):
            logger.critical("job failed", exc_info=(exc_type, exc, tb))
        previous(exc_type, exc, tb)

    if not getattr(previous, "_dustpred", False):
        hook._dustpred = True  # type: ignore[attr-defined]
        sys.excepthook = hook
