"""Streamlit building blocks shared by the pages: inputs, progress, sidebar."""
