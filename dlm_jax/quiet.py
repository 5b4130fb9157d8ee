"""A quiet start: TensorFlow (which seqio and TFDS import) is imported once with the process's stderr captured,
and kept off the GPUs (it only feeds data; JAX owns the accelerators).

TensorFlow's C++ libraries print start-up lines (oneDNN, "Could not find cuda drivers", absl's InitializeLog
notice) while they load, before any logging setting can apply (`TF_CPP_MIN_LOG_LEVEL` does not reach them). They
are captured at the file-descriptor level and dropped; if the import fails, they are printed with its error.
`DLM_VERBOSE_IMPORTS=1` leaves stderr alone.
"""
from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow() -> None:
    """Imports tensorflow with its start-up chatter on fd 2 dropped (once per process; then a no-op)."""
    if "tensorflow" in sys.modules or os.environ.get("DLM_VERBOSE_IMPORTS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            # TF only feeds data: it never takes a GPU from JAX, and probing for one (cuInit) is where its later
            # "E0000 ... failed call to cuInit" line comes from; done here, inside the capture
            tensorflow.config.set_visible_devices([], "GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
