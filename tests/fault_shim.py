"""`python tests/fault_shim.py FAULT <main's flags>`: `python -m zoomin_jax.main` with one fault made in this process
only, for tests where one process of a multi-process run meets a fault the others do not (tests/test_multiprocess.py).

FAULT:
  no_locks     every flock fails with ENOLCK, as on a network file system without locks;
  restore_eio  reading a checkpoint's arrays fails with EIO, as on a storage fault of this host alone.
"""

import errno
import runpy
import sys


def _raise(code: int, text: str):
    def fail(*_, **__):
        raise OSError(code, text)

    return fail


fault = sys.argv.pop(1)
if fault == "no_locks":
    import fcntl

    fcntl.flock = _raise(errno.ENOLCK, "No locks available")
elif fault == "restore_eio":
    import orbax.checkpoint as ocp

    ocp.StandardCheckpointHandler.restore = _raise(errno.EIO, "Input/output error")
else:
    sys.exit(f"fault_shim: unknown fault {fault!r}")
runpy.run_module("zoomin_jax.main", run_name="__main__", alter_sys=True)
