"""Every key the Fine-tune page keeps in st.session_state, named once.

A widget key that nothing else reads stays at its widget, beside its label; the ones here are read or
written elsewhere too. The trained model the other pages see is ui.session.MY_MODEL.
"""

from __future__ import annotations

EXAMPLE = "finetune_example"  # True once "Try an example dataset" was clicked (until the person brings data)
DATASET = "finetune_dataset"  # ui.session.reuse slot: the dataset read from the uploads (ui.finetune.data)
KEPT = "finetune_kept"  # ui.finetune.data.KeptDataset: the person's dataset, kept while they visit other pages
RUN = "finetune_run"  # a ui.finetune.run.TrainingRun: the training in progress, or one a click interrupted
RUNS = "finetune_runs"  # [ui.finetune.history.Run] of this session, oldest first
RUN_PICK = "finetune_run_pick"  # the runs table's selectbox: the number of the run to try, use and export

# Widgets whose values other code sets: the mode's defaults (settings.mode_changed), the learning rate
# (the LR finder's "Use" button).
MODE = "finetune_mode"
LR = "finetune_lr"


def setting(name: str) -> str:
    """The widget key of a training setting that each mode sets its own default for (MODE_DEFAULTS)."""
    return f"finetune_{name}"


# ui.session slots: the last answer, and the inputs it was made for.
LR_FINDING = "finetune_lr_finding"  # the LR finder's last curve
TRY_RESULTS = "finetune_try_last"  # Try it's classifications
BUNDLE = "finetune_bundle"  # the bundle's bytes
ONNX = "finetune_onnx"  # the prepared ONNX exports
GALLERY_CARDS = "finetune_gallery_cards"  # thumbnails and captions of the gallery

# The gallery's filter below the confusion matrix (ui.finetune.results).
CELL = "finetune_cell"  # the selectbox: ALL_MISTAKES or a cell (true, predicted); a click on the heat map sets it too
CELL_OWNER = "finetune_cell_metrics"  # the Metrics (so the model) the filter was chosen for
CHART_NONCE = "finetune_confusion_nonce"  # part of the heat map's key: a new chart without a stale highlight
CONFUSION_CHART = "finetune_confusion_{nonce}"  # the heat map's key
