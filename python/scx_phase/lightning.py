"""A PyTorch Lightning callback that hints each phase. Importable only where
Lightning is installed.

    trainer = Trainer(callbacks=[scx_phase.lightning.ScxPhaseCallback()])
"""

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from . import Phase, set_phase

__all__ = ["ScxPhaseCallback"]


class ScxPhaseCallback(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        set_phase(Phase.FORWARD)

    def on_before_backward(self, trainer, pl_module, loss):
        set_phase(Phase.BACKWARD)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        set_phase(Phase.OPTIMIZER)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        set_phase(Phase.CHECKPOINT)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        set_phase(Phase.DATA_LOADING)
