"""The Fine-tune page's sections (pages/finetune.py composes them, top to bottom): the data, the
settings with their time estimates and learning-rate finder, the training run, the results (with
Try it), the exports and the runs of this session. Every key the page keeps in the session is
named once, in keys.py."""
