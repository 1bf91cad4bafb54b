"""Mining a labelled image set on a Ray cluster (``pip install diffmine[ray]``): the pipeline of
``diffmine mine`` as Ray Data stages (streaming reads, actor pools that open the model once, a
global top per label without a full shuffle, Parquet results in a working folder), giving the same
report as ``diffmine mine`` on one machine.

    python -m diffmine.distributed mine --model M --data SET --out REPORT --workdir DIR_OR_URI \\
        [--address HOST:PORT] [--actors-per-node N] [--gpus-per-actor G] [--batch-size B] [options of diffmine mine]

From Python: :func:`mine` with :class:`Settings`. Per-image results are keyed by the image's bytes,
the options that change them and the label, so a run that was interrupted (driver killed, node lost)
resumes where it stopped when started again, and a working folder written with other options is
refused (:class:`OptionsMismatch`) rather than mixed.
"""

try:
    import pyarrow  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(f"diffmine.distributed needs Ray Data: pip install \"diffmine[ray]\" ({e})") from e

from ._pipeline import Settings, Summary, run as mine  # noqa: E402
from ._workdir import OptionsMismatch  # noqa: E402

__all__ = ["OptionsMismatch", "Settings", "Summary", "mine"]
