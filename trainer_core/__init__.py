"""trainer_core: a compact, config-driven PyTorch Trainer (no dependency on ``bench``)."""

from trainer_core.config import RunConfig, load_config
from trainer_core.errors import TrainbenchError

__all__ = ["RunConfig", "TrainbenchError", "load_config"]
__version__ = "0.1.0"
