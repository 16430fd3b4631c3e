"""The named phases of one training step, in order (no torch import: reports and trace readers use it too).

``data``: waiting for the batch; ``h2d``: the host-to-device copy; ``forward``: forward and loss (under
autocast); ``backward``; ``optimizer``: the optimizer step with gradient scaling and clipping.
"""

PHASES: tuple[str, ...] = ("data", "h2d", "forward", "backward", "optimizer")
