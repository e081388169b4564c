"""ZooScope: try, compare and adapt ImageNet pre-trained models in the browser."""

import streamlit as st

from ui.navigation import inside_app, navigation
from ui.sidebar import render_sidebar

st.set_page_config(page_title="ZooScope", page_icon=":material/biotech:", layout="wide")

with inside_app():
    navigation().run()
# After the page, so the sidebar lists the models the page just loaded.
render_sidebar()
