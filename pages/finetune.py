"""Fine-tune: teach a model your own classes, watch it learn, see its mistakes, then use and export it.

The sections live in ui/finetune/, one module each; this file puts them in order.
"""

import streamlit as st

from ui.finetune.data import data_section, validation_split
from ui.finetune.export import export
from ui.finetune.history import runs_section
from ui.finetune.results import results
from ui.finetune.run import collect_training_run, run_training
from ui.finetune.settings import training_settings
from ui.finetune.try_it import try_it
from ui.navigation import SHRINK, ensure_app, link_to
from ui.session import MY_MODEL

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)


def main() -> None:
    st.title("Fine-tune")
    st.caption(
        "Teach a model your own classes: bring labelled images, train a new head on an ImageNet backbone, "
        "see where it goes wrong, then use it here or take it with you."
    )
    collect_training_run()  # a training that a click interrupted hands over its best model first

    dataset = data_section()
    if dataset is not None:
        validation_split(dataset)
        chosen = training_settings(dataset)
        if chosen is not None and st.button("Train", key="finetune_train", type="primary", icon=":material/school:"):
            run_training(dataset, *chosen)

    runs_section()
    trained = st.session_state.get(MY_MODEL)
    if trained is None:
        return
    results(trained)
    try_it(trained)
    export(trained)
    link_to(SHRINK, "Shrink it for a phone: pruning, int8, an .ort or .pte file")


main()
