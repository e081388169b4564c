"""ui.text: counts whose noun agrees with them, and file names cut to fit under a thumbnail."""

from ui.text import ELLIPSIS, counted, short_name


def test_a_count_agrees_with_its_noun():
    assert counted(1, "group") == "1 group"
    assert counted(0, "group") == "0 groups"
    assert counted(3, "group") == "3 groups"
    assert counted(1204, "image") == "1,204 images"
    assert counted(1, "class") == "1 class" and counted(2, "class") == "2 classes"
    assert counted(2, "folder entry", "folder entries") == "2 folder entries"


def test_a_long_name_is_cut_in_the_middle_keeping_its_start_and_extension():
    assert short_name("bear_00.png", 12) == "bear_00.png"  # short enough: untouched
    cut = short_name("IMG_20240101_1234567.jpg", 14)
    assert len(cut) == 14 and cut.startswith("IMG_20") and cut.endswith("67.jpg") and ELLIPSIS in cut
