"""Where images come from on a page: uploads, the camera, or the bundled example photos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from core.images import SUPPORTED_TYPES

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"


@st.cache_data(show_spinner=False, max_entries=8)
def file_digest(files: tuple[tuple[str, bytes], ...]) -> str:
    """A short key for a set of files, so reruns can reuse the answer for the same inputs."""
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def example_files() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(EXAMPLES_DIR.glob("*.jpg"))]


def has_images(key: str) -> bool:
    """Whether `image_inputs(key)` returns any file on this run: readable before its widgets are drawn
    (a page can put its photo's section first)."""
    state = st.session_state
    camera = bool(state.get(f"{key}_use_camera")) and state.get(f"{key}_camera") is not None
    return bool(state.get(f"{key}_files")) or bool(state.get(f"{key}_use_examples")) or camera


def image_inputs(key: str) -> list[tuple[str, bytes]]:
    """Render the upload / camera / examples inputs and return every chosen file as (name, bytes)."""
    uploads = st.file_uploader(
        "Upload photos",
        type=list(SUPPORTED_TYPES),
        accept_multiple_files=True,
        key=f"{key}_files",
        help="JPEG, PNG, WebP, BMP, GIF or TIFF. Several at once are classified as a batch.",
    )
    examples_key = f"{key}_use_examples"
    left, right = st.columns(2)
    with left:
        if st.session_state.get(examples_key):
            if st.button("Hide the examples", key=f"{key}_examples_off", icon=":material/close:"):
                st.session_state[examples_key] = False
                st.rerun()
        elif st.button("Try an example", key=f"{key}_examples_on", icon=":material/photo_library:"):
            st.session_state[examples_key] = True
            st.rerun()
    with right:
        use_camera = st.toggle("Take a photo with the camera", key=f"{key}_use_camera")
    photo = st.camera_input("Camera", key=f"{key}_camera", label_visibility="collapsed") if use_camera else None

    files = [(upload.name, upload.getvalue()) for upload in uploads or []]
    if photo is not None:
        files.append(("camera.jpg", photo.getvalue()))
    if st.session_state.get(examples_key):
        files.extend(example_files())
    return files
