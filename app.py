"""ZooScope: try, compare and adapt ImageNet pre-trained models in the browser."""

import streamlit as st

from ui.sidebar import render_sidebar

st.set_page_config(page_title="ZooScope", page_icon=":material/biotech:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:", default=True),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("pages/models.py", title="Models", icon=":material/menu_book:"),
    ]
)
navigation.run()
# After the page, so the sidebar lists the models the page just loaded.
render_sidebar()
