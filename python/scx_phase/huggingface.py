"""A Hugging Face `TrainerCallback` that hints each phase. Importable only
where transformers is installed.

    Trainer(..., callbacks=[scx_phase.huggingface.ScxPhaseCallback()])
"""

from transformers import TrainerCallback

from . import Phase, set_phase

__all__ = ["ScxPhaseCallback"]


class ScxPhaseCallback(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        set_phase(Phase.FORWARD)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        set_phase(Phase.OPTIMIZER)

    def on_step_end(self, args, state, control, **kwargs):
        set_phase(Phase.DATA_LOADING)

    def on_save(self, args, state, control, **kwargs):
        # Called after the save; the next step's hint replaces this.
        set_phase(Phase.CHECKPOINT)
