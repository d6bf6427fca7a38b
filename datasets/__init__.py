"""lisentry.datasets: instrument readers, the Frame record, the processing pipeline,
the operando simulator and the dataset store."""
from lisentry.datasets.errors import (  # noqa: F401
    LisentryError, InputError, BrukerFormatError, EchemFormatError, IncompleteAcquisition,
    ConfigError,
)
from lisentry.datasets.frame import AcquisitionParams, RawFrame, Frame, Run, CLASSES  # noqa: F401
