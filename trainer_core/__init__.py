"""trainer_core: a compact, config-driven PyTorch Trainer (no dependency on ``bench``)."""

from trainer_core.config import RunConfig
from trainer_core.errors import TrainbenchError

__all__ = ["RunConfig", "TrainbenchError"]
__version__ = "0.1.0"
